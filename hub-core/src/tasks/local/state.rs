//! What this process holds of the task store, and the one place its changes are decided.
//!
//! The store is the truth. In memory live only the tasks this process holds (queued for its
//! workers, or running) — ahead of the store by the writer's few milliseconds — plus new tasks
//! not yet committed. Every change goes to the writer, which stores it only while this process
//! still holds the task (fencing); a change the store refuses means the task was taken over or
//! revoked elsewhere, and its run here stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::events::EventLog;
use super::writer::WriteOp;
use crate::config::HubMode;
use crate::db::{Database, now_millis};
use crate::error::{HubError, Result};
use crate::tasks::config::TaskConfig;
use crate::tasks::handler::{Handlers, ProgressSink};
use crate::tasks::identity::MonotonicMicros;
use crate::tasks::model::{
    CancelReason, Change, TaskError, TaskEvent, TaskId, TaskMap, TaskRecord, TaskState, codes,
};
use crate::tasks::run::RunControl;
use crate::tasks::store::{self, StoredTask, WorkerRow};

/// What the backend's handle, its workers, writer, event pump and task contexts share.
pub(super) struct Shared {
    pub(super) db: Database,
    pub(super) config: TaskConfig,
    pub(super) handlers: Handlers,
    pub(super) mode: HubMode,
    /// This process as a worker: its id owns what it runs and marks the events it writes.
    pub(super) me: WorkerRow,
    pub(super) live: Mutex<Live>,
    pub(super) log: EventLog,
    pub(super) writer: mpsc::UnboundedSender<WriteOp>,
    pub(super) queue_tx: mpsc::UnboundedSender<TaskId>,
    pub(super) queue_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<TaskId>>,
    /// Fired at shutdown: workers and the feeder stop taking tasks.
    pub(super) stop_taking: CancellationToken,
    pub(super) accepting: AtomicBool,
    /// Woken whenever a task finishes, for shutdown to wait on.
    pub(super) finished: Notify,
    /// Woken when a worker finds the local queue empty: the feeder claims more.
    pub(super) hungry: Notify,
    /// Whether the store may hold queued tasks no worker has taken: set when another
    /// process's enqueue is seen, cleared when a claim comes back short. Spares a read of the
    /// store after every task when only this process submits.
    pub(super) claimable: AtomicBool,
    /// Tasks finished since the last heartbeat.
    pub(super) processed: AtomicU64,
    /// Submissions waiting for the store to decide on them, which workers let go first.
    pub(super) admissions: Admissions,
    /// Last FIFO tie-break handed out (microseconds, strictly increasing).
    pub(super) order: MonotonicMicros,
}

/// Longest a worker about to start a task lets waiting submissions go first.
pub(super) const ADMISSIONS_FIRST: Duration = Duration::from_millis(5);

/// Submissions waiting for the store's answer (exclusive enqueues wait for their commit).
///
/// A worker about to start a task lets the submissions already waiting go first, for a moment:
/// a burst of submissions is then answered at the store's pace, not slowed by the starts it
/// queues (which share the cores, the writer and the engine), and the work runs right after.
/// Submissions that arrive after the worker do not hold it back, so a steady stream of them
/// cannot starve the workers.
#[derive(Default)]
pub(super) struct Admissions {
    /// Submissions counted so far, and those answered (both only grow).
    entered: AtomicU64,
    left: AtomicU64,
    /// Woken whenever a submission is answered.
    answered: Notify,
}

/// A submission counted as waiting while this lives.
pub(super) struct Admission<'a>(&'a Admissions);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.left.fetch_add(1, Ordering::AcqRel);
        self.0.answered.notify_waiters();
    }
}

impl Admissions {
    /// Counts a submission as waiting until the returned guard is dropped.
    pub(super) fn enter(&self) -> Admission<'_> {
        self.entered.fetch_add(1, Ordering::AcqRel);
        Admission(self)
    }

    /// Waits until as many submissions have been answered as were waiting when called (they
    /// are answered about in order: one writer commits them), or `at_most`.
    pub(super) async fn go_first(&self, at_most: Duration) {
        let waiting_now = self.entered.load(Ordering::Acquire);
        if self.left.load(Ordering::Acquire) >= waiting_now {
            return;
        }
        let clear = async {
            loop {
                // Created before the check: a wake between the two is not lost.
                let answered = self.answered.notified();
                if self.left.load(Ordering::Acquire) >= waiting_now {
                    return;
                }
                answered.await;
            }
        };
        let _ = tokio::time::timeout(at_most, clear).await;
    }
}

/// The tasks this process holds, and counters the feeder needs without scanning them.
#[derive(Default)]
pub(super) struct Live {
    pub(super) tasks: TaskMap<LiveTask>,
    /// Tasks in the local queue not yet taken by a worker.
    pub(super) queued: usize,
    /// Tasks whose handler runs now.
    pub(super) running: usize,
}

impl Live {
    /// Lets go of task `id`. The map gives memory back once a burst is over: it never shrinks
    /// by itself, and a burst of a thousand queued tasks left it holding a megabyte.
    pub(super) fn forget(&mut self, id: &TaskId) {
        self.tasks.remove(id);
        let capacity = self.tasks.capacity();
        if capacity > MIN_LIVE_CAPACITY && self.tasks.len() < capacity / 4 {
            self.tasks.shrink_to(self.tasks.len() * 2);
        }
    }
}

/// Below this many slots the live-task map is not shrunk (not worth the rehash).
const MIN_LIVE_CAPACITY: usize = 64;

pub(super) struct LiveTask {
    pub(super) stored: StoredTask,
    /// Bumped by every change; the writer drops a finished task from memory only once its
    /// latest version is stored.
    pub(super) version: u64,
    pub(super) run: Option<RunControl>,
}

impl Shared {
    pub(super) fn id(&self) -> &str {
        &self.me.id
    }

    pub(super) fn send(&self, op: WriteOp) -> Result<()> {
        self.writer.send(op).map_err(|_| writer_gone())
    }

    /// Sends an op that answers, and waits for its answer.
    pub(super) async fn request<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteOp,
    ) -> Result<T> {
        let (ack, answer) = oneshot::channel();
        self.send(op(ack))?;
        answer.await.map_err(|_| writer_gone())?
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

    /// The next FIFO tie-break: the time in microseconds, never twice the same.
    pub(super) fn next_order(&self) -> i64 {
        self.order.next_after(Utc::now().timestamp_micros())
    }

    /// When a lease taken now runs out (Unix ms).
    pub(super) fn lease_until(&self) -> i64 {
        now_millis() + i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Puts a task this process holds into memory and its local queue.
    pub(super) fn admit_locked(&self, live: &mut Live, stored: StoredTask) {
        let id = stored.record.id;
        live.tasks.insert(
            id,
            LiveTask {
                stored,
                version: 0,
                run: None,
            },
        );
        live.queued += 1;
        // The workers hold the receiver for as long as this process runs tasks.
        let _ = self.queue_tx.send(id);
    }

    /// Stores a new task behind the caller (write-behind) and, when this process holds it,
    /// queues it here. Under the lock that orders writes, so the insert reaches the writer
    /// before any change a worker makes to the task.
    pub(super) fn admit_and_store(&self, stored: StoredTask) -> Result<()> {
        let mut live = lock(&self.live);
        self.send(WriteOp::Insert {
            task: stored.clone(),
            ack: None,
        })?;
        if stored.owner.as_deref() == Some(self.id()) {
            self.admit_locked(&mut live, stored);
        } else {
            // Kept until stored, so that a read right after the enqueue finds it.
            live.tasks.insert(
                stored.record.id,
                LiveTask {
                    stored,
                    version: 0,
                    run: None,
                },
            );
        }
        Ok(())
    }

    pub(super) fn apply(&self, id: TaskId, change: Change) {
        let mut live = lock(&self.live);
        self.apply_locked(&mut live, id, change);
    }

    /// Applies `change` to task `id` if the rules allow it: states only move forward, progress
    /// never goes down, nothing changes after a terminal state. Sends the new version to the
    /// writer (sharing the record with it); its event is published once stored.
    pub(super) fn apply_locked(&self, live: &mut Live, id: TaskId, change: Change) {
        let Some(task) = live.tasks.get_mut(&id) else {
            return;
        };
        let finishes = matches!(change, Change::Finish { .. });
        if !Arc::make_mut(&mut task.stored.record).apply(change, &self.me.id) {
            return;
        }
        if finishes {
            task.stored.exclusive_key = None;
        }
        task.version += 1;
        let _ = self.writer.send(WriteOp::Put {
            task: task.stored.clone(),
            version: task.version,
        });
    }

    /// This process no longer holds task `id` (the store refused its change, or another process
    /// changed it): a queued one leaves memory, a running one is stopped at once and its result
    /// discarded.
    pub(super) fn lose(&self, live: &mut Live, id: TaskId, reason: CancelReason) {
        let Some(task) = live.tasks.get(&id) else {
            return;
        };
        match &task.run {
            Some(run) => {
                tracing::warn!(task = %id, ?reason, "task taken away from this worker; stopping its run");
                run.stop(reason);
            }
            None => live.forget(&id),
        }
    }

    /// An event another process wrote about a task held here: if it shows the task ended,
    /// retried or run by someone else, this process lost it. (Events from before this process
    /// took the task — its enqueue — arrive too, and change nothing.)
    pub(super) fn foreign_event(&self, event: &TaskEvent) {
        if event.task.state == TaskState::Pending && self.mode.runs_tasks() {
            // Queued by another process (or handed back for another attempt): claimable.
            self.claimable.store(true, Ordering::Release);
            self.hungry.notify_one();
        }
        let mut live = lock(&self.live);
        let Some(held) = live.tasks.get(&event.task.id) else {
            return;
        };
        let theirs = &event.task;
        let lost = theirs.state.is_terminal()
            || theirs.attempt > held.stored.record.attempt
            || (theirs.state.is_active() && theirs.worker.as_deref() != Some(self.id()));
        if lost {
            let reason = if theirs.state == TaskState::Revoked {
                CancelReason::Revoked
            } else {
                CancelReason::LeaseLost
            };
            self.lose(&mut live, theirs.id, reason);
        }
    }

    /// Revokes task `id`, held here: a queued one never runs; a running one is cancelled when
    /// `terminate` is set (and otherwise left to finish). Returns the record after the call, or
    /// `None` when this process does not hold the task.
    pub(super) fn revoke_here(&self, id: TaskId, terminate: bool) -> Option<TaskRecord> {
        let mut live = lock(&self.live);
        let task = live.tasks.get(&id)?;
        if task.stored.owner.as_deref() != Some(self.id()) {
            return None;
        }
        match task.stored.record.state {
            TaskState::Pending => {
                let change = Change::Finish {
                    state: TaskState::Revoked,
                    result: None,
                    error: Some(TaskError::new(codes::REVOKED, "revoked before it started")),
                };
                self.apply_locked(&mut live, id, change);
            }
            state if state.is_active() && terminate => {
                if let Some(run) = &task.run {
                    run.stop(CancelReason::Revoked);
                }
            }
            _ => {}
        }
        live.tasks
            .get(&id)
            .map(|task| TaskRecord::clone(&task.stored.record))
    }

    pub(super) fn running_count(&self) -> usize {
        lock(&self.live).running
    }

    /// Tells every running task to stop now; returns how many there were.
    pub(super) fn interrupt_running(&self) -> usize {
        let live = lock(&self.live);
        let mut count = 0;
        for task in live.tasks.values() {
            if let Some(run) = &task.run {
                run.stop(CancelReason::Shutdown);
                count += 1;
            }
        }
        count
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

    fn project_status(
        &self,
        change: crate::registry::StatusChange,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<()>>> {
        // The registry lives in this store's database: the change rides in the writer's next
        // transaction, after every change of this task sent before it.
        let (ack, answer) = tokio::sync::oneshot::channel();
        self.writer
            .send(WriteOp::ProjectStatus { change, ack })
            .ok()
            .map(|()| answer)
    }
}

pub(super) fn writer_gone() -> HubError {
    HubError::BackendUnavailable {
        message: "the task writer has stopped".into(),
    }
}

pub(super) use crate::sync::lock;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::{Admissions, Live, LiveTask, MIN_LIVE_CAPACITY};
    use crate::config::HubMode;
    use crate::tasks::backend::new_task;
    use crate::tasks::store::StoredTask;
    use crate::tasks::{Handlers, JobRequest, TaskConfig};

    const LONG: Duration = Duration::from_secs(30);

    /// After a burst, the live-task map gives its slots back as its tasks go.
    #[test]
    fn the_live_map_shrinks_after_a_burst() {
        let mut live = Live::default();
        for _ in 0..4096 {
            let (record, _) = new_task(
                JobRequest::new("noop", serde_json::Value::Null),
                &AtomicBool::new(true),
                &TaskConfig::default(),
                HubMode::Client,
                &Handlers::new(),
            )
            .unwrap_or_else(|err| panic!("{err}"));
            let stored = StoredTask {
                record: Arc::new(record),
                exclusive_key: None,
                owner: None,
                lease_until: None,
                queue_order: 0,
            };
            let task = LiveTask {
                stored,
                version: 0,
                run: None,
            };
            live.tasks.insert(task.stored.record.id, task);
        }
        assert!(live.tasks.capacity() >= 4096);
        let ids: Vec<_> = live.tasks.keys().copied().collect();
        let (kept, gone) = ids.split_at(1000);
        for id in gone {
            live.forget(id);
        }
        assert_eq!(live.tasks.len(), 1000);
        assert!(live.tasks.capacity() < 4096, "{}", live.tasks.capacity());
        for id in kept {
            live.forget(id);
        }
        assert!(live.tasks.is_empty());
        assert!(
            live.tasks.capacity() <= 2 * MIN_LIVE_CAPACITY,
            "{}",
            live.tasks.capacity()
        );
    }

    #[tokio::test]
    async fn a_worker_goes_on_at_once_when_no_submission_waits() {
        let admissions = Admissions::default();
        drop(admissions.enter());
        tokio::time::timeout(Duration::from_secs(5), admissions.go_first(LONG))
            .await
            .unwrap_or_else(|_| panic!("waited with nothing waiting"));
    }

    #[tokio::test]
    async fn a_worker_waits_until_the_last_waiting_submission_is_answered() {
        let admissions = Arc::new(Admissions::default());
        let first = admissions.enter();
        let second = admissions.enter();
        let worker = tokio::spawn({
            let admissions = admissions.clone();
            async move { admissions.go_first(LONG).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!worker.is_finished(), "went on while a submission waited");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .unwrap_or_else(|_| panic!("still waiting once every submission was answered"))
            .unwrap_or_else(|err| panic!("{err}"));
    }

    #[tokio::test]
    async fn a_worker_does_not_wait_for_submissions_that_came_after_it() {
        let admissions = Arc::new(Admissions::default());
        let earlier = admissions.enter();
        let worker = tokio::spawn({
            let admissions = admissions.clone();
            async move { admissions.go_first(LONG).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _later = admissions.enter();
        drop(earlier);
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .unwrap_or_else(|_| panic!("held back by a submission that came after it"))
            .unwrap_or_else(|err| panic!("{err}"));
    }

    #[tokio::test]
    async fn a_worker_waits_no_longer_than_its_bound() {
        let admissions = Admissions::default();
        let _stuck = admissions.enter();
        tokio::time::timeout(
            Duration::from_secs(5),
            admissions.go_first(Duration::from_millis(20)),
        )
        .await
        .unwrap_or_else(|_| panic!("waited past its bound"));
    }
}
