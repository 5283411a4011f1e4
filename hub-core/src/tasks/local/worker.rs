//! Workers: take queued tasks in order and run each under its limits.

use std::sync::Arc;

use tokio::sync::Notify;

use super::state::{Change, RunControl, Shared, lock};
use crate::tasks::handler::{JobResult, ProgressSink, TaskContext};
use crate::tasks::model::{CancelReason, TaskError, TaskId, TaskState, codes};

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub(super) async fn worker_loop(shared: Arc<Shared>, index: usize) {
    let name = lock(&shared.live)
        .workers
        .get(index)
        .map(|w| w.name.clone())
        .unwrap_or_default();
    loop {
        let next = tokio::select! {
            biased;
            () = shared.stop_taking.cancelled() => break,
            next = async { shared.queue_rx.lock().await.recv().await } => next,
        };
        let Some(id) = next else { break };
        run_task(&shared, index, &name, id).await;
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

async fn run_task(shared: &Arc<Shared>, index: usize, worker: &str, id: TaskId) {
    let revoke = Arc::new(Notify::new());
    let interrupt = Arc::new(Notify::new());
    let prepared = {
        let mut live = lock(&shared.live);
        let Some(task) = live.tasks.get(&id) else {
            return;
        };
        // Revoked while queued: skip it. Shutting down: leave it queued for the next run.
        if task.stored.record.state != TaskState::Pending || shared.stop_taking.is_cancelled() {
            return;
        }
        let record = &task.stored.record;
        let Some(handler) = shared.handlers.get(&record.kind) else {
            let change = Change::Finish {
                state: TaskState::Failure,
                result: None,
                error: Some(TaskError::new(
                    "invalid_input",
                    format!("no handler is registered for job kind '{}'", record.kind),
                )),
            };
            shared.apply_locked(&mut live, id, change);
            return;
        };
        let sink: Arc<dyn ProgressSink> = shared.clone();
        let ctx = TaskContext::new(id, &record.kind, record.project_id, record.attempt, sink);
        let payload = record.payload.clone();
        let limits = record.limits;
        if let Some(task) = live.tasks.get_mut(&id) {
            task.run = Some(RunControl {
                ctx: ctx.clone(),
                revoke: revoke.clone(),
                interrupt: interrupt.clone(),
                abort: None,
            });
        }
        shared.apply_locked(
            &mut live,
            id,
            Change::Start {
                worker: worker.to_owned(),
            },
        );
        (handler, ctx, payload, limits)
    };
    let (handler, ctx, payload, limits) = prepared;
    shared.set_worker(index, Some(id), false);

    let mut handle = {
        let ctx = ctx.clone();
        tokio::spawn(async move { handler.run(ctx, payload).await })
    };
    if let Some(run) = lock(&shared.live)
        .tasks
        .get_mut(&id)
        .and_then(|t| t.run.as_mut())
    {
        run.abort = Some(handle.abort_handle());
    }

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
            () = revoke.notified(), if grace.is_none() => {
                ctx.cancel(CancelReason::Revoked);
                grace = Some(Box::pin(tokio::time::sleep(shared.config.revoke_grace)));
            }
            () = async { if let Some(g) = grace.as_mut() { g.await } }, if grace.is_some() => {
                handle.abort();
                break Outcome::RevokeGraceExpired;
            }
            () = interrupt.notified() => {
                handle.abort();
                break Outcome::Interrupted;
            }
        }
    };

    let reason = ctx.cancel_reason();
    let (state, result, error) = match outcome {
        Outcome::Returned(_) | Outcome::RevokeGraceExpired
            if reason == Some(CancelReason::Revoked) =>
        {
            (
                TaskState::Revoked,
                None,
                Some(TaskError::new("revoked", "revoked while running")),
            )
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
        Outcome::RevokeGraceExpired => (
            TaskState::Revoked,
            None,
            Some(TaskError::new("revoked", "revoked while running")),
        ),
        Outcome::Interrupted => (
            TaskState::Failure,
            None,
            Some(TaskError::new(
                codes::INTERRUPTED,
                "the hub shut down while this task was running",
            )),
        ),
    };
    {
        let mut live = lock(&shared.live);
        if let Some(task) = live.tasks.get_mut(&id) {
            task.run = None;
        }
        shared.apply_locked(
            &mut live,
            id,
            Change::Finish {
                state,
                result,
                error,
            },
        );
    }
    shared.set_worker(index, None, true);
    shared.finished.notify_waiters();
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

pub(super) async fn sweep_loop(shared: Arc<Shared>) {
    let every = shared.config.sweep_interval;
    loop {
        tokio::select! {
            () = shared.stop_taking.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(err) = shared.purge_expired().await {
            tracing::warn!(error = %err, "expired task sweep failed");
        }
    }
}
