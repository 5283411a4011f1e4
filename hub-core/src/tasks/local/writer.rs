//! The writer: stores the backend's changes in batches, one transaction per batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection};
use tokio::sync::{mpsc, oneshot};

use super::state::{Live, lock};
use crate::db::Database;
use crate::error::{HubError, Result};
use crate::tasks::model::{TaskId, TaskState};
use crate::tasks::store::{self, StoredTask};

/// Ops queued to the writer at most per transaction.
const MAX_BATCH: usize = 2048;

pub(super) enum WriteOp {
    /// Store this version of a record (written behind).
    Put(StoredTask),
    /// Store a new record; with an exclusive key, report when it is committed (or refused
    /// because the key is held).
    Insert(StoredTask, Option<oneshot::Sender<Result<()>>>),
    /// Report when everything sent before is committed.
    Flush(oneshot::Sender<()>),
}

/// Stores batches of changes, one transaction per batch, until every sender is gone.
///
/// The writer keeps one connection of its own: a pool round trip per batch would cost more than
/// the batch's statements.
pub(super) async fn writer_loop(
    db: Database,
    live: Arc<Mutex<Live>>,
    mut ops: mpsc::UnboundedReceiver<WriteOp>,
) {
    let mut batch = Vec::new();
    let mut conn: Option<PoolConnection<Any>> = None;
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write_batch(&db, &mut conn, &live, std::mem::take(&mut batch)).await;
    }
}

/// A batch turned into steps: plain upserts are merged (latest version per task wins); an insert
/// with an exclusive key is a step of its own, checked against everything stored before it.
enum Step {
    Upsert(Vec<StoredTask>),
    InsertExclusive(Box<StoredTask>, usize),
}

async fn write_batch(
    db: &Database,
    conn: &mut Option<PoolConnection<Any>>,
    live: &Mutex<Live>,
    ops: Vec<WriteOp>,
) {
    let mut steps: Vec<Step> = Vec::new();
    let mut acks: Vec<oneshot::Sender<Result<()>>> = Vec::new();
    let mut plain_acks: Vec<usize> = Vec::new();
    let mut flushes = Vec::new();
    let mut merged: HashMap<TaskId, usize> = HashMap::new();
    let mut counts: HashMap<(i64, String, TaskState), (i64, i64)> = HashMap::new();

    for op in ops {
        match op {
            WriteOp::Put(task) => {
                let r = &task.record;
                if r.state.is_terminal()
                    && let Some(finished) = r.finished_at
                {
                    let runtime = r.runtime().map_or(0, |s| (s * 1000.0) as i64);
                    let entry = counts
                        .entry((finished.timestamp() / 60, r.kind.clone(), r.state))
                        .or_default();
                    entry.0 += 1;
                    entry.1 += runtime;
                }
                push_upsert(&mut steps, &mut merged, task);
            }
            WriteOp::Insert(task, Some(ack)) if task.exclusive_key.is_some() => {
                acks.push(ack);
                steps.push(Step::InsertExclusive(Box::new(task), acks.len() - 1));
            }
            WriteOp::Insert(task, ack) => {
                if let Some(ack) = ack {
                    acks.push(ack);
                    plain_acks.push(acks.len() - 1);
                }
                push_upsert(&mut steps, &mut merged, task);
            }
            WriteOp::Flush(done) => flushes.push(done),
        }
    }

    let mut outcome = Err(HubError::Internal("batch not attempted".into()));
    for attempt in 1..=3 {
        outcome = execute_steps(db, conn, &steps, &counts, acks.len()).await;
        match &outcome {
            Ok(_) => break,
            Err(err) => {
                tracing::error!(attempt, error = %err, "storing task changes failed");
                // The connection may be what broke: take a fresh one next time.
                *conn = None;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
    }

    match outcome {
        Ok(mut results) => {
            for i in plain_acks {
                results[i] = Ok(());
            }
            // Finished records are now in the database: they need not stay in memory.
            let mut live = lock(live);
            for step in &steps {
                if let Step::Upsert(tasks) = step {
                    for task in tasks.iter().filter(|t| t.record.state.is_terminal()) {
                        let stored_is_latest = live
                            .tasks
                            .get(&task.record.id)
                            .is_some_and(|l| l.stored.seq <= task.seq && l.run.is_none());
                        if stored_is_latest {
                            live.tasks.remove(&task.record.id);
                        }
                    }
                }
            }
            drop(live);
            for (ack, result) in acks.into_iter().zip(results) {
                let _ = ack.send(result);
            }
        }
        Err(err) => {
            for ack in acks {
                let _ = ack.send(Err(HubError::BackendUnavailable {
                    message: format!("cannot store the task: {err}"),
                }));
            }
        }
    }
    for done in flushes {
        let _ = done.send(());
    }
}

/// Adds `task` to the trailing upsert step, replacing an older version of the same task.
fn push_upsert(steps: &mut Vec<Step>, merged: &mut HashMap<TaskId, usize>, task: StoredTask) {
    if !matches!(steps.last(), Some(Step::Upsert(_))) {
        steps.push(Step::Upsert(Vec::new()));
        merged.clear();
    }
    if let Some(Step::Upsert(tasks)) = steps.last_mut() {
        match merged.get(&task.record.id) {
            Some(&i) => tasks[i] = task,
            None => {
                merged.insert(task.record.id, tasks.len());
                tasks.push(task);
            }
        }
    }
}

/// Runs the steps in one write transaction; returns a result per insert ack.
async fn execute_steps(
    db: &Database,
    conn: &mut Option<PoolConnection<Any>>,
    steps: &[Step],
    counts: &HashMap<(i64, String, TaskState), (i64, i64)>,
    ack_count: usize,
) -> Result<Vec<Result<()>>> {
    let mut results: Vec<Result<()>> = (0..ack_count).map(|_| Ok(())).collect();
    if steps.is_empty() && counts.is_empty() {
        return Ok(results);
    }
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(db.pool().acquire().await?),
    };
    let mut tx = conn.begin_with(db.begin_write_statement()).await?;
    for step in steps {
        match step {
            Step::Upsert(tasks) => {
                let refs: Vec<&StoredTask> = tasks.iter().collect();
                store::upsert(&mut tx, &refs).await?;
            }
            Step::InsertExclusive(task, ack) => {
                let key = task.exclusive_key.as_deref().unwrap_or_default();
                if !store::insert_if_key_free(&mut tx, task).await? {
                    let holder = store::exclusive_holder(&mut tx, key)
                        .await?
                        .unwrap_or_else(|| "unknown".into());
                    results[*ack] = Err(HubError::Conflict {
                        message: format!(
                            "another operation ({holder}) is still running for {key}; wait for it or revoke it"
                        ),
                    });
                }
            }
        }
    }
    store::add_counts(&mut tx, counts).await?;
    tx.commit().await?;
    Ok(results)
}
