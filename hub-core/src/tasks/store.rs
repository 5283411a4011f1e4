//! SQL persistence of task records and history counters (portable SQL, see [`crate::db`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::model::{KindCounts, TaskError, TaskId, TaskQuery, TaskRecord, TaskState, TimeLimits};
use crate::db::{Database, from_millis, now_millis};
use crate::error::{HubError, Result};

const COLUMNS: &str = "id, kind, queue, project_id, payload, state, progress, status, result, \
     error_code, error_message, attempt, worker, soft_limit_ms, hard_limit_ms, queued_at, \
     started_at, finished_at, seq, exclusive_key";
const COLUMN_COUNT: usize = 20;
/// Rows per multi-row upsert; keeps statements well under every engine's parameter limit.
const ROWS_PER_STATEMENT: usize = 64;

/// A record as the writer stores it.
#[derive(Debug, Clone)]
pub(crate) struct StoredTask {
    pub(crate) record: TaskRecord,
    pub(crate) seq: u64,
    pub(crate) exclusive_key: Option<String>,
}

/// Inserts or updates `tasks` (at most one entry per id).
pub(crate) async fn upsert(conn: &mut AnyConnection, tasks: &[&StoredTask]) -> Result<()> {
    for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
        let mut sql = format!("INSERT INTO tasks ({COLUMNS}) VALUES ");
        for row in 0..chunk.len() {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for col in 0..COLUMN_COUNT {
                let sep = if col == 0 { "" } else { ", " };
                let _ = write!(sql, "{sep}${}", row * COLUMN_COUNT + col + 1);
            }
            sql.push(')');
        }
        sql.push_str(
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, progress = excluded.progress, \
             status = excluded.status, result = excluded.result, error_code = excluded.error_code, \
             error_message = excluded.error_message, attempt = excluded.attempt, \
             worker = excluded.worker, started_at = excluded.started_at, \
             finished_at = excluded.finished_at, seq = excluded.seq, \
             exclusive_key = excluded.exclusive_key",
        );
        let mut query = sqlx::query(&sql);
        for task in chunk {
            query = bind_task(query, task);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts `task` unless an unfinished task holds its exclusive key; returns whether it did.
/// Check and insert are one statement, so no other writer can slip between them.
pub(crate) async fn insert_if_key_free(
    conn: &mut AnyConnection,
    task: &StoredTask,
) -> Result<bool> {
    let values: Vec<String> = (1..=COLUMN_COUNT).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO tasks ({COLUMNS}) SELECT {} WHERE NOT EXISTS \
         (SELECT 1 FROM tasks WHERE exclusive_key = ${COLUMN_COUNT})",
        values.join(", ")
    );
    let done = bind_task(sqlx::query(&sql), task)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Binds the columns of `task` in [`COLUMNS`] order.
fn bind_task<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    task: &StoredTask,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let r = &task.record;
    query
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
        .bind(i64::try_from(task.seq).unwrap_or(i64::MAX))
        .bind(task.exclusive_key.clone())
}

/// The unfinished task holding `key`, if any.
pub(crate) async fn exclusive_holder(
    conn: &mut AnyConnection,
    key: &str,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM tasks WHERE exclusive_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// Adds finished-task counts: `(minute, kind, state) → (count, runtime_ms)`.
pub(crate) async fn add_counts(
    conn: &mut AnyConnection,
    counts: &HashMap<(i64, String, TaskState), (i64, i64)>,
) -> Result<()> {
    for ((minute, kind, state), (count, runtime_ms)) in counts {
        sqlx::query(
            "INSERT INTO task_counts (minute, kind, state, count, runtime_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (minute, kind, state) DO UPDATE SET \
             count = task_counts.count + excluded.count, \
             runtime_ms = task_counts.runtime_ms + excluded.runtime_ms",
        )
        .bind(*minute)
        .bind(kind.clone())
        .bind(state.as_str())
        .bind(*count)
        .bind(*runtime_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One record.
pub(crate) async fn get(db: &Database, id: TaskId) -> Result<Option<TaskRecord>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(db.pool())
        .await?;
    row.map(|row| record_from_row(&row).map(|(r, _)| r))
        .transpose()
}

/// Records matching `query`, newest first.
pub(crate) async fn list(db: &Database, query: &TaskQuery) -> Result<Vec<TaskRecord>> {
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE 1 = 1");
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if !query.states.is_empty() {
        let placeholders: Vec<String> = query
            .states
            .iter()
            .map(|_| format!("${}", next()))
            .collect();
        let _ = write!(sql, " AND state IN ({})", placeholders.join(", "));
    }
    if query.kind.is_some() {
        let _ = write!(sql, " AND kind = ${}", next());
    }
    if query.project_id.is_some() {
        let _ = write!(sql, " AND project_id = ${}", next());
    }
    if query.queued_after.is_some() {
        let _ = write!(sql, " AND queued_at >= ${}", next());
    }
    if query.queued_before.is_some() {
        let _ = write!(sql, " AND queued_at < ${}", next());
    }
    let _ = write!(
        sql,
        " ORDER BY queued_at DESC, seq DESC LIMIT ${} OFFSET ${}",
        next(),
        next()
    );
    let mut q = sqlx::query(&sql);
    for state in &query.states {
        q = q.bind(state.as_str());
    }
    if let Some(kind) = &query.kind {
        q = q.bind(kind.clone());
    }
    if let Some(project_id) = query.project_id {
        q = q.bind(project_id);
    }
    if let Some(after) = query.queued_after {
        q = q.bind(after.timestamp_millis());
    }
    if let Some(before) = query.queued_before {
        q = q.bind(before.timestamp_millis());
    }
    q = q.bind(i64::from(query.limit)).bind(i64::from(query.offset));
    let rows = q.fetch_all(db.pool()).await?;
    rows.iter()
        .map(|row| record_from_row(row).map(|(r, _)| r))
        .collect()
}

/// Recovery after a restart: tasks left running become `FAILURE interrupted` (returned, so
/// their events can be published); tasks left pending are returned in queue order, to re-queue.
pub(crate) async fn recover(db: &Database) -> Result<(Vec<StoredTask>, Vec<TaskRecord>)> {
    let mut tx = db.begin_write().await?;
    let active: Vec<&str> = TaskState::ALL
        .iter()
        .filter(|s| s.is_active())
        .map(|s| s.as_str())
        .collect();
    let in_list = active
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE state IN ({in_list}) ORDER BY queued_at"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let now = now_millis();
    let mut interrupted = Vec::with_capacity(rows.len());
    for row in &rows {
        let (mut record, _) = record_from_row(row)?;
        record.state = TaskState::Failure;
        record.error = Some(TaskError::new(
            super::model::codes::INTERRUPTED,
            "the hub stopped while this task was running",
        ));
        record.finished_at = Some(from_millis(now)?);
        interrupted.push(record);
    }
    sqlx::query(&format!(
        "UPDATE tasks SET state = 'FAILURE', error_code = $1, error_message = $2, \
         finished_at = $3, exclusive_key = NULL WHERE state IN ({in_list})"
    ))
    .bind(super::model::codes::INTERRUPTED)
    .bind("the hub stopped while this task was running")
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE state = 'PENDING' ORDER BY queued_at, seq"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let pending = rows
        .iter()
        .map(|row| {
            let (record, exclusive_key) = record_from_row(row)?;
            Ok(StoredTask {
                seq: 0,
                record,
                exclusive_key,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    tx.commit().await?;
    Ok((pending, interrupted))
}

/// The highest event sequence number stored.
pub(crate) async fn max_seq(db: &Database) -> Result<u64> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM tasks")
        .fetch_one(db.pool())
        .await?;
    Ok(u64::try_from(max.unwrap_or(0)).unwrap_or(0))
}

/// Deletes finished records older than `older_than`; returns how many.
pub(crate) async fn purge_finished(db: &Database, older_than: Duration) -> Result<u64> {
    let cutoff = now_millis() - millis(older_than);
    let done = sqlx::query("DELETE FROM tasks WHERE finished_at IS NOT NULL AND finished_at < $1")
        .bind(cutoff)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

/// All-time finished counts by kind.
pub(crate) async fn kind_counts(db: &Database) -> Result<Vec<KindCounts>> {
    let rows = sqlx::query(
        "SELECT kind, state, SUM(count), SUM(runtime_ms) FROM task_counts \
         GROUP BY kind, state ORDER BY kind",
    )
    .fetch_all(db.pool())
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
        .map(|(mut counts, runtime_ms)| {
            let total = counts.succeeded + counts.failed + counts.revoked;
            if total > 0 {
                counts.mean_runtime = runtime_ms as f64 / 1000.0 / total as f64;
            }
            counts
        })
        .collect())
}

/// Tasks finished in minutes `>= since_minute`.
pub(crate) async fn finished_since(db: &Database, since_minute: i64) -> Result<u64> {
    let total: Option<i64> =
        sqlx::query_scalar("SELECT SUM(count) FROM task_counts WHERE minute >= $1")
            .bind(since_minute)
            .fetch_one(db.pool())
            .await?;
    Ok(u64::try_from(total.unwrap_or(0)).unwrap_or(0))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn record_from_row(row: &AnyRow) -> Result<(TaskRecord, Option<String>)> {
    let id: String = row.try_get("id")?;
    let id = id
        .parse()
        .map_err(|err| HubError::Internal(format!("stored task id '{id}' is not a UUID: {err}")))?;
    let json = |column: &str| -> Result<Option<serde_json::Value>> {
        row.try_get::<Option<String>, _>(column)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|err| {
                    HubError::Internal(format!("stored task {column} is not JSON: {err}"))
                })
            })
            .transpose()
    };
    let time = |column: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        row.try_get::<Option<i64>, _>(column)?
            .map(from_millis)
            .transpose()
    };
    let duration = |column: &str| -> Result<Duration> {
        let ms: i64 = row.try_get(column)?;
        Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    };
    let error = match (
        row.try_get::<Option<String>, _>("error_code")?,
        row.try_get::<Option<String>, _>("error_message")?,
    ) {
        (Some(code), message) => Some(TaskError::new(code, message.unwrap_or_default())),
        _ => None,
    };
    let record = TaskRecord {
        id,
        kind: row.try_get("kind")?,
        queue: row.try_get("queue")?,
        project_id: row.try_get("project_id")?,
        payload: json("payload")?.unwrap_or(serde_json::Value::Null),
        state: row.try_get::<String, _>("state")?.parse()?,
        progress: u8::try_from(row.try_get::<i64, _>("progress")?).unwrap_or(0),
        status: row.try_get("status")?,
        result: json("result")?,
        error,
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(1),
        worker: row.try_get("worker")?,
        queued_at: from_millis(row.try_get("queued_at")?)?,
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
        limits: TimeLimits {
            soft: duration("soft_limit_ms")?,
            hard: duration("hard_limit_ms")?,
        },
    };
    Ok((record, row.try_get("exclusive_key")?))
}
