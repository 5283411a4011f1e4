//! The worker side: take deliveries from the queues, run them, heartbeat, and take back the
//! tasks of workers that stopped heartbeating.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};

use super::keys::GROUP;
use super::{BLOCK, Fence, Held, REVOKE_POLL, Shared, Written, decode, from_millis};
use crate::error::{HubError, Result};
use crate::sync::lock;
use crate::tasks::handler::{ProgressSink, TaskContext};
use crate::tasks::model::{
    CancelReason, Change, LostVerdict, TaskError, TaskId, TaskRecord, TaskState, WorkerInfo, codes,
};
use crate::tasks::run::{RunControl, RunSignals, supervise};

/// How often a worker of every queue looks for new queues.
const QUEUE_REFRESH: Duration = Duration::from_secs(1);
/// Entries taken back from one lost consumer per round.
const RECLAIM_BATCH: usize = 100;
/// How long a worker keeps its registration after its last heartbeat, for monitoring.
const REGISTRATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Growing pauses between retries while Redis does not answer.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(100))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }

    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

/// Tasks whose handler runs here now.
pub(super) fn running(shared: &Shared) -> usize {
    lock(&shared.held)
        .values()
        .filter(|task| task.run.is_some())
        .count()
}

/// Tells every running task to stop now; returns how many there were.
pub(super) fn interrupt_running(shared: &Shared) -> usize {
    let held = lock(&shared.held);
    let mut count = 0;
    for task in held.values() {
        if let Some(run) = &task.run {
            run.stop(CancelReason::Shutdown);
            count += 1;
        }
    }
    count
}

/// Reads deliveries while slots are free: at most as many as there are free slots, so a busy
/// worker leaves the queue to others (Celery's prefetch of 1).
pub(super) async fn fetch_loop(shared: Arc<Shared>) {
    let mut conn = None;
    let mut backoff = Backoff::new();
    let mut grouped: HashSet<String> = HashSet::new();
    let mut queues: Vec<String> = Vec::new();
    let mut listed: Option<Instant> = None;
    let slots = shared.config.concurrency as usize;
    loop {
        if shared.stop_taking.is_cancelled() {
            break;
        }
        // A task whose handler returned frees its slot while its end is being stored.
        let occupied = lock(&shared.held)
            .values()
            .filter(|task| !task.finishing)
            .count();
        let free = slots.saturating_sub(occupied);
        if free == 0 {
            let finished = shared.finished.notified();
            tokio::select! {
                () = shared.stop_taking.cancelled() => break,
                () = finished => {}
                () = tokio::time::sleep(BLOCK) => {}
            }
            continue;
        }
        // New queues are looked for once a second, not before every read.
        if listed.is_none_or(|at: Instant| at.elapsed() >= QUEUE_REFRESH) {
            match shared.queues().await {
                Ok(fresh) => {
                    queues = fresh;
                    listed = Some(Instant::now());
                }
                Err(err) => {
                    tracing::warn!(error = %err, "listing queues failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            }
        }
        for queue in &queues {
            if !grouped.contains(queue) {
                match ensure_group(&shared, queue).await {
                    Ok(()) => {
                        grouped.insert(queue.clone());
                    }
                    Err(err) => {
                        tracing::warn!(%queue, error = %err, "creating the queue's consumer group failed")
                    }
                }
            }
        }
        if conn.is_none() {
            match shared.dedicated_connection().await {
                Ok(fresh) => conn = Some(fresh),
                Err(err) => {
                    tracing::warn!(error = %err, "queues unreachable; retrying");
                    backoff.wait().await;
                    continue;
                }
            }
        }
        let Some(connection) = conn.as_mut() else {
            continue;
        };
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(shared.id())
            .arg("COUNT")
            .arg(free)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for queue in &queues {
            read.arg(shared.keys.queue(queue));
        }
        for _ in &queues {
            read.arg(">");
        }
        // Stopping mid-read may leave entries delivered to this consumer: signing off hands
        // them back.
        let reply: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
            () = shared.stop_taking.cancelled() => break,
            reply = read.query_async(connection) => reply,
        };
        match reply {
            Ok(reply) => {
                backoff.reset();
                for stream in reply.into_iter().flat_map(|reply| reply.keys) {
                    for entry in stream.ids {
                        reserve(&shared, &entry);
                    }
                }
            }
            Err(err) if err.code() == Some("NOGROUP") => grouped.clear(),
            Err(err) => {
                tracing::warn!(error = %shared.error(err), "reading the queues failed; retrying");
                conn = None;
                backoff.wait().await;
            }
        }
    }
}

/// Creates the queue's consumer group (and stream) unless it exists; a new group reads the
/// queue from its start.
async fn ensure_group(shared: &Shared, queue: &str) -> Result<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(shared.keys.queue(queue))
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut shared.conn.clone())
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        Err(err) => Err(shared.error(err)),
    }
}

/// Takes a delivery into memory and the local work queue.
fn reserve(shared: &Shared, entry: &StreamId) {
    let record = entry
        .get::<String>("record")
        .map(|json| decode(&json))
        .transpose();
    let record = match record {
        Ok(Some(record)) => record,
        Ok(None) | Err(_) => {
            tracing::warn!(entry = %entry.id, "unreadable queue entry left for recovery");
            return;
        }
    };
    let id = record.id;
    let key = entry.get::<String>("key").filter(|key| !key.is_empty());
    lock(&shared.held).insert(
        id,
        Held {
            record,
            msg: entry.id.clone(),
            key,
            version: 0,
            run: None,
            starting: false,
            lost_while_starting: None,
            finishing: false,
        },
    );
    // The workers hold the receiver for as long as the backend runs tasks.
    let _ = shared.work_tx.send(id);
}

pub(super) async fn worker_loop(shared: Arc<Shared>) {
    loop {
        let next = tokio::select! {
            biased;
            () = shared.stop_taking.cancelled() => break,
            next = async { shared.work_rx.lock().await.recv().await } => next,
        };
        let Some(id) = next else { break };
        run_task(&shared, id).await;
    }
}

/// Starts the task if it is still queued for this attempt, runs it, and stores its end.
async fn run_task(shared: &Arc<Shared>, id: TaskId) {
    let Some((mut record, msg, key)) = lock(&shared.held)
        .get(&id)
        .map(|task| (task.record.clone(), task.msg.clone(), task.key.clone()))
    else {
        // Revoked or taken away while reserved.
        return;
    };
    let queued = record.clone();
    let Some(handler) = shared.handlers.get(&record.kind) else {
        let change = Change::Finish {
            state: TaskState::Failure,
            result: None,
            error: Some(TaskError::new(
                "invalid_input",
                format!("no handler is registered for job kind '{}'", record.kind),
            )),
        };
        record.apply(change, shared.id());
        let fence = Fence {
            owner: "",
            attempt: queued.attempt,
            pending: true,
        };
        store_end(shared, &record, key.as_deref(), 1, fence).await;
        release(shared, id, true);
        return;
    };
    record.apply(Change::Start, shared.id());
    match lock(&shared.held).get_mut(&id) {
        Some(task) => task.starting = true,
        None => return,
    }
    let fence = || Fence {
        owner: "",
        attempt: queued.attempt,
        pending: true,
    };
    let mut backoff = Backoff::new();
    let started = loop {
        if shared.stop_taking.is_cancelled() {
            // Still reserved: signing off hands it back.
            return;
        }
        match shared
            .transition(&record, None, 1, shared.id(), fence())
            .await
        {
            Ok(written) => break written,
            Err(err) => {
                tracing::warn!(task = %id, error = %err, "starting a task failed; retrying");
                backoff.wait().await;
            }
        }
    };
    if started == Written::Refused {
        // A duplicate delivery, or revoked meanwhile: nothing to run.
        if let Err(err) = shared.drop_delivery(&record.queue, &msg).await {
            tracing::debug!(task = %id, error = %err, "stale delivery left for recovery");
        }
        release(shared, id, false);
        return;
    }
    let sink: Arc<dyn ProgressSink> = shared.clone();
    let ctx = TaskContext::new(id, &record.kind, record.project_id, record.attempt, sink);
    let signals = RunSignals::default();
    {
        let mut held = lock(&shared.held);
        let Some(task) = held.get_mut(&id) else {
            return;
        };
        task.record = record.clone();
        task.version = 1;
        task.starting = false;
        let run = task
            .run
            .insert(RunControl::new(ctx.clone(), signals.clone()));
        // Revoked (or lost) while its start was being stored: the run hears it at once.
        if let Some(reason) = task.lost_while_starting.take() {
            run.stop(reason);
        }
    }
    let ending = supervise(
        handler,
        ctx.clone(),
        record.payload.clone(),
        record.limits,
        shared.config.revoke_grace,
        &signals,
        |abort| {
            if let Some(run) = lock(&shared.held)
                .get_mut(&id)
                .and_then(|task| task.run.as_mut())
            {
                run.abort = Some(abort);
            }
        },
    )
    .await;
    if ctx.cancel_reason() == Some(CancelReason::LeaseLost) {
        // Not this worker's any more: whatever the run ended with is discarded.
        release(shared, id, false);
        return;
    }
    let end = {
        let mut held = lock(&shared.held);
        held.get_mut(&id).and_then(|task| {
            task.run = None;
            task.finishing = true;
            task.record.apply(ending, shared.id()).then(|| {
                task.version += 1;
                (task.record.clone(), task.version)
            })
        })
    };
    shared.finished.notify_waiters();
    if let Some((record, version)) = end {
        let fence = Fence {
            owner: shared.id(),
            attempt: record.attempt,
            pending: false,
        };
        store_end(shared, &record, key.as_deref(), version, fence).await;
    }
    release(shared, id, true);
}

/// Stores a task's end, retrying while Redis does not answer: nothing is acknowledged that
/// was not done. Gives up once the write is refused (the task is no longer this worker's) or
/// the backend is dropped.
async fn store_end(
    shared: &Shared,
    record: &TaskRecord,
    key: Option<&str>,
    version: u64,
    fence: Fence<'_>,
) {
    let mut backoff = Backoff::new();
    loop {
        // The finisher stays the owner of record: a retry whose first answer was lost is
        // then recognised as already stored.
        match shared
            .transition(record, key, version, shared.id(), fence)
            .await
        {
            Ok(Written::Refused) => {
                tracing::warn!(task = %record.id, "task taken over meanwhile; its end here is discarded");
                return;
            }
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(task = %record.id, error = %err, "storing a task's end failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// The task no longer occupies a slot here.
fn release(shared: &Shared, id: TaskId, ran: bool) {
    lock(&shared.held).remove(&id);
    if ran {
        shared.processed.fetch_add(1, Ordering::Relaxed);
    }
    shared.finished.notify_waiters();
}

/// Registers this worker, or renews its registration and its lease.
pub(super) async fn heartbeat(shared: &Shared) -> Result<()> {
    let me = &shared.me;
    let keys = &shared.keys;
    let now = chrono::Utc::now().timestamp_millis();
    let active = running(shared);
    let lease_ms = shared.config.lease.as_millis() as u64;
    let queues = shared.config.queues.join(",");
    redis::pipe()
        .cmd("SET")
        .arg(keys.alive(&me.id))
        .arg(now)
        .arg("PX")
        .arg(lease_ms)
        .ignore()
        .cmd("HSET")
        .arg(keys.worker(&me.id))
        .arg("name")
        .arg(&me.name)
        .arg("host")
        .arg(&me.host)
        .arg("pid")
        .arg(me.pid)
        .arg("mode")
        .arg(&me.mode)
        .arg("concurrency")
        .arg(me.concurrency)
        .arg("queues")
        .arg(&queues)
        .arg("started_at")
        .arg(me.started_at)
        .arg("heartbeat_at")
        .arg(now)
        .arg("active")
        .arg(active)
        .arg("processed")
        .arg(shared.processed.load(Ordering::Relaxed))
        .ignore()
        .cmd("HDEL")
        .arg(keys.worker(&me.id))
        .arg("stopped_at")
        .ignore()
        .cmd("PEXPIRE")
        .arg(keys.worker(&me.id))
        .arg(REGISTRATION_TTL.as_millis() as u64)
        .ignore()
        .cmd("SADD")
        .arg(keys.workers())
        .arg(&me.id)
        .ignore()
        .query_async::<()>(&mut shared.conn.clone())
        .await
        .map_err(|err| shared.error(err))
}

/// Renews this worker's lease every `heartbeat`, and takes back the tasks of workers whose
/// lease expired.
pub(super) async fn heartbeat_loop(shared: Arc<Shared>) {
    let every = shared.config.heartbeat;
    loop {
        tokio::time::sleep(every).await;
        if let Err(err) = heartbeat(&shared).await {
            tracing::error!(error = %err, "heartbeat failed: this worker's tasks are taken over unless Redis comes back within the lease");
            continue;
        }
        if let Err(err) = check_ownership(&shared).await {
            tracing::warn!(error = %err, "checking this worker's tasks failed");
        }
        recover(&shared).await;
    }
}

/// Stops the runs of tasks this worker no longer holds: taken over while it was paused or cut
/// off (a later attempt, another owner), or ended meanwhile. (Their writes would be refused
/// anyway; this stops the work itself.)
async fn check_ownership(shared: &Shared) -> Result<()> {
    let running: Vec<(TaskId, u32)> = lock(&shared.held)
        .iter()
        .filter(|(_, task)| task.run.is_some())
        .map(|(id, task)| (*id, task.record.attempt))
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (id, _) in &running {
        pipe.cmd("HMGET")
            .arg(shared.keys.task(*id))
            .arg(&["state", "owner", "attempt"]);
    }
    let found: Vec<(Option<String>, Option<String>, Option<u32>)> = pipe
        .query_async(&mut shared.conn.clone())
        .await
        .map_err(|err| shared.error(err))?;
    for ((id, attempt), (state, owner, stored_attempt)) in running.into_iter().zip(found) {
        let state = state.and_then(|s| s.parse::<TaskState>().ok());
        let mine = owner.as_deref() == Some(shared.id())
            && stored_attempt == Some(attempt)
            && state.is_some_and(|s| !s.is_terminal());
        if !mine {
            let reason = if state == Some(TaskState::Revoked) {
                CancelReason::Revoked
            } else {
                CancelReason::LeaseLost
            };
            shared.lose(id, reason);
        }
    }
    Ok(())
}

/// Passes revoke requests on to the tasks running here.
pub(super) async fn revoke_loop(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(REVOKE_POLL).await;
        let ids: Vec<String> = lock(&shared.held)
            .iter()
            .filter(|(_, task)| task.run.is_some())
            .map(|(id, _)| id.to_string())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let asked: redis::RedisResult<Vec<Option<String>>> = redis::cmd("HMGET")
            .arg(shared.keys.revokes())
            .arg(&ids)
            .query_async(&mut shared.conn.clone())
            .await;
        match asked {
            Ok(asked) => {
                for (id, asked) in ids.iter().zip(asked) {
                    if asked.is_some()
                        && let Ok(id) = id.parse::<TaskId>()
                    {
                        shared.lose(id, CancelReason::Revoked);
                    }
                }
            }
            Err(err) => {
                tracing::debug!(error = %shared.error(err), "reading revoke requests failed")
            }
        }
    }
}

/// Drops index entries of records that expired.
pub(super) async fn sweep_loop(shared: Arc<Shared>) {
    // Never at the same moment as other processes' sweeps, most of the time.
    tokio::time::sleep(Duration::from_millis(u64::from(std::process::id() % 1000))).await;
    loop {
        tokio::time::sleep(shared.config.sweep_interval).await;
        if let Err(err) = sweep(&shared).await {
            tracing::warn!(error = %err, "expired task sweep failed");
        }
    }
}

async fn sweep(shared: &Shared) -> Result<()> {
    // Revoke requests of tasks that ended before their worker saw the request.
    let asked: Vec<String> = shared
        .conn
        .clone()
        .hkeys(shared.keys.revokes())
        .await
        .map_err(|err| shared.error(err))?;
    let mut answered = Vec::new();
    for id in asked {
        let Ok(task) = id.parse::<TaskId>() else {
            answered.push(id);
            continue;
        };
        if shared
            .stored(task)
            .await?
            .is_none_or(|stored| stored.state.is_terminal())
        {
            answered.push(id);
        }
    }
    if !answered.is_empty() {
        let _: () = shared
            .conn
            .clone()
            .hdel(shared.keys.revokes(), answered)
            .await
            .map_err(|err| shared.error(err))?;
    }

    let horizon = chrono::Utc::now().timestamp_micros()
        - shared
            .config
            .result_expires
            .as_micros()
            .min(i64::MAX as u128) as i64;
    let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(shared.keys.index())
        .arg("-inf")
        .arg(horizon)
        .arg("LIMIT")
        .arg(0)
        .arg(1000)
        .query_async(&mut shared.conn.clone())
        .await
        .map_err(|err| shared.error(err))?;
    if ids.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("EXISTS")
            .arg(format!("{}{id}", shared.keys.task_prefix()));
    }
    let exists: Vec<bool> = pipe
        .query_async(&mut shared.conn.clone())
        .await
        .map_err(|err| shared.error(err))?;
    let gone: Vec<&String> = ids
        .iter()
        .zip(exists)
        .filter(|(_, exists)| !exists)
        .map(|(id, _)| id)
        .collect();
    if !gone.is_empty() {
        let _: () = shared
            .conn
            .clone()
            .zrem(shared.keys.index(), gone)
            .await
            .map_err(|err| shared.error(err))?;
    }
    Ok(())
}

/// Takes back what lost workers held: from every consumer whose worker's lease expired, and
/// from this worker's own pending list the entries it no longer knows of (a Redis restarted
/// from an older snapshot can hand them back).
pub(super) async fn recover(shared: &Arc<Shared>) {
    let queues = match shared.all_queues().await {
        Ok(queues) => queues,
        Err(err) => {
            tracing::warn!(error = %err, "recovering tasks of lost workers failed");
            return;
        }
    };
    for queue in queues {
        if let Err(err) = recover_queue(shared, &queue).await {
            tracing::warn!(%queue, error = %err, "recovering tasks of lost workers failed");
        }
    }
}

async fn recover_queue(shared: &Arc<Shared>, queue: &str) -> Result<()> {
    let key = shared.keys.queue(queue);
    let consumers: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
        redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&key)
            .arg(GROUP)
            .query_async(&mut shared.conn.clone())
            .await;
    let consumers = match consumers {
        Ok(reply) => reply.consumers,
        Err(err) if err.code() == Some("NOGROUP") || err.code() == Some("ERR") => return Ok(()),
        Err(err) => return Err(shared.error(err)),
    };
    for consumer in consumers {
        if consumer.name == shared.id() {
            // Own entries idle past two heartbeats that nothing here holds.
            let idle = (shared.config.heartbeat * 2).as_millis() as u64;
            let pending = pending_of(shared, &key, &consumer.name, Some(idle)).await?;
            let held: HashSet<String> = lock(&shared.held)
                .values()
                .map(|task| task.msg.clone())
                .collect();
            let orphans: Vec<(String, usize)> = pending
                .into_iter()
                .filter(|(msg, _)| !held.contains(msg))
                .collect();
            if !orphans.is_empty() {
                let lost = shared.id().to_owned();
                settle_all(shared, queue, &lost, orphans).await?;
            }
            continue;
        }
        let alive: bool = shared
            .conn
            .clone()
            .exists(shared.keys.alive(&consumer.name))
            .await
            .map_err(|err| shared.error(err))?;
        if alive {
            continue;
        }
        if consumer.pending > 0 {
            let pending = pending_of(shared, &key, &consumer.name, None).await?;
            settle_all(shared, queue, &consumer.name, pending).await?;
        }
        // Nothing left with it: forget the consumer (it comes back if the worker does).
        let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(&key)
            .arg(GROUP)
            .arg(&consumer.name)
            .query_async(&mut shared.conn.clone())
            .await;
    }
    Ok(())
}

/// A consumer's pending entries (id, times delivered), idle at least `idle` ms when given.
async fn pending_of(
    shared: &Shared,
    key: &str,
    consumer: &str,
    idle: Option<u64>,
) -> Result<Vec<(String, usize)>> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(key).arg(GROUP);
    if let Some(idle) = idle {
        cmd.arg("IDLE").arg(idle);
    }
    cmd.arg("-").arg("+").arg(RECLAIM_BATCH).arg(consumer);
    let reply: StreamPendingCountReply = cmd
        .query_async(&mut shared.conn.clone())
        .await
        .map_err(|err| shared.error(err))?;
    Ok(reply
        .ids
        .into_iter()
        .map(|entry| (entry.id, entry.times_delivered))
        .collect())
}

/// Claims `entries` for this worker and settles each: its task runs again, is handed back,
/// ends, or the entry is dropped as stale.
async fn settle_all(
    shared: &Arc<Shared>,
    queue: &str,
    lost_worker: &str,
    entries: Vec<(String, usize)>,
) -> Result<()> {
    let key = shared.keys.queue(queue);
    let ids: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
    let claimed: StreamClaimReply = redis::cmd("XCLAIM")
        .arg(&key)
        .arg(GROUP)
        .arg(shared.id())
        .arg(0)
        .arg(&ids)
        .query_async(&mut shared.conn.clone())
        .await
        .map_err(|err| shared.error(err))?;
    for entry in claimed.ids {
        let deliveries = entries
            .iter()
            .find(|(id, _)| *id == entry.id)
            .map_or(1, |(_, n)| *n + 1);
        if let Err(err) = settle(shared, queue, lost_worker, &entry, deliveries).await {
            tracing::warn!(entry = %entry.id, error = %err, "settling a lost worker's task failed");
        }
    }
    Ok(())
}

async fn settle(
    shared: &Arc<Shared>,
    queue: &str,
    lost_worker: &str,
    entry: &StreamId,
    deliveries: usize,
) -> Result<()> {
    let id = entry
        .get::<String>("id")
        .and_then(|id| id.parse::<TaskId>().ok());
    let stored = match id {
        Some(id) => shared.stored(id).await?,
        None => None,
    };
    let Some(stored) = stored
        .filter(|task| !task.state.is_terminal() && task.msg.as_deref() == Some(entry.id.as_str()))
    else {
        // Ended, expired, or delivered again by a newer entry: nothing to do.
        return shared.drop_delivery(queue, &entry.id).await;
    };
    let max_attempts = shared.config.max_attempts as usize;
    if stored.state == TaskState::Pending {
        if deliveries <= max_attempts {
            // Reserved, never started: back in the queue for any worker.
            shared
                .requeue(&stored.record, stored.fence(), false)
                .await?;
            tracing::info!(task = %stored.record.id, worker = lost_worker, "queued task of a lost worker handed back");
            return Ok(());
        }
        let mut record = stored.record.clone();
        record.apply(
            Change::Finish {
                state: TaskState::Failure,
                result: None,
                error: Some(TaskError::new(
                    codes::WORKER_LOST,
                    format!(
                        "delivered {deliveries} times, and each worker was lost before it started"
                    ),
                )),
            },
            shared.id(),
        );
        shared.end_as_read(&stored, &record).await?;
        return Ok(());
    }
    if stored.owner != lost_worker {
        // Started from another delivery by a worker that is alive.
        return shared.drop_delivery(queue, &entry.id).await;
    }
    let handler = shared.handlers.get(&stored.record.kind);
    let retryable = handler.as_ref().is_some_and(|h| h.retry_when_lost());

    match stored
        .record
        .after_worker_lost(retryable, shared.config.max_attempts, lost_worker)
    {
        LostVerdict::Retry(next) => {
            if shared.requeue(&next, stored.fence(), true).await? == Written::Stored {
                tracing::warn!(task = %next.id, kind = %next.kind, attempt = next.attempt, "task of a lost worker queued again");
            }
        }
        LostVerdict::Fail(failed) => {
            if shared.end_as_read(&stored, &failed).await? == Written::Stored {
                tracing::warn!(task = %failed.id, kind = %failed.kind, "task of a lost worker ended as interrupted");
                if let Some(handler) = handler {
                    // Hooks may take a while (they talk to the engine): off the heartbeat's path.
                    tokio::spawn(async move { handler.lost(&failed).await });
                }
            }
        }
    }
    Ok(())
}

/// Signs this worker off: what it reserved but never started goes back to the queue (so does
/// anything still delivered to it), and its lease ends now rather than when it runs out.
pub(super) async fn sign_off(shared: &Arc<Shared>) {
    let me = shared.id().to_owned();
    let handed_back = async {
        for queue in shared.queues().await? {
            let key = shared.keys.queue(&queue);
            loop {
                let pending = pending_of(shared, &key, &me, None).await?;
                let count = pending.len();
                if count == 0 {
                    break;
                }
                settle_all(shared, &queue, &me, pending).await?;
                if count < RECLAIM_BATCH {
                    break;
                }
            }
            let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&key)
                .arg(GROUP)
                .arg(&me)
                .query_async(&mut shared.conn.clone())
                .await;
        }
        redis::pipe()
            .cmd("DEL")
            .arg(shared.keys.alive(&me))
            .ignore()
            .cmd("HSET")
            .arg(shared.keys.worker(&me))
            .arg("stopped_at")
            .arg(chrono::Utc::now().timestamp_millis())
            .arg("processed")
            .arg(shared.processed.load(Ordering::Relaxed))
            .arg("active")
            .arg(0)
            .ignore()
            .query_async::<()>(&mut shared.conn.clone())
            .await
            .map_err(|err| shared.error(err))?;
        Ok::<(), HubError>(())
    };
    if let Err(err) = handed_back.await {
        tracing::warn!(error = %err, "signing off failed: this worker's tasks are taken back once its lease runs out");
    }
    lock(&shared.held).clear();
}

/// Every registered worker, online ones first.
pub(super) async fn registered(shared: &Shared) -> Result<Vec<WorkerInfo>> {
    let ids: Vec<String> = shared
        .conn
        .clone()
        .smembers(shared.keys.workers())
        .await
        .map_err(|err| shared.error(err))?;
    // Every registration and lease in one round trip.
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HGETALL")
            .arg(shared.keys.worker(id))
            .cmd("EXISTS")
            .arg(shared.keys.alive(id));
    }
    let found: Vec<(std::collections::HashMap<String, String>, bool)> = if ids.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut shared.conn.clone())
            .await
            .map_err(|err| shared.error(err))?
    };
    let mut workers = Vec::with_capacity(ids.len());
    let mut forgotten = Vec::new();
    for (id, (fields, alive)) in ids.into_iter().zip(found) {
        if fields.is_empty() {
            forgotten.push(id);
            continue;
        }
        let number = |name: &str| -> i64 {
            fields
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_default()
        };
        let mut info = WorkerInfo {
            name: fields.get("name").cloned().unwrap_or_default(),
            host: fields.get("host").cloned().unwrap_or_default(),
            pid: u32::try_from(number("pid")).unwrap_or(0),
            mode: fields.get("mode").cloned().unwrap_or_default(),
            concurrency: u32::try_from(number("concurrency")).unwrap_or(0),
            queues: fields
                .get("queues")
                .map(|q| {
                    q.split(',')
                        .filter(|q| !q.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            started_at: from_millis(number("started_at")),
            last_heartbeat: from_millis(number("heartbeat_at")),
            online: alive && !fields.contains_key("stopped_at"),
            active: u64::try_from(number("active")).unwrap_or(0),
            processed: u64::try_from(number("processed")).unwrap_or(0),
            succeeded: u64::try_from(number("succeeded")).unwrap_or(0),
            failed: u64::try_from(number("failed")).unwrap_or(0),
            id,
        };
        // This process's own figures are current, not as of its last heartbeat.
        if info.id == shared.id() {
            info.active = running(shared) as u64;
            info.processed = shared.processed.load(Ordering::Relaxed);
        }
        workers.push(info);
    }
    if !forgotten.is_empty() {
        let _: redis::RedisResult<i64> = shared
            .conn
            .clone()
            .srem(shared.keys.workers(), forgotten)
            .await;
    }
    workers.sort_by_key(|w| (!w.online, std::cmp::Reverse(w.started_at)));
    Ok(workers)
}
