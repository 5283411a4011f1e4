//! The live state of the backend and the one place its changes are decided.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::writer::WriteOp;
use crate::db::Database;
use crate::error::{HubError, Result};
use crate::tasks::config::TaskConfig;
use crate::tasks::handler::{Handlers, ProgressSink, TaskContext};
use crate::tasks::model::{
    CancelReason, TaskError, TaskEvent, TaskId, TaskRecord, TaskState, WorkerInfo,
};
use crate::tasks::store::{self, StoredTask};

/// What the backend's handle, its workers, the sweep and task contexts share.
pub(super) struct Shared {
    pub(super) db: Database,
    pub(super) config: TaskConfig,
    pub(super) handlers: Handlers,
    pub(super) live: Arc<Mutex<Live>>,
    pub(super) events: broadcast::Sender<TaskEvent>,
    pub(super) writer: mpsc::UnboundedSender<WriteOp>,
    pub(super) queue_tx: mpsc::UnboundedSender<TaskId>,
    pub(super) queue_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<TaskId>>,
    /// Fired at shutdown: workers stop taking tasks.
    pub(super) stop_taking: CancellationToken,
    pub(super) accepting: AtomicBool,
    /// Woken whenever a task finishes, for shutdown to wait on.
    pub(super) finished: Notify,
}

/// What lives in memory: unfinished tasks (and finished ones not yet stored), the sequence
/// counter, recent events for late subscribers, and the workers.
pub(super) struct Live {
    pub(super) tasks: HashMap<TaskId, LiveTask>,
    pub(super) seq: u64,
    pub(super) recent: VecDeque<TaskEvent>,
    pub(super) workers: Vec<WorkerInfo>,
}

pub(super) struct LiveTask {
    pub(super) stored: StoredTask,
    pub(super) run: Option<RunControl>,
}

/// Handles on a running task.
pub(super) struct RunControl {
    pub(super) ctx: TaskContext,
    /// Notified by `revoke(terminate = true)`.
    pub(super) revoke: Arc<Notify>,
    /// Notified at the end of a shutdown's grace period.
    pub(super) interrupt: Arc<Notify>,
    /// Aborts the handler when the backend is dropped.
    pub(super) abort: Option<AbortHandle>,
}

/// A state change, applied under the live lock by [`Shared::apply`].
pub(super) enum Change {
    Start {
        worker: String,
    },
    Progress {
        state: TaskState,
        percent: u8,
        status: Option<String>,
    },
    Finish {
        state: TaskState,
        result: Option<serde_json::Value>,
        error: Option<TaskError>,
    },
    /// Announces a task just stored (or recovered) as queued; nothing changes, so nothing is
    /// written.
    Queued,
}

impl Shared {
    pub(super) fn send(&self, op: WriteOp) -> Result<()> {
        self.writer.send(op).map_err(|_| writer_gone())
    }

    pub(super) async fn flush(&self) -> Result<()> {
        let (done, flushed) = oneshot::channel();
        self.send(WriteOp::Flush(done))?;
        flushed.await.map_err(|_| writer_gone())
    }

    pub(super) async fn purge_expired(&self) -> Result<u64> {
        if self.config.result_expires.is_zero() {
            return Ok(0);
        }
        self.flush().await?;
        let purged = store::purge_finished(&self.db, self.config.result_expires).await?;
        if purged > 0 {
            tracing::debug!(purged, "expired task records purged");
        }
        Ok(purged)
    }

    /// Puts a stored task into live state and announces it as queued.
    pub(super) fn admit(&self, stored: StoredTask) {
        let id = stored.record.id;
        let mut live = lock(&self.live);
        live.tasks.insert(id, LiveTask { stored, run: None });
        self.apply_locked(&mut live, id, Change::Queued);
    }

    /// Like [`Shared::admit`], for a task not stored yet: hands the insert to the writer first.
    pub(super) fn admit_and_store(&self, stored: StoredTask) -> Result<()> {
        let id = stored.record.id;
        let mut live = lock(&self.live);
        self.send(WriteOp::Insert(stored.clone(), None))?;
        live.tasks.insert(id, LiveTask { stored, run: None });
        self.apply_locked(&mut live, id, Change::Queued);
        Ok(())
    }

    /// Publishes a record that is not live (a task finished by recovery) and stores it.
    pub(super) fn announce(&self, record: TaskRecord) {
        let mut live = lock(&self.live);
        live.seq += 1;
        let stored = StoredTask {
            record,
            seq: live.seq,
            exclusive_key: None,
        };
        let _ = self.writer.send(WriteOp::Put(stored.clone()));
        self.publish(&mut live, &stored);
    }

    pub(super) fn apply(&self, id: TaskId, change: Change) -> Option<TaskRecord> {
        let mut live = lock(&self.live);
        self.apply_locked(&mut live, id, change)
    }

    /// Applies `change` to live task `id` if the rules allow it: states only move forward,
    /// progress never goes down, nothing changes after a terminal state. Publishes the event and
    /// sends the record to the writer. Returns the record after the change.
    pub(super) fn apply_locked(
        &self,
        live: &mut Live,
        id: TaskId,
        change: Change,
    ) -> Option<TaskRecord> {
        let task = live.tasks.get_mut(&id)?;
        let record = &mut task.stored.record;
        let now = Utc::now();
        let changed = !matches!(change, Change::Queued);
        match change {
            Change::Queued => {}
            Change::Start { worker } => {
                if !record.state.can_move_to(TaskState::Started) {
                    return None;
                }
                record.state = TaskState::Started;
                record.worker = Some(worker);
                record.started_at = Some(now);
            }
            Change::Progress {
                state,
                percent,
                status,
            } => {
                if !record.state.can_move_to(state) {
                    return None;
                }
                record.state = state;
                record.progress = record.progress.max(percent.min(100));
                record.status = status;
            }
            Change::Finish {
                state,
                result,
                error,
            } => {
                if !record.state.can_move_to(state) {
                    return None;
                }
                record.state = state;
                if state == TaskState::Success {
                    record.progress = 100;
                }
                record.result = result;
                record.error = error;
                record.finished_at = Some(now);
                task.stored.exclusive_key = None;
            }
        }
        live.seq += 1;
        let seq = live.seq;
        let task = live.tasks.get_mut(&id)?;
        task.stored.seq = seq;
        let stored = task.stored.clone();
        // The writer gets the change before anyone hears of it: a subscriber that reacts at once
        // (say, queues the next operation on the project) must find it stored ahead of its own.
        if changed {
            let _ = self.writer.send(WriteOp::Put(stored.clone()));
        }
        self.publish(live, &stored);
        Some(stored.record)
    }

    pub(super) fn publish(&self, live: &mut Live, stored: &StoredTask) {
        let event = TaskEvent {
            seq: stored.seq,
            task: stored.record.clone(),
        };
        if live.recent.len() >= self.config.event_buffer {
            live.recent.pop_front();
        }
        live.recent.push_back(event.clone());
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    pub(super) fn running_count(&self) -> usize {
        lock(&self.live)
            .tasks
            .values()
            .filter(|task| task.run.is_some())
            .count()
    }

    /// Tells every running task to stop now; returns how many there were.
    pub(super) fn interrupt_running(&self) -> usize {
        let live = lock(&self.live);
        let mut count = 0;
        for task in live.tasks.values() {
            if let Some(run) = &task.run {
                run.ctx.cancel(CancelReason::Shutdown);
                run.interrupt.notify_one();
                count += 1;
            }
        }
        count
    }

    pub(super) fn set_worker(&self, index: usize, current: Option<TaskId>, finished_one: bool) {
        let mut live = lock(&self.live);
        if let Some(worker) = live.workers.get_mut(index) {
            worker.current_task = current;
            if finished_one {
                worker.processed += 1;
            }
        }
    }
}

#[async_trait]
impl ProgressSink for Shared {
    async fn progress(
        &self,
        id: TaskId,
        state: TaskState,
        percent: u8,
        status: Option<String>,
    ) -> Result<()> {
        // A change after the task ended (a handler that keeps reporting) is ignored by design.
        self.apply(
            id,
            Change::Progress {
                state,
                percent,
                status,
            },
        );
        Ok(())
    }
}

pub(super) fn writer_gone() -> HubError {
    HubError::BackendUnavailable {
        message: "the task writer has stopped".into(),
    }
}

pub(super) use crate::sync::lock;
