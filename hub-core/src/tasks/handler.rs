//! Job handlers — the code a task runs — and the [`TaskContext`] they report through.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use tokio::sync::oneshot;

use super::model::{CancelReason, TaskError, TaskId, TaskRecord, TaskState};
use crate::error::{HubError, Result};
use crate::registry::StatusChange;

/// What a handler returns: a JSON result, or why it failed.
pub type JobResult = std::result::Result<serde_json::Value, TaskError>;

/// The code behind one job kind.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Runs the job. Report progress through `ctx`; watch `ctx.cancelled()` to stop early and
    /// clean up (a handler that ignores cancellation is aborted after a grace period).
    async fn run(&self, ctx: TaskContext, payload: serde_json::Value) -> JobResult;

    /// Whether a task of this kind may run again when its worker is lost mid-run (its lease
    /// expired). `false` by default: the task ends `FAILURE` / `interrupted` instead, and
    /// [`JobHandler::lost`] is called. Wrap a handler in [`Retryable`] to say yes.
    fn retry_when_lost(&self) -> bool {
        false
    }

    /// Called, in the process that found it, after a task of this kind was ended `FAILURE` /
    /// `interrupted` because its worker was lost: a chance to put right what the lost run left
    /// half done. Nothing by default.
    async fn lost(&self, _task: &TaskRecord) {}
}

/// A handler whose tasks run again when their worker is lost mid-run (at most the backend's
/// attempt limit), for jobs that are safe to repeat.
#[derive(Debug, Clone)]
pub struct Retryable<H>(pub H);

#[async_trait]
impl<H: JobHandler> JobHandler for Retryable<H> {
    async fn run(&self, ctx: TaskContext, payload: serde_json::Value) -> JobResult {
        self.0.run(ctx, payload).await
    }

    fn retry_when_lost(&self) -> bool {
        true
    }

    async fn lost(&self, task: &TaskRecord) {
        self.0.lost(task).await;
    }
}

#[async_trait]
impl<F, Fut> JobHandler for F
where
    F: Fn(TaskContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobResult> + Send + 'static,
{
    async fn run(&self, ctx: TaskContext, payload: serde_json::Value) -> JobResult {
        self(ctx, payload).await
    }
}

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<String, Arc<dyn JobHandler>>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<&String> = self.by_kind.keys().collect();
        kinds.sort();
        f.debug_struct("Handlers").field("kinds", &kinds).finish()
    }
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Self {
        Handlers::default()
    }

    /// Registers `handler` for `kind`, replacing any earlier one.
    pub fn register(mut self, kind: impl Into<String>, handler: impl JobHandler) -> Self {
        self.by_kind.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Adds every handler of `other` (its handlers win on a clash).
    pub fn merge(mut self, other: Handlers) -> Self {
        self.by_kind.extend(other.by_kind);
        self
    }

    /// The handler for `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.by_kind.get(kind).cloned()
    }

    /// Whether a handler is registered for `kind`.
    pub fn contains(&self, kind: &str) -> bool {
        self.by_kind.contains_key(kind)
    }

    /// The kinds whose tasks may run again when their worker is lost.
    pub fn retryable_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .by_kind
            .iter()
            .filter(|(_, handler)| handler.retry_when_lost())
            .map(|(kind, _)| kind.clone())
            .collect();
        kinds.sort();
        kinds
    }
}

/// Where a [`TaskContext`] sends progress; implemented by each backend.
#[async_trait]
pub trait ProgressSink: Send + Sync + 'static {
    /// Records a progress change of task `id`.
    async fn progress(
        &self,
        id: TaskId,
        state: TaskState,
        percent: u8,
        status: Option<String>,
    ) -> Result<()>;

    /// Takes a change of a project's status to store with the task's own changes, in their
    /// order and the same transactions, when this backend keeps its tasks in the registry's
    /// database; the receiver answers once it is stored. `None` when the backend cannot (the
    /// caller writes it itself).
    fn project_status(&self, change: StatusChange) -> Option<oneshot::Receiver<Result<()>>> {
        let _ = change;
        None
    }
}

/// What a running handler knows about its task, and how it talks back.
#[derive(Clone)]
pub struct TaskContext {
    id: TaskId,
    kind: String,
    project_id: Option<i64>,
    attempt: u32,
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
    sink: Arc<dyn ProgressSink>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempt", &self.attempt)
            .field("cancelled", &self.cancel_reason())
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// A context for task `id`; backends build these.
    pub fn new(
        id: TaskId,
        kind: impl Into<String>,
        project_id: Option<i64>,
        attempt: u32,
        sink: Arc<dyn ProgressSink>,
    ) -> Self {
        TaskContext {
            id,
            kind: kind.into(),
            project_id,
            attempt,
            token: CancellationToken::new(),
            reason: Arc::new(OnceLock::new()),
            sink,
        }
    }

    /// The task id.
    pub fn task_id(&self) -> TaskId {
        self.id
    }

    /// The job kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The project the task is about.
    pub fn project_id(&self) -> Option<i64> {
        self.project_id
    }

    /// 1 for the first run.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Reports a step: a progress state (`BUILDING`, `RUNNING`, …), a percentage (values lower
    /// than the current one are kept at the current one) and a line for people.
    pub async fn progress(
        &self,
        state: TaskState,
        percent: u8,
        status: impl Into<String>,
    ) -> Result<()> {
        if !state.is_progress() {
            return Err(HubError::invalid(
                "state",
                format!("{state} is not a progress state"),
            ));
        }
        self.sink
            .progress(self.id, state, percent.min(100), Some(status.into()))
            .await
    }

    /// Hands a change of a project's status to the task backend, to be stored with this task's
    /// changes (no transaction of its own); the receiver answers once it is stored. `None` when
    /// the backend keeps its tasks elsewhere: then the caller records it with
    /// [`crate::Registry::apply_status`].
    pub fn record_project_status(
        &self,
        change: StatusChange,
    ) -> Option<oneshot::Receiver<Result<()>>> {
        self.sink.project_status(change)
    }

    /// The token that fires when the task should stop (revoke, soft time limit, shutdown).
    pub fn cancellation(&self) -> &CancellationToken {
        &self.token
    }

    /// Waits until the task should stop.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Whether the task should stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why the token fired, once it has.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.reason.get().copied()
    }

    /// Fires the token with `reason` (the first reason given is kept).
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
}
