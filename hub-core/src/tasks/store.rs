//! SQL persistence of the task store every process shares: records with their owner and lease,
//! the event log, workers, revoke requests and history counters (portable SQL, see
//! [`crate::db`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join;
use sqlx::Row;

use chrono::{DateTime, Utc};

use super::history::{
    Finished, FinishedSample, Latency, LatencyHistogram, MinuteCounts, SAMPLE_RETENTION,
    TimelineEntry, WindowData,
};
use super::model::{
    KindCounts, LostVerdict, QueueInfo, TaskError, TaskEvent, TaskId, TaskPage, TaskQuery,
    TaskRecord, TaskSet, TaskSort, TaskState, TimeLimits, WorkerInfo, codes,
};
use crate::db::{
    Conn, Database, Dialect, RowStatements, StoredRow, Typed, dispatch, from_millis, now_millis,
    statement_chunks,
};
use crate::error::{HubError, Result};

const COLUMNS: &str = "id, kind, queue, project_id, payload, state, progress, status, result, \
     error_code, error_message, attempt, worker, soft_limit_ms, hard_limit_ms, queued_at, \
     started_at, finished_at, queue_order, exclusive_key, owner, lease_until";
const COLUMN_COUNT: usize = 22;
/// States in which a task is held by a worker.
const ACTIVE: &str = "('STARTED', 'BUILDING', 'RUNNING', 'STOPPING', 'RESTARTING', 'FETCHING')";

/// The condition that the task whose state column is `state` is unfinished, in the form the
/// partial indexes state it (SQLite uses such an index only for a query that says the same):
/// comparisons, not `NOT IN (…)`, whose list SQLite would build as a temporary table for every
/// row a write checks (see the migration `0008_unfinished_as_comparisons`).
fn unfinished(state: &str) -> String {
    format!("{state} <> 'SUCCESS' AND {state} <> 'FAILURE' AND {state} <> 'REVOKED'")
}

/// Binds the columns of a [`StoredTask`] in [`COLUMNS`] order (a macro: it binds to a query of
/// either database).
macro_rules! bind_task {
    ($query:expr, $task:expr) => {{
        let task: &StoredTask = $task;
        let r = &task.record;
        $query
            .bind(r.id.to_string())
            .bind(r.kind.clone())
            .bind(r.queue.clone())
            .bind(r.project_id)
            .bind(r.payload.to_string())
            .bind(r.state.as_str())
            .bind(i64::from(r.progress))
            .bind(r.status.clone())
            .bind(r.result.as_ref().map(|v| v.to_string()))
            .bind(r.error.as_ref().map(|e| e.code.clone()))
            .bind(r.error.as_ref().map(|e| e.message.clone()))
            .bind(i64::from(r.attempt))
            .bind(r.worker.clone())
            .bind(millis(r.limits.soft))
            .bind(millis(r.limits.hard))
            .bind(r.queued_at.timestamp_millis())
            .bind(r.started_at.map(|t| t.timestamp_millis()))
            .bind(r.finished_at.map(|t| t.timestamp_millis()))
            .bind(task.queue_order)
            .bind(task.exclusive_key.clone())
            .bind(task.owner.clone())
            .bind(task.lease_until)
    }};
}

/// A record as the store keeps it: the public record plus who holds it.
#[derive(Debug, Clone)]
pub(crate) struct StoredTask {
    /// Shared with the copies the writer stores and the event that publishes it: a change
    /// copies the record only when an older version is still held (`Arc::make_mut`).
    pub(crate) record: Arc<TaskRecord>,
    /// Held while the task is unfinished; released by its terminal write.
    pub(crate) exclusive_key: Option<String>,
    /// The worker holding the task (reserved while pending, running after); `None`: free to
    /// claim. Every change a worker writes is fenced on it and on the attempt.
    pub(crate) owner: Option<String>,
    /// Until when (Unix ms) the owner's lease runs.
    pub(crate) lease_until: Option<i64>,
    /// FIFO tie-break among tasks queued in the same millisecond.
    pub(crate) queue_order: i64,
}

/// Writes changes made by the worker that holds each task; returns the ids whose change was
/// stored. A change is discarded when the stored task is no longer that worker's current
/// attempt (its lease expired and the task was taken over, ended or revoked meanwhile): fencing.
pub(crate) async fn update_fenced(mut conn: Conn<'_>, tasks: &[&StoredTask]) -> Result<TaskSet> {
    let mut refused = Vec::new();
    let dialect = conn.dialect();
    let chunks: Vec<&[&StoredTask]> = statement_chunks(tasks).collect();
    // An upsert whose insert never happens (the rows exist): one statement for many rows, with
    // the fence in the update's WHERE.
    static UPSERT_FENCED: RowStatements = RowStatements::new(COLUMN_COUNT, |_, values| {
        format!(
            "INSERT INTO tasks ({COLUMNS}) VALUES {values} ON CONFLICT (id) DO UPDATE SET \
             state = excluded.state, progress = excluded.progress, status = excluded.status, \
             result = excluded.result, error_code = excluded.error_code, \
             error_message = excluded.error_message, worker = excluded.worker, \
             started_at = excluded.started_at, finished_at = excluded.finished_at, \
             exclusive_key = excluded.exclusive_key \
             WHERE tasks.owner IS NOT DISTINCT FROM excluded.owner \
             AND tasks.attempt = excluded.attempt AND {}",
            unfinished("tasks.state"),
        )
    });
    let sqls: Vec<Cow<'_, str>> = chunks
        .iter()
        .map(|chunk| UPSERT_FENCED.get(dialect, chunk.len()))
        .collect();
    dispatch!(conn.reborrow(), c => {
        let bind = |i: usize| {
            let (chunk, sql) = (chunks.get(i)?, sqls.get(i)?);
            let mut query = sqlx::query_with(sql, UPSERT_FENCED.arguments(chunk.len()));
            for task in *chunk {
                query = bind_task!(query, task);
            }
            Some(query)
        };
        let mut next = bind(0);
        for (i, chunk) in chunks.iter().enumerate() {
            let Some(query) = next.take() else { break };
            // The next statement is bound while this one runs: binding is most of what the
            // writer's task does itself, and the database's thread would wait for it.
            let (done, following) = join(query.execute(&mut *c), async { bind(i + 1) }).await;
            next = following;
            // Every row counts as changed unless its fence held it back: the usual case costs
            // no read-back.
            if done?.rows_affected() < chunk.len() as u64 {
                refused.extend(refused_among(Conn::from(&mut *c), chunk).await?);
            }
        }
    });
    Ok(tasks
        .iter()
        .map(|t| t.record.id)
        .filter(|id| !refused.contains(id))
        .collect())
}

/// Which of `tasks` the store did not take: those whose stored row is no longer their owner's
/// attempt in their state.
async fn refused_among(mut conn: Conn<'_>, tasks: &[&StoredTask]) -> Result<Vec<TaskId>> {
    let mut refused = Vec::new();
    for task in tasks {
        let stored: Option<(Option<String>, i64, String)> = dispatch!(conn.reborrow(), c => {
            sqlx::query_as("SELECT owner, attempt, state FROM tasks WHERE id = $1")
                .bind(task.record.id.to_string())
                .fetch_optional(&mut *c)
                .await?
        });
        let took = match stored {
            Some((owner, attempt, state)) => {
                owner == task.owner
                    && attempt == i64::from(task.record.attempt)
                    && state == task.record.state.as_str()
            }
            None => false,
        };
        if !took {
            refused.push(task.record.id);
        }
    }
    Ok(refused)
}

/// Inserts `tasks`, each unless its exclusive key is held (by a stored task, or by one earlier
/// in `tasks`): a statement per [`statement_chunks`] chunk, the key's unique index deciding.
/// Returns the ids stored.
pub(crate) async fn insert_if_keys_free(
    mut conn: Conn<'_>,
    tasks: &[&StoredTask],
) -> Result<TaskSet> {
    let mut stored = TaskSet::with_capacity_and_hasher(tasks.len(), Default::default());
    let dialect = conn.dialect();
    static INSERT_IF_FREE: RowStatements = RowStatements::new(COLUMN_COUNT, |_, values| {
        format!("INSERT INTO tasks ({COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING RETURNING id")
    });
    for chunk in statement_chunks(tasks) {
        let sql = INSERT_IF_FREE.get(dialect, chunk.len());
        let ids: Vec<String> = dispatch!(conn.reborrow(), c => {
            let arguments = INSERT_IF_FREE.arguments(chunk.len());
            let mut query = sqlx::query_scalar_with(&sql, arguments);
            for task in chunk {
                query = bind_task!(query, task);
            }
            query.fetch_all(&mut *c).await?
        });
        for id in ids {
            stored.insert(parse_id(&id)?);
        }
    }
    Ok(stored)
}

/// The unfinished task holding `key`, if any.
pub(crate) async fn exclusive_holder(conn: Conn<'_>, key: &str) -> Result<Option<TaskRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE exclusive_key = $1");
    dispatch!(conn, c => {
        let row = sqlx::query(&sql).bind(key).fetch_optional(&mut *c).await?;
        row.map(|row| record_from_row(&row)).transpose()
    })
}

/// Claims up to `max` unowned queued tasks (of `queues`, or any queue when empty) for `owner`,
/// oldest first.
pub(crate) async fn claim(
    conn: Conn<'_>,
    owner: &str,
    lease_until: i64,
    queues: &[String],
    max: usize,
) -> Result<Vec<StoredTask>> {
    let queue_filter = if queues.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = (0..queues.len()).map(|i| format!("${}", i + 4)).collect();
        format!(" AND queue IN ({})", list.join(", "))
    };
    // PostgreSQL: a claim skips rows another transaction holds instead of waiting for them.
    // Writers take one advisory lock today, so none is held; this keeps claims right should
    // claiming ever leave that lock.
    let skip_locked = match conn.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    let sql = format!(
        "UPDATE tasks SET owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM tasks \
         WHERE state = 'PENDING' AND owner IS NULL{queue_filter} \
         ORDER BY queued_at, queue_order LIMIT $3{skip_locked}) RETURNING {COLUMNS}"
    );
    let mut claimed = dispatch!(conn, c => {
        let mut query = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(i64::try_from(max).unwrap_or(i64::MAX));
        for queue in queues {
            query = query.bind(queue.clone());
        }
        query
            .fetch_all(&mut *c)
            .await?
            .iter()
            .map(stored_from_row)
            .collect::<Result<Vec<_>>>()?
    });
    // RETURNING comes in no particular order.
    claimed.sort_by_key(|t| (t.record.queued_at, t.queue_order));
    Ok(claimed)
}

/// Whether any queued task (of `queues`, or any queue when empty) waits for a worker: a read, so
/// idle workers can look often without taking the write lock.
pub(crate) async fn has_claimable(db: &Database, queues: &[String]) -> Result<bool> {
    let mut sql = String::from("SELECT id FROM tasks WHERE state = 'PENDING' AND owner IS NULL");
    if !queues.is_empty() {
        let list: Vec<String> = (1..=queues.len()).map(|i| format!("${i}")).collect();
        let _ = write!(sql, " AND queue IN ({})", list.join(", "));
    }
    sql.push_str(" LIMIT 1");
    dispatch!(db.pool(), pool => {
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for queue in queues {
            query = query.bind(queue.clone());
        }
        Ok(query.fetch_optional(pool).await?.is_some())
    })
}

/// Renews the lease of every unfinished task `owner` holds.
pub(crate) async fn renew_leases(conn: Conn<'_>, owner: &str, lease_until: i64) -> Result<u64> {
    let sql = format!(
        "UPDATE tasks SET lease_until = $2 WHERE owner = $1 AND {}",
        unfinished("state")
    );
    Ok(dispatch!(conn, c => sqlx::query(&sql)
        .bind(owner)
        .bind(lease_until)
        .execute(&mut *c)
        .await?
        .rows_affected()))
}

/// Puts the queued tasks `owner` reserved but never started back in the queue.
pub(crate) async fn release_reserved(conn: Conn<'_>, owner: &str) -> Result<u64> {
    Ok(dispatch!(conn, c => sqlx::query(
        "UPDATE tasks SET owner = NULL, lease_until = NULL WHERE owner = $1 AND state = 'PENDING'",
    )
    .bind(owner)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// What recovery did with the tasks of workers whose lease expired.
#[derive(Debug, Default)]
pub(crate) struct Reclaimed {
    /// Queued tasks a lost worker had reserved, back in the queue.
    pub(crate) released: u64,
    /// Running tasks queued again for another attempt (kinds safe to retry). Shared with the
    /// events that publish them.
    pub(crate) retried: Vec<Arc<TaskRecord>>,
    /// Running tasks ended `FAILURE` (`interrupted`, or `worker_lost` past the attempt limit).
    pub(crate) failed: Vec<Arc<TaskRecord>>,
}

/// Recovery: takes back the tasks whose owner's lease expired before `now` (their worker is
/// gone). Tasks of a live owner are never touched.
pub(crate) async fn reclaim_expired(
    conn: Conn<'_>,
    now: i64,
    retryable: &HashSet<String>,
    max_attempts: u32,
) -> Result<Reclaimed> {
    dispatch!(conn, conn => {
        let released = sqlx::query(
            "UPDATE tasks SET owner = NULL, lease_until = NULL WHERE state = 'PENDING' \
             AND owner IS NOT NULL AND (lease_until IS NULL OR lease_until < $1)",
        )
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let mut reclaimed = Reclaimed {
            released,
            ..Reclaimed::default()
        };
        // A running task without an owner was left by a hub from before leases: its process is
        // gone too.
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE state IN {ACTIVE} \
             AND (owner IS NULL OR lease_until IS NULL OR lease_until < $1) ORDER BY queued_at"
        ))
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            let mut task = stored_from_row(row)?;
            let lost_worker = task.owner.clone().unwrap_or_else(|| "unknown".into());
            let verdict = task.record.after_worker_lost(
                retryable.contains(&task.record.kind),
                max_attempts,
                &lost_worker,
            );
            task.owner = None;
            task.lease_until = None;
            match verdict {
                LostVerdict::Retry(record) => {
                    task.record = Arc::new(record);
                    reclaimed.retried.push(Arc::clone(&task.record));
                }
                LostVerdict::Fail(record) => {
                    task.record = Arc::new(record);
                    task.exclusive_key = None;
                    reclaimed.failed.push(Arc::clone(&task.record));
                }
            }
            // The whole row: the fence (owner, attempt) moves with it.
            sqlx::query(
                "UPDATE tasks SET state = $2, progress = $3, status = $4, error_code = $5, \
                 error_message = $6, attempt = $7, worker = $8, started_at = $9, \
                 finished_at = $10, exclusive_key = $11, owner = NULL, lease_until = NULL \
                 WHERE id = $1",
            )
            .bind(task.record.id.to_string())
            .bind(task.record.state.as_str())
            .bind(i64::from(task.record.progress))
            .bind(task.record.status.clone())
            .bind(task.record.error.as_ref().map(|e| e.code.clone()))
            .bind(task.record.error.as_ref().map(|e| e.message.clone()))
            .bind(i64::from(task.record.attempt))
            .bind(task.record.worker.clone())
            .bind(task.record.started_at.map(|t| t.timestamp_millis()))
            .bind(task.record.finished_at.map(|t| t.timestamp_millis()))
            .bind(task.exclusive_key.clone())
            .execute(&mut *conn)
            .await?;
        }
        Ok(reclaimed)
    })
}

/// Revokes `id` if it is queued and no live worker holds it (unowned, or its owner's lease
/// expired); returns the record after the change. A task a live worker reserved is revoked by
/// that worker (see [`request_revoke`]), so that it cannot start in between.
pub(crate) async fn revoke_queued(
    conn: Conn<'_>,
    id: TaskId,
    now: i64,
) -> Result<Option<TaskRecord>> {
    dispatch!(conn, conn => {
        let row = sqlx::query(&format!(
            "UPDATE tasks SET state = 'REVOKED', error_code = $2, error_message = $3, \
             finished_at = $4, exclusive_key = NULL, owner = NULL, lease_until = NULL \
             WHERE id = $1 AND state = 'PENDING' AND (owner IS NULL OR lease_until < $4) \
             RETURNING {COLUMNS}"
        ))
        .bind(id.to_string())
        .bind(codes::REVOKED)
        .bind("revoked before it started")
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|row| record_from_row(&row)).transpose()
    })
}

/// Asks the live worker holding `id` to revoke it: a queued task is revoked there before it can
/// start; a running one is cancelled when `terminate` is set. Returns whether a request was
/// left (the task is unfinished and held).
pub(crate) async fn request_revoke(
    conn: Conn<'_>,
    id: TaskId,
    terminate: bool,
    now: i64,
) -> Result<bool> {
    let sql = format!(
        "INSERT INTO task_revokes (task_id, requested_at, terminate) \
         SELECT id, $2, $3 FROM tasks WHERE id = $1 AND owner IS NOT NULL \
         AND (state = 'PENDING' OR ($3 = 1 AND state IN {ACTIVE})) \
         ON CONFLICT (task_id) DO UPDATE SET \
         terminate = {}(task_revokes.terminate, excluded.terminate)",
        conn.dialect().greatest()
    );
    let done = dispatch!(conn, c => sqlx::query(&sql)
        .bind(id.to_string())
        .bind(now)
        .bind(i64::from(terminate))
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(done > 0)
}

/// Revoke requests for unfinished tasks `owner` holds: `(task, terminate)`.
pub(crate) async fn revoke_requests(db: &Database, owner: &str) -> Result<Vec<(TaskId, bool)>> {
    let sql = format!(
        "SELECT r.task_id, r.terminate FROM task_revokes r JOIN tasks t ON t.id = r.task_id \
         WHERE t.owner = $1 AND {}",
        unfinished("t.state")
    );
    let rows: Vec<(String, i64)> = dispatch!(db.pool(), pool => {
        sqlx::query_as(&sql).bind(owner).fetch_all(pool).await?
    });
    rows.into_iter()
        .map(|(id, terminate)| Ok((parse_id(&id)?, terminate != 0)))
        .collect()
}

/// Appends one event per record, in order: the record's changing columns.
/// Returns their sequence numbers: consecutive, since the caller's write transaction keeps
/// every other writer out while they are numbered.
pub(crate) async fn insert_events(
    conn: Conn<'_>,
    origin: &str,
    records: &[Arc<TaskRecord>],
) -> Result<Vec<u64>> {
    /// The columns an event is written with (its `seq` comes from the store).
    const EVENT_COLUMNS: usize = 13;
    let now = now_millis();
    /// Binds the events of `$chunk` to `$query`, in the order of the insert's columns.
    macro_rules! bind_events {
        ($query:expr, $chunk:expr) => {{
            let mut query = $query;
            for r in $chunk {
                query = query
                    .bind(r.id.to_string())
                    .bind(origin)
                    .bind(now)
                    .bind(r.state.as_str())
                    .bind(i64::from(r.progress))
                    .bind(r.status.clone())
                    .bind(r.result.as_ref().map(|v| v.to_string()))
                    .bind(r.error.as_ref().map(|e| e.code.clone()))
                    .bind(r.error.as_ref().map(|e| e.message.clone()))
                    .bind(i64::from(r.attempt))
                    .bind(r.worker.clone())
                    .bind(r.started_at.map(|t| t.timestamp_millis()))
                    .bind(r.finished_at.map(|t| t.timestamp_millis()));
            }
            query
        }};
    }
    let dialect = conn.dialect();
    let chunks: Vec<&[Arc<TaskRecord>]> = statement_chunks(records).collect();
    static INSERT_EVENTS: RowStatements = RowStatements::new(EVENT_COLUMNS, |dialect, values| {
        let returning = match dialect {
            // The rows' ids are consecutive (the write transaction keeps every other writer
            // out), ending at the last one inserted: no row to read back, one message less per
            // row on the connection's thread (the cost of a batch is its round trips).
            Dialect::Sqlite => "",
            Dialect::Postgres => " RETURNING seq",
        };
        format!(
            "INSERT INTO task_events (task_id, origin, at, state, progress, status, result, \
             error_code, error_message, attempt, worker, started_at, finished_at) \
             VALUES {values}{returning}"
        )
    });
    let sqls: Vec<Cow<'_, str>> = chunks
        .iter()
        .map(|chunk| INSERT_EVENTS.get(dialect, chunk.len()))
        .collect();
    let mut seqs: Vec<u64> = Vec::with_capacity(records.len());
    let seq = |seq: i64| u64::try_from(seq).unwrap_or(0);
    // As in `update_fenced`, the next statement is bound while this one runs.
    match conn {
        Typed::Sqlite(c) => {
            let bind = |i: usize| {
                let chunk = *chunks.get(i)?;
                let arguments = INSERT_EVENTS.arguments(chunk.len());
                Some(bind_events!(
                    sqlx::query_with(sqls.get(i)?, arguments),
                    chunk
                ))
            };
            let mut next = bind(0);
            for (i, chunk) in chunks.iter().enumerate() {
                let Some(query) = next.take() else { break };
                let (done, following) = join(query.execute(&mut *c), async { bind(i + 1) }).await;
                next = following;
                let last = done?.last_insert_rowid();
                seqs.extend((last + 1 - chunk.len() as i64..=last).map(seq));
            }
        }
        Typed::Postgres(c) => {
            let bind = |i: usize| {
                let chunk = *chunks.get(i)?;
                let arguments = INSERT_EVENTS.arguments(chunk.len());
                Some(bind_events!(
                    sqlx::query_scalar_with(sqls.get(i)?, arguments),
                    chunk
                ))
            };
            let mut next = bind(0);
            for i in 0..chunks.len() {
                let Some(query) = next.take() else { break };
                let (done, following) = join(query.fetch_all(&mut *c), async { bind(i + 1) }).await;
                next = following;
                let mut chunk_seqs: Vec<i64> = done?;
                // RETURNING comes in no promised order; rows were numbered in the order given.
                chunk_seqs.sort_unstable();
                seqs.extend(chunk_seqs.into_iter().map(seq));
            }
        }
    }
    Ok(seqs)
}

/// A multi-row upsert into a history table of totals: a row whose `keys` are stored already
/// adds its two `totals` to the stored ones (three keys, then the two totals, per row).
fn add_totals(table: &str, keys: &str, totals: [&str; 2], values: &str) -> String {
    let [first, second] = totals;
    format!(
        "INSERT INTO {table} ({keys}, {first}, {second}) VALUES {values} \
         ON CONFLICT ({keys}) DO UPDATE SET \
         {first} = {table}.{first} + excluded.{first}, \
         {second} = {table}.{second} + excluded.{second}"
    )
}

/// Adds what finished tasks contribute to the history figures: per-minute counts by kind and
/// state, a sample each, the latency histograms and their workers' tallies (in the caller's
/// write transaction, so a task's end and its figures commit together).
pub(crate) async fn record_finished(conn: Conn<'_>, finished: &[Finished]) -> Result<()> {
    if finished.is_empty() {
        return Ok(());
    }
    let mut counts: HashMap<(i64, &str, TaskState), (i64, i64)> = HashMap::new();
    let mut latency: HashMap<(&str, Latency, usize), (i64, i64)> = HashMap::new();
    let mut workers: HashMap<(&str, &'static str), i64> = HashMap::new();
    for f in finished {
        let entry = counts.entry((f.minute, &f.kind, f.state)).or_default();
        entry.0 += 1;
        entry.1 += f.runtime_ms.unwrap_or(0);
        if let (Some((run_bucket, wait_bucket)), Some(run), Some(wait)) =
            (f.buckets(), f.runtime_ms, f.wait_ms)
        {
            for (key, ms) in [
                ((f.kind.as_str(), Latency::Runtime, run_bucket), run),
                ((f.kind.as_str(), Latency::Wait, wait_bucket), wait),
            ] {
                let entry = latency.entry(key).or_default();
                entry.0 += 1;
                entry.1 += ms;
            }
        }
        if let Some(tally) = f.worker_tally() {
            *workers.entry(tally).or_default() += 1;
        }
    }
    static ADD_COUNTS: RowStatements = RowStatements::new(5, |_, values| {
        add_totals(
            "task_counts",
            "minute, kind, state",
            ["count", "runtime_ms"],
            values,
        )
    });
    static ADD_LATENCY: RowStatements = RowStatements::new(5, |_, values| {
        add_totals(
            "task_latency",
            "kind, latency, bucket",
            ["count", "sum_ms"],
            values,
        )
    });
    static INSERT_SAMPLES: RowStatements = RowStatements::new(5, |_, values| {
        format!(
            "INSERT INTO task_samples (finished_at, kind, state, runtime_ms, wait_ms) VALUES {values}"
        )
    });
    let dialect = conn.dialect();
    dispatch!(conn, conn => {
        // One statement per table: the keys are distinct, so each row is one upsert.
        let counts: Vec<_> = counts.into_iter().collect();
        for chunk in statement_chunks(&counts) {
            let sql = ADD_COUNTS.get(dialect, chunk.len());
            let mut query = sqlx::query_with(&sql, ADD_COUNTS.arguments(chunk.len()));
            for ((minute, kind, state), (count, runtime_ms)) in chunk {
                query = query
                    .bind(*minute)
                    .bind((*kind).to_owned())
                    .bind(state.as_str())
                    .bind(*count)
                    .bind(*runtime_ms);
            }
            query.execute(&mut *conn).await?;
        }
        let latency: Vec<_> = latency.into_iter().collect();
        for chunk in statement_chunks(&latency) {
            let sql = ADD_LATENCY.get(dialect, chunk.len());
            let mut query = sqlx::query_with(&sql, ADD_LATENCY.arguments(chunk.len()));
            for ((kind, which, bucket), (count, sum_ms)) in chunk {
                query = query
                    .bind((*kind).to_owned())
                    .bind(which.as_str())
                    .bind(i64::try_from(*bucket).unwrap_or(i64::MAX))
                    .bind(*count)
                    .bind(*sum_ms);
            }
            query.execute(&mut *conn).await?;
        }
        for ((worker, tally), count) in workers {
            // `tally` is one of the two column names `Finished::worker_tally` gives.
            sqlx::query(&format!(
                "UPDATE workers SET {tally} = {tally} + $2 WHERE id = $1"
            ))
            .bind(worker.to_owned())
            .bind(count)
            .execute(&mut *conn)
            .await?;
        }
        for chunk in statement_chunks(finished) {
            let sql = INSERT_SAMPLES.get(dialect, chunk.len());
            let mut query = sqlx::query_with(&sql, INSERT_SAMPLES.arguments(chunk.len()));
            for f in chunk {
                query = query
                    .bind(f.finished_ms)
                    .bind(f.kind.clone())
                    .bind(f.state.as_str())
                    .bind(f.runtime_ms)
                    .bind(f.wait_ms);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    })
}

/// The changes of task `id` the store kept, oldest first: its events, looked for between
/// the time it was queued and the time it finished (or now).
pub(crate) async fn timeline(db: &Database, id: TaskId) -> Result<Vec<TimelineEntry>> {
    dispatch!(db.pool(), pool => {
        let Some(span) = sqlx::query("SELECT queued_at, finished_at FROM tasks WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?
        else {
            return Ok(Vec::new());
        };
        let queued: i64 = span.try_get(0)?;
        let finished: Option<i64> = span.try_get(1)?;
        // Events are stamped when the store takes them: at or after these times, within a clock
        // step of another process's.
        const SLACK_MS: i64 = 5_000;
        let rows = sqlx::query(
            "SELECT at, state, progress, status, attempt, worker FROM task_events \
             WHERE at >= $1 AND at <= $2 AND task_id = $3 ORDER BY seq",
        )
        .bind(queued - SLACK_MS)
        .bind(finished.unwrap_or_else(now_millis) + SLACK_MS)
        .bind(id.to_string())
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TimelineEntry {
                    at: from_millis(row.try_get(0)?)?,
                    state: row.try_get::<String, _>(1)?.parse()?,
                    progress: u8::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
                    status: row.try_get(3)?,
                    attempt: u32::try_from(row.try_get::<i64, _>(4)?).unwrap_or(1),
                    worker: row.try_get(5)?,
                })
            })
            .collect()
    })
}

/// Per-minute counts (every minute from `since`'s to now's) and the samples finished since
/// `since`.
pub(crate) async fn window(db: &Database, since: DateTime<Utc>) -> Result<WindowData> {
    dispatch!(db.pool(), pool => {
        let minutes = minute_counts(db, since).await?;
        let rows = sqlx::query(
            "SELECT finished_at, kind, state, runtime_ms, wait_ms FROM task_samples \
             WHERE finished_at >= $1 ORDER BY finished_at",
        )
        .bind(since.timestamp_millis())
        .fetch_all(pool)
        .await?;
        let samples = rows
            .iter()
            .map(|row| {
                let ms = |column: usize| -> Result<Option<u64>> {
                    Ok(row
                        .try_get::<Option<i64>, _>(column)?
                        .map(|v| u64::try_from(v).unwrap_or(0)))
                };
                Ok(FinishedSample {
                    finished_at: from_millis(row.try_get(0)?)?,
                    kind: row.try_get(1)?,
                    state: row.try_get::<String, _>(2)?.parse()?,
                    runtime_ms: ms(3)?,
                    wait_ms: ms(4)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WindowData { minutes, samples })
    })
}

/// Finished counts by outcome for every minute from `since`'s to now's, oldest first.
pub(crate) async fn minute_counts(
    db: &Database,
    since: DateTime<Utc>,
) -> Result<Vec<MinuteCounts>> {
    dispatch!(db.pool(), pool => {
        let first = since.timestamp().div_euclid(60);
        let last = Utc::now().timestamp().div_euclid(60);
        let mut minutes: Vec<MinuteCounts> = (first..=last)
            .map(|m| MinuteCounts {
                minute: from_millis(m * 60_000).unwrap_or_default(),
                ..MinuteCounts::default()
            })
            .collect();
        let rows = sqlx::query(
            "SELECT minute, state, CAST(SUM(count) AS BIGINT) FROM task_counts WHERE minute >= $1 \
             GROUP BY minute, state",
        )
        .bind(first)
        .fetch_all(pool)
        .await?;
        for row in rows {
            let minute: i64 = row.try_get(0)?;
            let state: TaskState = row.try_get::<String, _>(1)?.parse()?;
            let count = u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0);
            if let Some(entry) = usize::try_from(minute - first)
                .ok()
                .and_then(|i| minutes.get_mut(i))
            {
                entry.add(state, count);
            }
        }
        Ok(minutes)
    })
}

/// All-time latency histograms by kind.
pub(crate) async fn histograms(db: &Database) -> Result<Vec<LatencyHistogram>> {
    dispatch!(db.pool(), pool => {
        let rows = sqlx::query(
            "SELECT kind, latency, bucket, count, sum_ms FROM task_latency ORDER BY kind, latency",
        )
        .fetch_all(pool)
        .await?;
        let mut out: Vec<LatencyHistogram> = Vec::new();
        for row in rows {
            let kind: String = row.try_get(0)?;
            let latency = match row.try_get::<String, _>(1)?.as_str() {
                "wait" => Latency::Wait,
                _ => Latency::Runtime,
            };
            if out
                .last()
                .is_none_or(|h| h.kind != kind || h.latency != latency)
            {
                out.push(LatencyHistogram::new(kind, latency));
            }
            if let Some(histogram) = out.last_mut() {
                let bucket = usize::try_from(row.try_get::<i64, _>(2)?).unwrap_or(usize::MAX);
                let count = u64::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0);
                if let Some(slot) = histogram.buckets.get_mut(bucket) {
                    *slot += count;
                }
                histogram.sum += row.try_get::<i64, _>(4)? as f64 / 1000.0;
            }
        }
        Ok(out)
    })
}

const EVENT_SELECT: &str = "SELECT e.seq, e.task_id AS id, t.kind, t.queue, t.project_id, \
     t.payload, e.state, e.progress, e.status, e.result, e.error_code, e.error_message, \
     e.attempt, e.worker, t.soft_limit_ms, t.hard_limit_ms, t.queued_at, e.started_at, \
     e.finished_at FROM task_events e JOIN tasks t ON t.id = e.task_id";

/// Events after `after`, oldest first, at most `limit`: each the task as it was after the
/// change (its fixed fields — kind, payload, limits — from its record).
pub(crate) async fn events_after(
    db: &Database,
    after: u64,
    limit: usize,
) -> Result<Vec<TaskEvent>> {
    dispatch!(db.pool(), pool => {
        let rows = sqlx::query(&format!(
            "{EVENT_SELECT} WHERE e.seq > $1 ORDER BY e.seq LIMIT $2"
        ))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    })
}

/// Like [`events_after`], only the events another process than `origin` wrote.
pub(crate) async fn foreign_events_after(
    db: &Database,
    after: u64,
    origin: &str,
    limit: usize,
) -> Result<Vec<TaskEvent>> {
    dispatch!(db.pool(), pool => {
        let rows = sqlx::query(&format!(
            "{EVENT_SELECT} WHERE e.seq > $1 AND e.origin <> $2 ORDER BY e.seq LIMIT $3"
        ))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(origin)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    })
}

fn event_from_row(row: &impl StoredRow) -> Result<TaskEvent> {
    Ok(TaskEvent {
        seq: u64::try_from(row.get::<i64, _>("seq")?).unwrap_or(0),
        task: Arc::new(record_from_row(row)?),
    })
}

/// The highest event sequence number stored (0 when there is none).
pub(crate) async fn last_event_seq(db: &Database) -> Result<u64> {
    dispatch!(db.pool(), pool => {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM task_events")
            .fetch_one(pool)
            .await?;
        Ok(u64::try_from(max.unwrap_or(0)).unwrap_or(0))
    })
}

/// One record.
pub(crate) async fn get(db: &Database, id: TaskId) -> Result<Option<TaskRecord>> {
    dispatch!(db.pool(), pool => {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?;
        row.map(|row| record_from_row(&row)).transpose()
    })
}

/// The unfinished task holding `key`, if any (on the pool).
pub(crate) async fn holder(db: &Database, key: &str) -> Result<Option<TaskRecord>> {
    let mut conn = db.acquire().await?;
    exclusive_holder(conn.conn(), key).await
}

/// One page of the records matching `query`, in its order, and how many match in all.
pub(crate) async fn page(db: &Database, query: &TaskQuery) -> Result<TaskPage> {
    /// A value bound to the query.
    enum Value {
        Text(String),
        Int(i64),
    }
    let mut filter = String::from(" WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    let bind = |values: &mut Vec<Value>, value: Value| -> String {
        values.push(value);
        format!("${}", values.len())
    };
    if !query.states.is_empty() {
        let placeholders: Vec<String> = query
            .states
            .iter()
            .map(|state| bind(&mut values, Value::Text(state.as_str().to_owned())))
            .collect();
        let _ = write!(filter, " AND state IN ({})", placeholders.join(", "));
    }
    if let Some(kind) = &query.kind {
        let p = bind(&mut values, Value::Text(kind.clone()));
        let _ = write!(filter, " AND kind = {p}");
    }
    if let Some(project_id) = query.project_id {
        let p = bind(&mut values, Value::Int(project_id));
        let _ = write!(filter, " AND project_id = {p}");
    }
    if let Some(worker) = &query.worker {
        let p = bind(&mut values, Value::Text(worker.clone()));
        let _ = write!(filter, " AND worker = {p}");
    }
    if let Some(after) = query.queued_after {
        let p = bind(&mut values, Value::Int(after.timestamp_millis()));
        let _ = write!(filter, " AND queued_at >= {p}");
    }
    if let Some(before) = query.queued_before {
        let p = bind(&mut values, Value::Int(before.timestamp_millis()));
        let _ = write!(filter, " AND queued_at < {p}");
    }
    if let Some(text) = &query.search {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let p = bind(&mut values, Value::Text(pattern));
        let like = db.dialect().like();
        let like: Vec<String> = ["id", "kind", "queue", "worker", "status", "error_message"]
            .iter()
            .map(|column| format!("{column} {like} {p} ESCAPE '\\'"))
            .collect();
        let _ = write!(filter, " AND ({})", like.join(" OR "));
    }
    /// The query `$sql` with `$values` bound, for either database.
    macro_rules! bind_all {
        ($sql:expr, $values:expr) => {{
            let mut q = sqlx::query($sql);
            for value in $values {
                q = match value {
                    Value::Text(text) => q.bind(text.clone()),
                    Value::Int(n) => q.bind(*n),
                };
            }
            q
        }};
    }
    let count_sql = format!("SELECT COUNT(*) FROM tasks{filter}");
    let total: i64 = dispatch!(db.pool(), pool => {
        bind_all!(&count_sql, &values).fetch_one(pool).await?.try_get(0)?
    });
    let direction = if query.ascending { "ASC" } else { "DESC" };
    let order = match query.sort {
        TaskSort::Received => format!("queued_at {direction}, queue_order {direction}"),
        TaskSort::Started => {
            format!("started_at IS NULL, started_at {direction}, queued_at {direction}")
        }
        TaskSort::Runtime => {
            let now = bind(&mut values, Value::Int(now_millis()));
            format!(
                "started_at IS NULL, COALESCE(finished_at, {now}) - started_at {direction}, \
                 queued_at {direction}"
            )
        }
    };
    let limit = bind(&mut values, Value::Int(i64::from(query.limit)));
    let offset = bind(&mut values, Value::Int(i64::from(query.offset)));
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks{filter} ORDER BY {order} LIMIT {limit} OFFSET {offset}"
    );
    let tasks = dispatch!(db.pool(), pool => {
        bind_all!(&sql, &values)
            .fetch_all(pool)
            .await?
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>>>()?
    });
    Ok(TaskPage {
        tasks,
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// Deletes finished records older than `older_than`; returns how many.
/// Events and revoke requests of purged tasks go with them.
pub(crate) async fn purge_finished(db: &Database, older_than: Duration) -> Result<u64> {
    let cutoff = now_millis() - millis(older_than);
    let mut tx = db.begin_write().await?;
    let done = dispatch!(tx.conn(), tx => {
        sqlx::query(
            "DELETE FROM task_events WHERE task_id IN \
             (SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < $1)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let done =
            sqlx::query("DELETE FROM tasks WHERE finished_at IS NOT NULL AND finished_at < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
        sqlx::query(
            "DELETE FROM task_revokes WHERE task_id NOT IN \
             (SELECT id FROM tasks WHERE finished_at IS NULL)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM task_samples WHERE finished_at < $1")
            .bind(now_millis() - millis(SAMPLE_RETENTION))
            .execute(&mut *tx)
            .await?;
        // Workers gone for longer than records are kept are forgotten.
        sqlx::query("DELETE FROM workers WHERE lease_until < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        done.rows_affected()
    });
    tx.commit().await?;
    Ok(done)
}

/// Unfinished tasks by queue: how many wait, how many run, and since when the oldest waits.
pub(crate) async fn queue_depths(db: &Database) -> Result<Vec<QueueInfo>> {
    dispatch!(db.pool(), pool => {
        let rows = sqlx::query(&format!(
            "SELECT queue, state, COUNT(*), MIN(queued_at) FROM tasks \
             WHERE {} GROUP BY queue, state ORDER BY queue",
            unfinished("state")
        ))
        .fetch_all(pool)
        .await?;
        let mut depths: Vec<QueueInfo> = Vec::new();
        for row in rows {
            let queue: String = row.try_get(0)?;
            let state: TaskState = row.try_get::<String, _>(1)?.parse()?;
            let count = u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0);
            if depths.last().is_none_or(|q| q.name != queue) {
                depths.push(QueueInfo {
                    name: queue,
                    pending: 0,
                    active: 0,
                    oldest_queued_at: None,
                });
            }
            if let Some(entry) = depths.last_mut() {
                if state == TaskState::Pending {
                    entry.pending += count;
                    entry.oldest_queued_at = Some(from_millis(row.try_get(3)?)?);
                } else {
                    entry.active += count;
                }
            }
        }
        Ok(depths)
    })
}

pub(crate) use super::identity::WorkerRow;

/// Registers a worker with a fresh heartbeat.
pub(crate) async fn register_worker(
    conn: Conn<'_>,
    worker: &WorkerRow,
    lease_until: i64,
) -> Result<()> {
    dispatch!(conn, conn => {
        sqlx::query(
            "INSERT INTO workers (id, name, host, pid, mode, concurrency, queues, started_at, \
             heartbeat_at, lease_until, stopped_at, processed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, NULL, 0) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
             lease_until = excluded.lease_until, stopped_at = NULL",
        )
        .bind(worker.id.clone())
        .bind(worker.name.clone())
        .bind(worker.host.clone())
        .bind(i64::from(worker.pid))
        .bind(worker.mode.clone())
        .bind(i64::from(worker.concurrency))
        .bind(worker.queues.join(","))
        .bind(worker.started_at)
        .bind(lease_until)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

/// Records a worker's heartbeat and how many tasks it finished since the last one.
pub(crate) async fn worker_heartbeat(
    conn: Conn<'_>,
    id: &str,
    now: i64,
    lease_until: i64,
    processed: u64,
) -> Result<()> {
    dispatch!(conn, conn => {
        sqlx::query(
            "UPDATE workers SET heartbeat_at = $2, lease_until = $3, processed = processed + $4 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(lease_until)
        .bind(i64::try_from(processed).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
}

/// Marks a worker stopped (a clean shutdown).
pub(crate) async fn stop_worker(conn: Conn<'_>, id: &str, now: i64) -> Result<()> {
    dispatch!(conn, conn => {
        sqlx::query("UPDATE workers SET stopped_at = $2, lease_until = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
}

/// Every registered worker, with how many tasks each holds; online ones first.
pub(crate) async fn workers(db: &Database, now: i64) -> Result<Vec<WorkerInfo>> {
    dispatch!(db.pool(), pool => {
        let rows = sqlx::query(&format!(
            "SELECT w.id, w.name, w.host, w.pid, w.mode, w.concurrency, w.queues, w.started_at, \
             w.heartbeat_at, w.lease_until, w.stopped_at, w.processed, \
             (SELECT COUNT(*) FROM tasks t WHERE t.owner = w.id AND {}), \
             w.succeeded, w.failed \
             FROM workers w ORDER BY w.started_at DESC",
            unfinished("t.state")
        ))
        .fetch_all(pool)
        .await?;
        let mut workers = rows
            .iter()
            .map(|row| {
                let queues: String = row.try_get(6)?;
                let lease_until: i64 = row.try_get(9)?;
                let stopped: Option<i64> = row.try_get(10)?;
                Ok(WorkerInfo {
                    id: row.try_get(0)?,
                    name: row.try_get(1)?,
                    host: row.try_get(2)?,
                    pid: u32::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
                    mode: row.try_get(4)?,
                    concurrency: u32::try_from(row.try_get::<i64, _>(5)?).unwrap_or(0),
                    queues: queues
                        .split(',')
                        .filter(|q| !q.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    started_at: from_millis(row.try_get(7)?)?,
                    last_heartbeat: from_millis(row.try_get(8)?)?,
                    online: stopped.is_none() && lease_until >= now,
                    processed: u64::try_from(row.try_get::<i64, _>(11)?).unwrap_or(0),
                    active: u64::try_from(row.try_get::<i64, _>(12)?).unwrap_or(0),
                    succeeded: u64::try_from(row.try_get::<i64, _>(13)?).unwrap_or(0),
                    failed: u64::try_from(row.try_get::<i64, _>(14)?).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        workers.sort_by_key(|w| !w.online);
        Ok(workers)
    })
}

/// All-time finished counts by kind.
pub(crate) async fn kind_counts(db: &Database) -> Result<Vec<KindCounts>> {
    dispatch!(db.pool(), pool => {
        let rows = sqlx::query(
            "SELECT kind, state, CAST(SUM(count) AS BIGINT), CAST(SUM(runtime_ms) AS BIGINT) \
             FROM task_counts GROUP BY kind, state ORDER BY kind",
        )
        .fetch_all(pool)
        .await?;
        let mut by_kind: Vec<(KindCounts, i64)> = Vec::new();
        for row in rows {
            let kind: String = row.try_get(0)?;
            let state: TaskState = row.try_get::<String, _>(1)?.parse()?;
            let count = u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0);
            let runtime: i64 = row.try_get(3)?;
            if by_kind.last().is_none_or(|(k, _)| k.kind != kind) {
                by_kind.push((
                    KindCounts {
                        kind: kind.clone(),
                        ..KindCounts::default()
                    },
                    0,
                ));
            }
            if let Some((entry, total_runtime)) = by_kind.last_mut() {
                match state {
                    TaskState::Success => entry.succeeded += count,
                    TaskState::Failure => entry.failed += count,
                    _ => entry.revoked += count,
                }
                *total_runtime += runtime;
            }
        }
        Ok(by_kind
            .into_iter()
            .map(|(counts, runtime_ms)| counts.with_total_runtime_ms(runtime_ms))
            .collect())
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn parse_id(id: &str) -> Result<TaskId> {
    id.parse()
        .map_err(|err| HubError::Internal(format!("stored task id '{id}' is not a UUID: {err}")))
}

fn stored_from_row(row: &impl StoredRow) -> Result<StoredTask> {
    Ok(StoredTask {
        record: Arc::new(record_from_row(row)?),
        exclusive_key: row.get("exclusive_key")?,
        owner: row.get("owner")?,
        lease_until: row.get("lease_until")?,
        queue_order: row.get("queue_order")?,
    })
}

/// The record in a row that has the record's columns (of `tasks`, or an event joined to it).
fn record_from_row(row: &impl StoredRow) -> Result<TaskRecord> {
    let id = parse_id(&row.get::<String, _>("id")?)?;
    let json = |column: &str| -> Result<Option<serde_json::Value>> {
        row.get::<Option<String>, _>(column)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|err| {
                    HubError::Internal(format!("stored task {column} is not JSON: {err}"))
                })
            })
            .transpose()
    };
    let time = |column: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        row.get::<Option<i64>, _>(column)?
            .map(from_millis)
            .transpose()
    };
    let duration = |column: &str| -> Result<Duration> {
        let ms: i64 = row.get(column)?;
        Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    };
    let error = match (
        row.get::<Option<String>, _>("error_code")?,
        row.get::<Option<String>, _>("error_message")?,
    ) {
        (Some(code), message) => Some(TaskError::new(code, message.unwrap_or_default())),
        _ => None,
    };
    let record = TaskRecord {
        id,
        kind: row.get("kind")?,
        queue: row.get("queue")?,
        project_id: row.get("project_id")?,
        payload: json("payload")?.unwrap_or(serde_json::Value::Null),
        state: row.get::<String, _>("state")?.parse()?,
        progress: u8::try_from(row.get::<i64, _>("progress")?).unwrap_or(0),
        status: row.get("status")?,
        result: json("result")?,
        error,
        attempt: u32::try_from(row.get::<i64, _>("attempt")?).unwrap_or(1),
        worker: row.get("worker")?,
        queued_at: from_millis(row.get("queued_at")?)?,
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
        limits: TimeLimits {
            soft: duration("soft_limit_ms")?,
            hard: duration("hard_limit_ms")?,
        },
    };
    Ok(record)
}
