//! Running one handler under its limits: the part of a worker every backend shares, so that a
//! time limit, a revoke or a shutdown ends a task the same way whichever backend runs it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::handler::{JobHandler, JobResult, TaskContext};
use super::model::{CancelReason, Change, TaskError, TaskState, TimeLimits, codes};

/// How the backend tells a running handler to stop.
#[derive(Debug, Default, Clone)]
pub(crate) struct RunSignals {
    /// Notified by `revoke(terminate = true)`: the handler is cancelled, then aborted after the
    /// revoke grace period.
    pub(crate) revoke: Arc<Notify>,
    /// Notified to stop the handler now (end of a shutdown's grace, or the task was lost).
    pub(crate) interrupt: Arc<Notify>,
}

/// Handles on a running task, held by its backend beside the task.
#[derive(Debug)]
pub(crate) struct RunControl {
    pub(crate) ctx: TaskContext,
    pub(crate) signals: RunSignals,
    /// Aborts the handler when the backend is dropped.
    pub(crate) abort: Option<AbortHandle>,
}

impl RunControl {
    /// Handles on the run of `ctx`, told to stop through `signals`.
    pub(crate) fn new(ctx: TaskContext, signals: RunSignals) -> Self {
        RunControl {
            ctx,
            signals,
            abort: None,
        }
    }

    /// Tells the run to stop for `reason`: a revoke gives the handler the revoke grace period
    /// to wind down; any other reason (a shutdown's end, a lost task) stops it now.
    pub(crate) fn stop(&self, reason: CancelReason) {
        self.ctx.cancel(reason);
        if reason == CancelReason::Revoked {
            self.signals.revoke.notify_one();
        } else {
            self.signals.interrupt.notify_one();
        }
    }
}

/// How a handler's run ended.
enum Outcome {
    Returned(JobResult),
    Panicked(String),
    HardLimit,
    RevokeGraceExpired,
    Interrupted,
}

/// Runs `handler` on a task of its own under `limits`, reacting to `signals`, and returns the
/// change that ends the task. `on_spawn` receives the handler's abort handle (for a backend
/// dropped mid-run). The caller decides what to do with a run whose task was lost meanwhile
/// (`ctx.cancel_reason() == Some(LeaseLost)`).
pub(crate) async fn supervise(
    handler: Arc<dyn JobHandler>,
    ctx: TaskContext,
    payload: serde_json::Value,
    limits: TimeLimits,
    revoke_grace: Duration,
    signals: &RunSignals,
    on_spawn: impl FnOnce(AbortHandle),
) -> Change {
    let id = ctx.task_id();
    let mut handle = {
        let ctx = ctx.clone();
        tokio::spawn(async move { handler.run(ctx, payload).await })
    };
    on_spawn(handle.abort_handle());

    let soft = tokio::time::sleep(limits.soft);
    let hard = tokio::time::sleep(limits.hard);
    tokio::pin!(soft, hard);
    let mut soft_fired = false;
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let outcome = loop {
        tokio::select! {
            joined = &mut handle => break match joined {
                Ok(result) => Outcome::Returned(result),
                Err(err) if err.is_panic() => Outcome::Panicked(panic_message(err.into_panic())),
                Err(_) => Outcome::Interrupted,
            },
            () = &mut soft, if !soft_fired => {
                soft_fired = true;
                tracing::warn!(task = %id, "soft time limit reached");
                ctx.cancel(CancelReason::SoftTimeLimit);
            }
            () = &mut hard => {
                handle.abort();
                break Outcome::HardLimit;
            }
            () = signals.revoke.notified(), if grace.is_none() => {
                ctx.cancel(CancelReason::Revoked);
                grace = Some(Box::pin(tokio::time::sleep(revoke_grace)));
            }
            () = async { if let Some(g) = grace.as_mut() { g.await } }, if grace.is_some() => {
                handle.abort();
                break Outcome::RevokeGraceExpired;
            }
            () = signals.interrupt.notified() => {
                handle.abort();
                break Outcome::Interrupted;
            }
        }
    };
    ending(outcome, ctx.cancel_reason(), limits)
}

fn ending(outcome: Outcome, reason: Option<CancelReason>, limits: TimeLimits) -> Change {
    let revoked = || {
        (
            TaskState::Revoked,
            None,
            Some(TaskError::new(codes::REVOKED, "revoked while running")),
        )
    };
    let (state, result, error) = match outcome {
        Outcome::Returned(_) | Outcome::RevokeGraceExpired
            if reason == Some(CancelReason::Revoked) =>
        {
            revoked()
        }
        Outcome::Returned(Ok(value)) => (TaskState::Success, Some(value), None),
        Outcome::Returned(Err(err)) if reason == Some(CancelReason::Shutdown) => (
            TaskState::Failure,
            None,
            Some(TaskError::new(
                codes::INTERRUPTED,
                format!(
                    "the hub shut down while this task was running: {}",
                    err.message
                ),
            )),
        ),
        Outcome::Returned(Err(err)) => (TaskState::Failure, None, Some(err)),
        Outcome::Panicked(message) => (
            TaskState::Failure,
            None,
            Some(TaskError::new(
                codes::PANIC,
                format!("the handler panicked: {message}"),
            )),
        ),
        Outcome::HardLimit => (
            TaskState::Failure,
            None,
            Some(TaskError::new(
                codes::TIME_LIMIT,
                format!(
                    "hard time limit of {:?} exceeded; the task was aborted",
                    limits.hard
                ),
            )),
        ),
        Outcome::RevokeGraceExpired => revoked(),
        Outcome::Interrupted => (
            TaskState::Failure,
            None,
            Some(TaskError::new(
                codes::INTERRUPTED,
                "the hub shut down while this task was running",
            )),
        ),
    };
    Change::Finish {
        state,
        result,
        error,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
