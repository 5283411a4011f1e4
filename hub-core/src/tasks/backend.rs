//! The [`TaskBackend`] trait the rest of the hub depends on, and the event subscription type
//! every backend hands out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::config::TaskConfig;
use super::handler::Handlers;
use super::history::{LatencyHistogram, TimelineEntry, WindowData};
use chrono::Utc;
use uuid::Uuid;

use super::model::{
    BackendStats, EventCursor, JobRequest, TaskEvent, TaskId, TaskPage, TaskQuery, TaskRecord,
    TaskState, TimeLimits,
};
use crate::config::HubMode;
use crate::db::Database;
use crate::error::{HubError, Result};

/// Where tasks are queued, run, recorded and watched: the core every backend implements. The
/// in-process backend is the default; a Redis backend serves workers on many hosts behind the
/// same trait. What only some backends can do (history queries, monitoring) lives in the
/// capability traits [`TaskHistory`] and [`TaskMonitor`].
///
/// Every backend gives the same answer from every process that shares its store: a task's
/// record, its exclusive key and its events are the store's, never one process's memory.
#[async_trait]
pub trait TaskBackend: Send + Sync + 'static {
    /// A short name for monitoring (`in_process`, `redis`).
    fn name(&self) -> &'static str;

    /// Queues a job and returns its id. With an exclusive key, answers once the store has
    /// decided the key was free (`conflict` otherwise).
    async fn enqueue(&self, job: JobRequest) -> Result<TaskId>;

    /// The task's record; `None` for an id the backend never saw (or whose record expired).
    async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>>;

    /// Revokes a task: a pending one never runs; a running one is cancelled when `terminate` is
    /// set (and otherwise left to finish, as Celery does), whichever process runs it. A finished
    /// task is left as it is. Returns the record after the call.
    async fn revoke(&self, id: TaskId, terminate: bool) -> Result<TaskRecord>;

    /// Every event after `after` (from the store when needed), then live ones, from every
    /// process sharing the store. `None` starts with the next event.
    async fn subscribe(&self, after: Option<EventCursor>) -> Result<EventSubscription>;

    /// The unfinished task holding exclusive key `key`, if any.
    async fn holder(&self, key: &str) -> Result<Option<TaskRecord>>;

    /// Stops taking work, lets running tasks finish within `grace`, then interrupts the rest;
    /// tasks it had reserved but not started go back to the queue.
    async fn shutdown(&self, grace: Duration) -> Result<()>;

    /// Task history queries, when the backend keeps a history.
    fn history(&self) -> Option<&dyn TaskHistory> {
        None
    }

    /// Workers, queues and rates, when the backend can tell them.
    fn monitor(&self) -> Option<&dyn TaskMonitor> {
        None
    }
}

/// A backend that can list its tasks and tell their timelines.
#[async_trait]
pub trait TaskHistory: Send + Sync {
    /// One page of the records matching `query`, in its order, with the number matching.
    async fn page(&self, query: &TaskQuery) -> Result<TaskPage>;

    /// Records matching `query`, in its order.
    async fn list(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>> {
        Ok(self.page(query).await?.tasks)
    }

    /// Every change of task `id` the store kept, oldest first (empty for an unknown task).
    async fn timeline(&self, id: TaskId) -> Result<Vec<TimelineEntry>>;
}

/// A backend that can describe its workers, queues and rates.
#[async_trait]
pub trait TaskMonitor: Send + Sync {
    /// Workers, queues, history and rates.
    async fn stats(&self) -> Result<BackendStats>;

    /// Per-minute counts and finished-task samples from `since` to now (at most
    /// [`super::history::SAMPLE_RETENTION`] back).
    async fn window(&self, since: chrono::DateTime<Utc>) -> Result<WindowData>;

    /// All-time runtime and queue-wait histograms by kind.
    async fn histograms(&self) -> Result<Vec<LatencyHistogram>>;
}

/// What a backend is opened with.
#[derive(Debug, Clone)]
pub struct BackendContext {
    /// The hub's database (registry and, for the in-process backend, the task store).
    pub db: Database,
    /// Task settings.
    pub config: TaskConfig,
    /// Handlers by job kind.
    pub handlers: Handlers,
    /// Whether this process runs tasks, only submits them, or only runs them.
    pub mode: HubMode,
}

/// Opens a [`TaskBackend`]: how a hub is given its backend (see `Hub::builder`).
#[async_trait]
pub trait BackendFactory: Send + Sync {
    /// Opens the backend.
    async fn open(&self, context: BackendContext) -> Result<Arc<dyn TaskBackend>>;
}

/// A new task's record (`PENDING`, attempt 1) and its exclusive key, from a job: the checks
/// and defaults every backend applies at enqueue. A backend that shut down (`accepting` off)
/// takes nothing more. A process that runs tasks refuses kinds it has no handler for; a client
/// trusts the workers to know them.
pub(crate) fn new_task(
    job: JobRequest,
    accepting: &std::sync::atomic::AtomicBool,
    config: &TaskConfig,
    mode: HubMode,
    handlers: &Handlers,
) -> Result<(TaskRecord, Option<String>)> {
    if !accepting.load(std::sync::atomic::Ordering::Acquire) {
        return Err(HubError::BackendUnavailable {
            message: "the task backend is shutting down".into(),
        });
    }
    if mode.runs_tasks() && !handlers.contains(&job.kind) {
        return Err(HubError::invalid(
            "kind",
            format!("no handler is registered for job kind '{}'", job.kind),
        ));
    }
    let limits = TimeLimits {
        soft: job.options.soft_time_limit.unwrap_or(config.limits.soft),
        hard: job.options.hard_time_limit.unwrap_or(config.limits.hard),
    };
    if limits.hard.is_zero() {
        return Err(HubError::invalid("hard_time_limit", "must be above zero"));
    }
    let queue = match job.options.queue {
        Some(queue) => {
            validate_queue_name("queue", &queue)?;
            queue
        }
        None => config.default_queue.clone(),
    };
    let record = TaskRecord {
        // Time-ordered: see `TaskId`.
        id: Uuid::now_v7(),
        kind: job.kind,
        queue,
        project_id: job.project_id,
        payload: job.payload,
        state: TaskState::Pending,
        progress: 0,
        status: None,
        result: None,
        error: None,
        attempt: 1,
        worker: None,
        queued_at: Utc::now(),
        started_at: None,
        finished_at: None,
        limits,
    };
    Ok((record, job.options.exclusive_key))
}

/// Waits until `running()` is zero (re-checked each time `finished` is notified) or `grace`
/// has passed: the graceful part of every backend's shutdown.
pub(crate) async fn wait_for_running(
    finished: &tokio::sync::Notify,
    running: impl Fn() -> usize,
    grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        // Interest first, then the check, so a finish in between is not missed.
        let notified = finished.notified();
        if running() == 0 {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return;
        }
    }
}

/// The `conflict` an enqueue meets when `holder` (its kind and id) holds exclusive key `key`.
pub(crate) fn key_held(key: &str, holder: &str) -> HubError {
    HubError::Conflict {
        message: format!(
            "another operation ({holder}) is still running for {key}; wait for it or revoke it"
        ),
    }
}

/// Longest queue name.
pub const MAX_QUEUE_NAME: usize = 64;

/// Checks a queue name: 1 to 64 letters, digits, `.`, `_`, `-` or `:` (it becomes part of a
/// store key and of command lines).
pub fn validate_queue_name(field: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if valid {
        Ok(())
    } else {
        Err(HubError::invalid(
            field,
            format!(
                "queue name '{}' must be 1 to {MAX_QUEUE_NAME} letters, digits, '.', '_', '-' or ':'",
                name.escape_debug()
            ),
        ))
    }
}

/// A subscriber's view of the event stream: buffered events first, then live ones.
///
/// Sequence numbers increase by one per event across the whole store; when a subscriber falls
/// too far behind, older events are dropped and [`EventSubscription::missed`] counts them.
#[derive(Debug)]
pub struct EventSubscription {
    backlog: VecDeque<TaskEvent>,
    live: broadcast::Receiver<TaskEvent>,
    last_seq: u64,
    missed: u64,
}

impl EventSubscription {
    /// A subscription that yields `backlog`, then whatever `live` receives after it.
    pub fn new(backlog: VecDeque<TaskEvent>, live: broadcast::Receiver<TaskEvent>) -> Self {
        EventSubscription {
            backlog,
            live,
            last_seq: 0,
            missed: 0,
        }
    }

    /// The next event, or `None` when the backend is gone.
    pub async fn recv(&mut self) -> Option<TaskEvent> {
        while let Some(event) = self.backlog.pop_front() {
            if event.seq > self.last_seq {
                self.last_seq = event.seq;
                return Some(event);
            }
        }
        loop {
            match self.live.recv().await {
                // The backlog and the live channel overlap by design; skip what was delivered.
                Ok(event) if event.seq <= self.last_seq => continue,
                Ok(event) => {
                    self.last_seq = event.seq;
                    return Some(event);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event subscriber lagged");
                    self.missed += n;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is already here (buffered or received), without waiting.
    pub fn try_recv(&mut self) -> Option<TaskEvent> {
        while let Some(event) = self.backlog.pop_front() {
            if event.seq > self.last_seq {
                self.last_seq = event.seq;
                return Some(event);
            }
        }
        loop {
            match self.live.try_recv() {
                Ok(event) if event.seq <= self.last_seq => continue,
                Ok(event) => {
                    self.last_seq = event.seq;
                    return Some(event);
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.missed += n,
                Err(_) => return None,
            }
        }
    }

    /// Skips events up to and including `cursor` (the subscriber has seen them).
    pub fn skip_through(&mut self, cursor: EventCursor) {
        self.last_seq = self.last_seq.max(cursor.seq());
    }

    /// Where the subscriber is: the cursor of the last event it received.
    pub fn cursor(&self) -> EventCursor {
        EventCursor::after(self.last_seq)
    }

    /// How many events were dropped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}
