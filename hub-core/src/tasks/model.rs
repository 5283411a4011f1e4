//! Task data: states, records, events, queries and options. Behaviour lives elsewhere.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::history::MinuteCounts;
use crate::error::{ErrorCode, HubError, Result};

/// A task's id: a UUID handed out at enqueue, version 7 — its creation time, then random bits.
/// Ids that grow with time keep the store's index on them appending at one end, where random
/// ones dirtied a page anywhere in it with every new task; the random end tells tasks apart.
pub type TaskId = Uuid;

/// A map keyed by task id, with a fast seeded hash. Task ids are made by the hubs
/// (`Uuid::now_v7`, with a random end), never chosen by a caller, and only those key these
/// maps: SipHash's resistance to chosen keys bought nothing here, and took 2 % of the engine
/// bench's samples.
pub(crate) type TaskMap<V> = std::collections::HashMap<TaskId, V, foldhash::fast::RandomState>;
/// A set of task ids, hashed as [`TaskMap`].
pub(crate) type TaskSet = std::collections::HashSet<TaskId, foldhash::fast::RandomState>;

/// Where a task is in its life. States only move forward:
/// `PENDING → STARTED → (BUILDING | RUNNING | STOPPING | RESTARTING | FETCHING)* → terminal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskState {
    /// Queued, waiting for a worker.
    Pending,
    /// A worker took it.
    Started,
    /// Building or pulling images.
    Building,
    /// Starting or running services.
    Running,
    /// Stopping services.
    Stopping,
    /// Restarting services.
    Restarting,
    /// Fetching data (logs, status).
    Fetching,
    /// Finished successfully.
    Success,
    /// Finished with an error.
    Failure,
    /// Cancelled before or while running.
    Revoked,
}

impl TaskState {
    /// Every state, in life order.
    pub const ALL: [TaskState; 10] = [
        TaskState::Pending,
        TaskState::Started,
        TaskState::Building,
        TaskState::Running,
        TaskState::Stopping,
        TaskState::Restarting,
        TaskState::Fetching,
        TaskState::Success,
        TaskState::Failure,
        TaskState::Revoked,
    ];

    /// The upper-case name (`PENDING`, `SUCCESS`, …), as Celery and the original spelled it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Started => "STARTED",
            TaskState::Building => "BUILDING",
            TaskState::Running => "RUNNING",
            TaskState::Stopping => "STOPPING",
            TaskState::Restarting => "RESTARTING",
            TaskState::Fetching => "FETCHING",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
        }
    }

    /// `true` exactly for `SUCCESS`, `FAILURE` and `REVOKED`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }

    /// `true` for the states a handler may report progress in.
    pub fn is_progress(self) -> bool {
        matches!(
            self,
            TaskState::Building
                | TaskState::Running
                | TaskState::Stopping
                | TaskState::Restarting
                | TaskState::Fetching
        )
    }

    /// `true` while a worker holds the task (`STARTED` or a progress state).
    pub fn is_active(self) -> bool {
        self == TaskState::Started || self.is_progress()
    }

    /// Rank in the forward order; a state may only be replaced by one of equal or higher rank
    /// (progress states share a rank, so a handler may move between them).
    fn rank(self) -> u8 {
        match self {
            TaskState::Pending => 0,
            TaskState::Started => 1,
            s if s.is_progress() => 2,
            _ => 3,
        }
    }

    /// Whether a task in `self` may move to `next`.
    pub fn can_move_to(self, next: TaskState) -> bool {
        !self.is_terminal() && next.rank() >= self.rank()
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = HubError;

    fn from_str(s: &str) -> Result<Self> {
        let upper = s.to_ascii_uppercase();
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == upper)
            .ok_or_else(|| {
                HubError::invalid(
                    "state",
                    format!("unknown task state '{s}' (expected one of PENDING, STARTED, BUILDING, RUNNING, STOPPING, RESTARTING, FETCHING, SUCCESS, FAILURE, REVOKED)"),
                )
            })
    }
}

/// Why a task failed: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// Machine-readable code (`port_in_use`, `time_limit`, `interrupted`, a [`ErrorCode`], …).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl TaskError {
    /// An error with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for TaskError {}

impl From<HubError> for TaskError {
    fn from(err: HubError) -> Self {
        TaskError::new(err.code().as_str(), err.to_string())
    }
}

impl From<ErrorCode> for TaskError {
    fn from(code: ErrorCode) -> Self {
        TaskError::new(code.as_str(), code.as_str())
    }
}

/// Error codes the task engine itself produces.
pub mod codes {
    /// The hub stopped (or crashed) while the task ran.
    pub const INTERRUPTED: &str = "interrupted";
    /// The hard time limit was reached and the handler aborted.
    pub const TIME_LIMIT: &str = "time_limit";
    /// The soft time limit was reached (handlers report this when they give up).
    pub const SOFT_TIME_LIMIT: &str = "soft_time_limit";
    /// The handler panicked.
    pub const PANIC: &str = "panic";
    /// The task was revoked.
    pub const REVOKED: &str = "revoked";
    /// A task safe to retry lost its worker on every attempt allowed.
    pub const WORKER_LOST: &str = "worker_lost";
}

/// Everything known about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id.
    pub id: TaskId,
    /// Job kind (`start_project`, …); selects the handler.
    pub kind: String,
    /// Queue the task went through.
    pub queue: String,
    /// The project the task is about, if any.
    pub project_id: Option<i64>,
    /// The job's input.
    pub payload: serde_json::Value,
    /// Current state.
    pub state: TaskState,
    /// 0–100; never goes down.
    pub progress: u8,
    /// The current step, for people ("Pulling postgres:15-alpine (2/4)").
    pub status: Option<String>,
    /// What the handler returned, on `SUCCESS`.
    pub result: Option<serde_json::Value>,
    /// Why it failed, on `FAILURE` (and the reason, on `REVOKED`).
    pub error: Option<TaskError>,
    /// 1 for the first run; a retry or re-delivery increments it.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: Option<String>,
    /// When it was enqueued.
    pub queued_at: DateTime<Utc>,
    /// When a worker took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Time limits in force for this task.
    pub limits: TimeLimits,
}

impl TaskRecord {
    /// `true` exactly when the state is terminal.
    pub fn ready(&self) -> bool {
        self.state.is_terminal()
    }

    /// The step line for people: the handler's own while the task runs, and the original hub's
    /// texts where a state carries none ("Task is queued, waiting to start...",
    /// "Completed successfully", …).
    pub fn status_line(&self) -> String {
        let fixed = match self.state {
            TaskState::Pending => "Task is queued, waiting to start...",
            TaskState::Success => "Completed successfully",
            TaskState::Failure => "Task failed",
            TaskState::Revoked => "Task was revoked",
            _ => "",
        };
        if !fixed.is_empty() {
            return fixed.to_owned();
        }
        if let Some(step) = &self.status {
            return step.clone();
        }
        match self.state {
            TaskState::Started => "Starting...",
            TaskState::Building => "Building...",
            TaskState::Running => "Running...",
            TaskState::Stopping => "Stopping...",
            TaskState::Restarting => "Restarting...",
            _ => "Fetching...",
        }
        .to_owned()
    }

    /// Whether this version of the task comes later in its life than `earlier` (a later
    /// attempt, a later state, or more progress in the same state). A watcher that shows the
    /// current record and then the event stream skips events that do not: the record it
    /// started from may already be ahead of events still on their way.
    pub fn is_after(&self, earlier: &TaskRecord) -> bool {
        if earlier.state.is_terminal() {
            return false;
        }
        let place = |r: &TaskRecord| (r.attempt, r.state.rank(), r.progress);
        match place(self).cmp(&place(earlier)) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => {
                self.status != earlier.status || self.state != earlier.state
            }
            std::cmp::Ordering::Less => false,
        }
    }

    /// Seconds from start to finish (or to now, while running).
    pub fn runtime(&self) -> Option<f64> {
        let started = self.started_at?;
        let end = self.finished_at.unwrap_or_else(Utc::now);
        Some((end - started).num_milliseconds().max(0) as f64 / 1000.0)
    }
}

/// Soft and hard time limits of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeLimits {
    /// After this the handler's cancellation token fires with reason `soft_time_limit`.
    #[serde(with = "duration_secs")]
    pub soft: Duration,
    /// After this the handler is aborted and the task fails with code `time_limit`.
    #[serde(with = "duration_secs")]
    pub hard: Duration,
}

impl Default for TimeLimits {
    fn default() -> Self {
        TimeLimits {
            soft: Duration::from_secs(3600),
            hard: Duration::from_secs(7200),
        }
    }
}

/// Serialises a `Duration` as fractional seconds.
pub(crate) mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// How to run one job; unset fields take the backend's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOptions {
    /// Queue name (default: the configured default queue, `default`).
    pub queue: Option<String>,
    /// Soft time limit override.
    pub soft_time_limit: Option<Duration>,
    /// Hard time limit override.
    pub hard_time_limit: Option<Duration>,
    /// At most one unfinished task may hold the same key (e.g. one operation per project); a
    /// second enqueue with a held key fails with `conflict`. Enforced in the database.
    pub exclusive_key: Option<String>,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    /// Job kind; a handler must be registered for it.
    pub kind: String,
    /// Input handed to the handler.
    pub payload: serde_json::Value,
    /// The project the job is about.
    pub project_id: Option<i64>,
    /// Queue, limits, exclusivity.
    pub options: JobOptions,
}

impl JobRequest {
    /// A job of `kind` with `payload`.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        JobRequest {
            kind: kind.into(),
            payload,
            project_id: None,
            options: JobOptions::default(),
        }
    }

    /// Ties the job to a project.
    pub fn project(mut self, project_id: i64) -> Self {
        self.project_id = Some(project_id);
        self
    }

    /// Sets the options.
    pub fn options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }
}

/// A change of a task, as published on the event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Position in the store's one event log: strictly increasing across every process that
    /// shares the store; consecutive numbers mean nothing was missed.
    pub seq: u64,
    /// The task as it is after the change. Shared: the recent-events buffer, the live
    /// broadcast and the finished-records cache hold one copy between them.
    pub task: Arc<TaskRecord>,
}

impl TaskEvent {
    /// The cursor to resume after this event.
    pub fn cursor(&self) -> EventCursor {
        EventCursor(self.seq)
    }
}

/// Where a subscriber is in the event log, to resume from (an SSE `Last-Event-ID`). Opaque:
/// its text form is what a client sends back; only the backend that made it reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventCursor(pub(crate) u64);

impl EventCursor {
    /// The cursor before event `seq` was published (resuming from it yields `seq` onward).
    pub fn after(seq: u64) -> Self {
        EventCursor(seq)
    }

    /// The sequence number of the last event seen.
    pub fn seq(self) -> u64 {
        self.0
    }
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for EventCursor {
    type Err = HubError;

    fn from_str(s: &str) -> Result<Self> {
        s.trim().parse().map(EventCursor).map_err(|_| {
            HubError::invalid(
                "Last-Event-ID",
                format!("'{s}' is not an event id this hub gave out"),
            )
        })
    }
}

/// Most tasks one history query returns.
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Tasks a history query returns when it does not say.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// A task's state as frontends show it: the original's status shape, plus what we know more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStatus {
    /// Task id.
    pub task_id: Uuid,
    /// `PENDING`, `STARTED`, `BUILDING`, …, `SUCCESS`, `FAILURE` or `REVOKED`.
    pub state: TaskState,
    /// True exactly for terminal states.
    pub ready: bool,
    /// The current step, for people.
    pub status: String,
    /// 0–100.
    pub progress: u8,
    /// What the task returned, on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Machine-readable reason of a failure (`port_in_use`, `time_limit`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Job kind.
    pub kind: String,
    /// The queue it went through.
    pub queue: String,
    /// The project it is about.
    pub project_id: Option<i64>,
    /// 1 for the first run; more when it ran again after its worker was lost.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: Option<String>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds from start to finish (or now).
    pub runtime: Option<f64>,
}

impl From<&TaskRecord> for TaskStatus {
    fn from(task: &TaskRecord) -> Self {
        TaskStatus {
            task_id: task.id,
            state: task.state,
            ready: task.ready(),
            status: task.status_line(),
            progress: task.progress,
            result: task.result.clone(),
            error: task.error.as_ref().map(|e| e.message.clone()),
            error_code: task.error.as_ref().map(|e| e.code.clone()),
            kind: task.kind.clone(),
            queue: task.queue.clone(),
            project_id: task.project_id,
            attempt: task.attempt,
            worker: task.worker.clone(),
            queued_at: task.queued_at,
            started_at: task.started_at,
            finished_at: task.finished_at,
            runtime: task.runtime(),
        }
    }
}

/// Filters for listing tasks; every field narrows the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskQuery {
    /// Only tasks in one of these states.
    pub states: Vec<TaskState>,
    /// Only tasks of this kind.
    pub kind: Option<String>,
    /// Only tasks about this project.
    pub project_id: Option<i64>,
    /// Only tasks queued at or after this time.
    pub queued_after: Option<DateTime<Utc>>,
    /// Only tasks queued before this time.
    pub queued_before: Option<DateTime<Utc>>,
    /// Only tasks run by this worker (its id, as records name it).
    pub worker: Option<String>,
    /// Only tasks whose id, kind, queue, worker, step line or error contains this text
    /// (case-insensitive).
    pub search: Option<String>,
    /// What they are sorted by (default: when they were received, newest first).
    pub sort: TaskSort,
    /// Oldest (smallest) first instead of newest (largest) first.
    pub ascending: bool,
    /// At most this many.
    pub limit: u32,
    /// Skip this many.
    pub offset: u32,
}

/// What a task history is sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskSort {
    /// When the task was queued.
    #[default]
    Received,
    /// When it started (never-started tasks last).
    Started,
    /// How long it ran, or has run so far (never-started tasks last).
    Runtime,
}

impl TaskSort {
    /// Its name in queries.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSort::Received => "received",
            TaskSort::Started => "started",
            TaskSort::Runtime => "runtime",
        }
    }
}

impl FromStr for TaskSort {
    type Err = HubError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "received" => Ok(TaskSort::Received),
            "started" => Ok(TaskSort::Started),
            "runtime" => Ok(TaskSort::Runtime),
            other => Err(HubError::invalid(
                "sort",
                format!(
                    "'{}' is not a sort order: use received, started or runtime",
                    other.escape_debug()
                ),
            )),
        }
    }
}

impl TaskState {
    /// States from a comma-separated list (`RUNNING,PENDING`; any case).
    pub fn parse_list(text: &str) -> Result<Vec<TaskState>> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

/// Longest text a history search takes.
pub const MAX_SEARCH_LEN: usize = 200;

/// One page of a task history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// The page's tasks, in the query's order.
    pub tasks: Vec<TaskRecord>,
    /// Tasks matching the query in all pages.
    pub total: u64,
}

impl TaskRecord {
    /// Whether the record passes `query`'s filters (every backend that filters in memory uses
    /// this one rule; SQL stores say the same in SQL).
    // Used by the Redis backend.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn matches(&self, query: &TaskQuery) -> bool {
        (query.states.is_empty() || query.states.contains(&self.state))
            && query.kind.as_ref().is_none_or(|kind| *kind == self.kind)
            && query
                .project_id
                .is_none_or(|project| self.project_id == Some(project))
            && query
                .worker
                .as_ref()
                .is_none_or(|worker| self.worker.as_ref() == Some(worker))
            && query.queued_after.is_none_or(|t| self.queued_at >= t)
            && query.queued_before.is_none_or(|t| self.queued_at < t)
            && query.search.as_ref().is_none_or(|text| {
                let text = text.to_lowercase();
                let id = self.id.to_string();
                [
                    Some(id.as_str()),
                    Some(self.kind.as_str()),
                    Some(self.queue.as_str()),
                    self.worker.as_deref(),
                    self.status.as_deref(),
                    self.error.as_ref().map(|e| e.message.as_str()),
                ]
                .into_iter()
                .flatten()
                .any(|field| field.to_lowercase().contains(&text))
            })
    }

    /// Sorts `records` as `query` asks, in memory (for stores that cannot sort themselves).
    // Used by the Redis backend.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn sort_for(records: &mut [TaskRecord], query: &TaskQuery) {
        let now = Utc::now();
        // Never-started tasks sort last whichever the direction: the key is (has value, value).
        let key = |r: &TaskRecord| -> (bool, i64) {
            match query.sort {
                TaskSort::Received => (true, r.queued_at.timestamp_micros()),
                TaskSort::Started => (
                    r.started_at.is_some(),
                    r.started_at.map_or(0, |t| t.timestamp_micros()),
                ),
                TaskSort::Runtime => match r.started_at {
                    Some(started) => (
                        true,
                        (r.finished_at.unwrap_or(now) - started)
                            .num_microseconds()
                            .unwrap_or(i64::MAX),
                    ),
                    None => (false, 0),
                },
            }
        };
        records.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).reverse().then(if query.ascending {
                ka.1.cmp(&kb.1)
            } else {
                kb.1.cmp(&ka.1)
            })
        });
    }
}

impl TaskQuery {
    /// Checks the query: `limit` must be 1 to [`MAX_LIST_LIMIT`].
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_LIST_LIMIT {
            return Err(HubError::invalid(
                "limit",
                format!("must be 1 to {MAX_LIST_LIMIT}, not {}", self.limit),
            ));
        }
        if let Some(search) = &self.search
            && (search.is_empty() || search.chars().count() > MAX_SEARCH_LEN)
        {
            return Err(HubError::invalid(
                "q",
                format!("a search text must be 1 to {MAX_SEARCH_LEN} characters"),
            ));
        }
        Ok(())
    }
}

impl Default for TaskQuery {
    fn default() -> Self {
        TaskQuery {
            states: Vec::new(),
            kind: None,
            project_id: None,
            queued_after: None,
            queued_before: None,
            worker: None,
            search: None,
            sort: TaskSort::Received,
            ascending: false,
            limit: DEFAULT_LIST_LIMIT,
            offset: 0,
        }
    }
}

/// A change a worker makes to a task it holds; [`TaskRecord::apply`] decides whether the rules
/// allow it.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Start,
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
}

impl TaskRecord {
    /// Applies `change`, made by `worker`, if the rules allow it: states only move forward,
    /// progress never goes down, nothing changes after a terminal state, success means 100 %.
    /// Returns whether the record changed.
    pub(crate) fn apply(&mut self, change: Change, worker: &str) -> bool {
        let now = Utc::now();
        match change {
            Change::Start => {
                if !self.state.can_move_to(TaskState::Started) {
                    return false;
                }
                self.state = TaskState::Started;
                self.worker = Some(worker.to_owned());
                self.started_at = Some(now);
            }
            Change::Progress {
                state,
                percent,
                status,
            } => {
                if !self.state.can_move_to(state) {
                    return false;
                }
                self.state = state;
                self.progress = self.progress.max(percent.min(100));
                self.status = status;
            }
            Change::Finish {
                state,
                result,
                error,
            } => {
                if !self.state.can_move_to(state) {
                    return false;
                }
                self.state = state;
                if state == TaskState::Success {
                    self.progress = 100;
                }
                self.result = result;
                self.error = error;
                self.finished_at = Some(now);
            }
        }
        true
    }

    /// What becomes of this task, running when its worker `lost_worker` was lost: a kind safe
    /// to retry runs again (attempt + 1) while attempts remain; otherwise it ends `FAILURE`,
    /// `worker_lost` once its attempts are used up, `interrupted` for a kind not safe to retry.
    pub(crate) fn after_worker_lost(
        &self,
        retryable: bool,
        max_attempts: u32,
        lost_worker: &str,
    ) -> LostVerdict {
        if retryable && self.attempt < max_attempts {
            return LostVerdict::Retry(TaskRecord {
                state: TaskState::Pending,
                progress: 0,
                status: None,
                result: None,
                error: None,
                attempt: self.attempt + 1,
                worker: None,
                started_at: None,
                finished_at: None,
                ..self.clone()
            });
        }
        let (code, message) = if retryable {
            (
                codes::WORKER_LOST,
                format!(
                    "its worker {lost_worker} was lost on attempt {} of {max_attempts}",
                    self.attempt
                ),
            )
        } else {
            (
                codes::INTERRUPTED,
                format!("its worker {lost_worker} stopped while the task ran (lease expired)"),
            )
        };
        LostVerdict::Fail(TaskRecord {
            state: TaskState::Failure,
            error: Some(TaskError::new(code, message)),
            finished_at: Some(Utc::now()),
            ..self.clone()
        })
    }
}

/// What becomes of a task whose worker was lost mid-run.
#[derive(Debug, Clone)]
pub(crate) enum LostVerdict {
    /// It runs again: the record of its next attempt, queued.
    Retry(TaskRecord),
    /// It ended: the failed record.
    Fail(TaskRecord),
}

/// Why a handler's cancellation token fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Someone revoked the task with `terminate`.
    Revoked,
    /// The soft time limit passed.
    SoftTimeLimit,
    /// The hub is shutting down.
    Shutdown,
    /// This worker no longer holds the task (its lease expired and another process took it
    /// over): whatever the run does from now on is discarded.
    LeaseLost,
}

/// One worker process, as monitoring shows it: a process that runs tasks (`hub serve`, `hub
/// worker`, an embedded hub) with `concurrency` slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    /// Unique id: `name@host:pid/instance`; what task records name as their `worker`.
    pub id: String,
    /// The name it was given (`serve`, `worker`, …).
    pub name: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// `embedded` (submits and runs) or `worker` (runs only).
    pub mode: String,
    /// Tasks it runs at once.
    pub concurrency: u32,
    /// Queues it takes tasks from (empty: every queue).
    pub queues: Vec<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// `true` while its lease is current (it heartbeats); `false` once stopped or gone.
    pub online: bool,
    /// Tasks it holds now (running or reserved).
    pub active: u64,
    /// Tasks it finished since it started.
    pub processed: u64,
    /// Tasks it ran that ended `SUCCESS` (all time, from the store).
    #[serde(default)]
    pub succeeded: u64,
    /// Tasks it ran that ended `FAILURE` (all time, from the store).
    #[serde(default)]
    pub failed: u64,
}

/// One queue, as monitoring shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Tasks waiting.
    pub pending: u64,
    /// Tasks running.
    pub active: u64,
    /// When the task waiting longest was queued (`None` when none waits).
    #[serde(default)]
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// Finished-task counts of one kind (kept apart from records, so expiry does not change them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KindCounts {
    /// Job kind.
    pub kind: String,
    /// Finished with `SUCCESS`.
    pub succeeded: u64,
    /// Finished with `FAILURE`.
    pub failed: u64,
    /// Finished with `REVOKED`.
    pub revoked: u64,
    /// Mean run time of finished tasks, in seconds.
    pub mean_runtime: f64,
}

/// Tasks finished in the 60 seconds before `now`, from per-minute counts: this minute's, plus
/// the share of the previous minute's that still lies in the window (the usual sliding-window
/// estimate). A calendar minute alone would read 0 just after every minute turns.
pub(crate) fn finished_in_last_minute(
    this_minute: u64,
    previous_minute: u64,
    now: DateTime<Utc>,
) -> u64 {
    let elapsed = f64::from(now.timestamp().rem_euclid(60) as u32) / 60.0;
    this_minute + (previous_minute as f64 * (1.0 - elapsed)).round() as u64
}

impl KindCounts {
    /// These counts with their mean runtime, from the total runtime of the finished tasks.
    pub(crate) fn with_total_runtime_ms(mut self, runtime_ms: i64) -> Self {
        let total = self.succeeded + self.failed + self.revoked;
        if total > 0 {
            self.mean_runtime = runtime_ms as f64 / 1000.0 / total as f64;
        }
        self
    }
}

impl BackendStats {
    /// The stats of a backend from what it read: its workers, queues and all-time counts, and
    /// the per-minute counts of the last 15 minutes (oldest first, this minute last). Every
    /// backend assembles them here, so the rates mean the same on each.
    pub(crate) fn assemble(
        backend: &str,
        workers: Vec<WorkerInfo>,
        queues: Vec<QueueInfo>,
        kinds: Vec<KindCounts>,
        last_15_minutes: &[MinuteCounts],
        subscribers: u64,
    ) -> Self {
        let finished = |m: &MinuteCounts| m.succeeded + m.failed + m.revoked;
        let this_minute = last_15_minutes.last().map_or(0, finished);
        let previous = last_15_minutes.iter().rev().nth(1).map_or(0, finished);
        BackendStats {
            backend: backend.to_owned(),
            concurrency: workers
                .iter()
                .filter(|w| w.online)
                .map(|w| w.concurrency)
                .sum(),
            workers,
            queues,
            kinds,
            finished_last_minute: finished_in_last_minute(this_minute, previous, Utc::now()),
            rate_per_minute_15m: last_15_minutes.iter().map(finished).sum::<u64>() as f64 / 15.0,
            subscribers,
        }
    }
}

/// What monitoring shows of a backend: workers, queues, history and rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackendStats {
    /// `in_process` or `redis`.
    pub backend: String,
    /// Maximum tasks run at once.
    pub concurrency: u32,
    /// The workers.
    pub workers: Vec<WorkerInfo>,
    /// The queues.
    pub queues: Vec<QueueInfo>,
    /// Finished tasks by kind, all time.
    pub kinds: Vec<KindCounts>,
    /// Tasks finished in the last minute.
    pub finished_last_minute: u64,
    /// Tasks finished per minute, averaged over the last 15 minutes.
    pub rate_per_minute_15m: f64,
    /// Event subscriptions open in this process (push streams, watchers): one that outlives
    /// its client is a leak.
    #[serde(default)]
    pub subscribers: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        use TaskState::*;
        assert!(Pending.can_move_to(Started));
        assert!(Started.can_move_to(Building));
        assert!(Building.can_move_to(Running));
        assert!(
            Running.can_move_to(Building),
            "progress states share a rank"
        );
        assert!(Running.can_move_to(Success));
        assert!(Pending.can_move_to(Revoked));
        assert!(!Started.can_move_to(Pending));
        assert!(!Building.can_move_to(Started));
        for terminal in [Success, Failure, Revoked] {
            for next in TaskState::ALL {
                assert!(!terminal.can_move_to(next), "{terminal} -> {next}");
            }
        }
    }

    #[test]
    fn a_watcher_can_tell_a_later_version_from_an_older_one() {
        let record = |state: TaskState, progress: u8, attempt: u32| TaskRecord {
            id: Uuid::nil(),
            kind: "k".into(),
            queue: "q".into(),
            project_id: None,
            payload: serde_json::Value::Null,
            state,
            progress,
            status: None,
            result: None,
            error: None,
            attempt,
            worker: None,
            queued_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            limits: TimeLimits::default(),
        };
        let building = record(TaskState::Building, 2, 1);
        assert!(!record(TaskState::Pending, 0, 1).is_after(&building));
        assert!(record(TaskState::Building, 5, 1).is_after(&building));
        assert!(record(TaskState::Success, 100, 1).is_after(&building));
        assert!(
            record(TaskState::Pending, 0, 2).is_after(&building),
            "a retry"
        );
        assert!(!building.is_after(&building));
        assert!(!record(TaskState::Running, 50, 1).is_after(&record(TaskState::Failure, 2, 1)));
    }

    #[test]
    fn ready_is_true_exactly_for_terminal_states() {
        let terminal: Vec<TaskState> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [TaskState::Success, TaskState::Failure, TaskState::Revoked]
        );
    }

    #[test]
    fn states_parse_in_any_case_and_reject_unknown_ones() {
        assert_eq!("pending".parse::<TaskState>().unwrap(), TaskState::Pending);
        assert_eq!("SUCCESS".parse::<TaskState>().unwrap(), TaskState::Success);
        let err = "DONE".parse::<TaskState>().unwrap_err();
        assert_eq!(err.field(), Some("state"));
    }

    #[test]
    fn records_serialise_states_in_upper_case() {
        let json = serde_json::to_value(TaskState::Building).unwrap();
        assert_eq!(json, "BUILDING");
    }
}

#[cfg(test)]
mod minute_tests {
    use super::*;

    #[test]
    fn the_last_minute_slides_over_the_turn_of_the_minute() {
        // 1,800,000,000 s is a whole number of minutes.
        let at = |secs: i64| DateTime::from_timestamp(1_800_000_000 + secs, 0);
        let just_after = at(1).unwrap_or_default();
        // Two tasks that ended a moment before the minute turned still count.
        assert_eq!(finished_in_last_minute(0, 2, just_after), 2);
        let half_way = at(30).unwrap_or_default();
        assert_eq!(finished_in_last_minute(3, 10, half_way), 8);
        let at_end = at(59).unwrap_or_default();
        assert_eq!(finished_in_last_minute(4, 60, at_end), 5);
    }
}
