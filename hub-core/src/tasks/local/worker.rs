//! Workers: take queued tasks in order and run each under its limits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::state::{ADMISSIONS_FIRST, Shared, lock};
use super::writer::WriteOp;
use crate::tasks::handler::{ProgressSink, TaskContext};
use crate::tasks::model::{CancelReason, Change, TaskError, TaskId, TaskState};
use crate::tasks::run::{RunControl, RunSignals, supervise};
use crate::tasks::store;

pub(super) async fn worker_loop(shared: Arc<Shared>) {
    loop {
        let next = tokio::select! {
            biased;
            () = shared.stop_taking.cancelled() => break,
            next = async { shared.queue_rx.lock().await.recv().await } => next,
        };
        let Some(id) = next else { break };
        let drained = {
            let mut live = lock(&shared.live);
            live.queued = live.queued.saturating_sub(1);
            live.queued == 0
        };
        if drained {
            shared.hungry.notify_one();
        }
        shared.admissions.go_first(ADMISSIONS_FIRST).await;
        run_task(&shared, id).await;
    }
}

async fn run_task(shared: &Arc<Shared>, id: TaskId) {
    let signals = RunSignals::default();
    let prepared = {
        let mut live = lock(&shared.live);
        // Gone from memory: revoked or taken over while queued.
        let Some(task) = live.tasks.get(&id) else {
            return;
        };
        // Revoked while queued: skip it. Shutting down: it goes back to the queue.
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
            task.run = Some(RunControl::new(ctx.clone(), signals.clone()));
        }
        live.running += 1;
        shared.apply_locked(&mut live, id, Change::Start);
        (handler, ctx, payload, limits)
    };
    let (handler, ctx, payload, limits) = prepared;

    let ending = supervise(
        handler,
        ctx.clone(),
        payload,
        limits,
        shared.config.revoke_grace,
        &signals,
        |abort| {
            if let Some(run) = lock(&shared.live)
                .tasks
                .get_mut(&id)
                .and_then(|t| t.run.as_mut())
            {
                run.abort = Some(abort);
            }
        },
    )
    .await;
    let reason = ctx.cancel_reason();
    {
        let mut live = lock(&shared.live);
        live.running = live.running.saturating_sub(1);
        if let Some(task) = live.tasks.get_mut(&id) {
            task.run = None;
        }
        if reason == Some(CancelReason::LeaseLost) {
            // Not this worker's any more: whatever the run ended with is discarded.
            live.forget(&id);
        } else {
            shared.apply_locked(&mut live, id, ending);
        }
    }
    shared.processed.fetch_add(1, Ordering::Relaxed);
    shared.finished.notify_waiters();
    // A free slot with nothing queued here: time to claim from the store.
    if lock(&shared.live).queued == 0 {
        shared.hungry.notify_one();
    }
}

pub(super) async fn sweep_loop(shared: Arc<Shared>) {
    // Never at the same moment as other processes' sweeps, most of the time.
    tokio::time::sleep(Duration::from_millis(u64::from(std::process::id() % 1000))).await;
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

/// Keeps the local queue fed from the store: when workers run short, claims queued tasks no
/// worker holds (queued by clients, or handed back), at most as many as there are free slots.
/// Also passes on revoke requests for tasks running here.
pub(super) async fn feeder_loop(shared: Arc<Shared>) {
    let every = shared.config.poll_interval;
    let slots = shared.config.concurrency as usize;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ticked = tokio::select! {
            () = shared.stop_taking.cancelled() => break,
            () = shared.hungry.notified() => false,
            _ = tick.tick() => true,
        };
        // Claim while slots are free and the store may have queued tasks for them; every tick
        // looks anyway (tasks handed back by a lost worker announce nothing).
        if ticked {
            shared.claimable.store(true, Ordering::Release);
        }
        while shared.claimable.load(Ordering::Acquire) {
            let free = {
                let live = lock(&shared.live);
                slots.saturating_sub(live.running + live.queued)
            };
            if free == 0 {
                break;
            }
            let claimed = async {
                if !store::has_claimable(&shared.db, &shared.config.queues).await? {
                    return Ok(0);
                }
                shared
                    .request(|ack| WriteOp::Claim { max: free, ack })
                    .await
            };
            match claimed.await {
                Ok(claimed) if claimed == free => continue,
                Ok(_) => shared.claimable.store(false, Ordering::Release),
                Err(err) => {
                    tracing::warn!(error = %err, "claiming queued tasks failed");
                    break;
                }
            }
        }
        // Revokes asked by other processes, for tasks held here.
        if ticked && !lock(&shared.live).tasks.is_empty() {
            match store::revoke_requests(&shared.db, shared.id()).await {
                Ok(requests) => {
                    for (id, terminate) in requests {
                        shared.revoke_here(id, terminate);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "reading revoke requests failed"),
            }
        }
    }
}

/// Renews this worker's leases every `heartbeat`, and takes back the tasks of workers whose
/// lease expired.
pub(super) async fn heartbeat_loop(shared: Arc<Shared>) {
    let every = shared.config.heartbeat;
    loop {
        tokio::select! {
            () = shared.stop_taking.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        let processed = shared.processed.swap(0, Ordering::Relaxed);
        let beat = shared
            .request(|ack| WriteOp::Heartbeat { processed, ack })
            .await;
        if let Err(err) = beat {
            shared.processed.fetch_add(processed, Ordering::Relaxed);
            tracing::error!(error = %err, "heartbeat failed: this worker's leases run out unless the store comes back");
        }
        recover(&shared).await;
    }
}

/// Takes back the tasks of lost workers (see [`crate::tasks::store::reclaim_expired`]) and
/// tells their handlers.
pub(super) async fn recover(shared: &Arc<Shared>) {
    let reclaimed = match shared.request(WriteOp::Reclaim).await {
        Ok(reclaimed) => reclaimed,
        Err(err) => {
            tracing::warn!(error = %err, "recovering tasks of lost workers failed");
            return;
        }
    };
    if reclaimed.released > 0 {
        tracing::info!(
            released = reclaimed.released,
            "queued tasks of a lost worker handed back"
        );
    }
    for task in &reclaimed.retried {
        tracing::warn!(task = %task.id, kind = %task.kind, attempt = task.attempt, "task of a lost worker queued again");
    }
    if !reclaimed.retried.is_empty() {
        shared.hungry.notify_one();
    }
    for task in reclaimed.failed {
        tracing::warn!(task = %task.id, kind = %task.kind, "task of a lost worker ended as interrupted");
        if let Some(handler) = shared.handlers.get(&task.kind) {
            // Hooks may take a while (they talk to the engine): off the heartbeat's path.
            tokio::spawn(async move { handler.lost(&task).await });
        }
    }
}
