//! The in-process backend: tokio workers in this process, the hub's database as the task store
//! that every process opening it shares.
//!
//! The store is the one truth (see the README's process model). A task is held by one worker
//! process at a time — its *owner* — under a lease the owner renews by heartbeat; every change
//! the owner writes is fenced on owner and attempt, so a worker that lost its lease cannot
//! overwrite what replaced it. Processes that run tasks also recover the tasks of workers whose
//! lease expired. Events get their sequence number from the store's event log, so every process
//! publishes the same sequence.
//!
//! In memory, each process keeps only what it holds (see [`state`]): changes reach the store
//! through one writer per process in batches ("group commit"). A plain enqueue answers once
//! the task is handed to the writer, which commits it within milliseconds — like a broker's
//! publish, a crash in that window loses the task (a clean shutdown loses nothing). An enqueue
//! with an exclusive key waits for its commit, because the store decides whether the key is
//! free.

mod events;
mod state;
mod worker;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::events::{EventLog, pump_loop};
use self::state::{Admissions, Live, Shared, lock};
use self::worker::{feeder_loop, heartbeat_loop, recover, sweep_loop, worker_loop};
use self::writer::{WriteOp, writer_loop};
use super::backend::{
    BackendContext, BackendFactory, EventSubscription, TaskBackend, TaskHistory, TaskMonitor,
    new_task, wait_for_running,
};
use super::history::{LatencyHistogram, TimelineEntry, WindowData};
use super::identity::MonotonicMicros;
use super::model::{
    BackendStats, EventCursor, JobRequest, QueueInfo, TaskId, TaskPage, TaskQuery, TaskRecord,
    TaskState,
};
use super::store::{self, StoredTask, WorkerRow};
use crate::db::now_millis;
use crate::error::{HubError, Result};

/// How long a read waits for a task's end to be stored before it answers with what the
/// store holds instead.
const END_STORED_WAIT: Duration = Duration::from_secs(1);

/// The in-process backend. Dropping it stops its workers abruptly, as a crash would: the tasks
/// it held are recovered by another process once their lease expires. Call
/// [`TaskBackend::shutdown`] to stop cleanly.
pub struct LocalBackend {
    shared: Arc<Shared>,
    background: Mutex<Background>,
}

/// The tokio tasks a backend runs besides the handlers.
#[derive(Default)]
struct Background {
    writer: Option<JoinHandle<()>>,
    pump: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// Feeder, heartbeat and sweep.
    upkeep: Vec<JoinHandle<()>>,
}

impl Background {
    fn abort_all(&mut self) {
        self.workers.drain(..).for_each(|h| h.abort());
        self.upkeep.drain(..).for_each(|h| h.abort());
        for handle in [self.pump.take(), self.writer.take()].into_iter().flatten() {
            handle.abort();
        }
    }
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("worker", &self.shared.me.id)
            .field("mode", &self.shared.mode)
            .field("config", &self.shared.config)
            .field("handlers", &self.shared.handlers)
            .finish_non_exhaustive()
    }
}

/// Opens [`LocalBackend`]s: the default [`BackendFactory`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalBackendFactory;

#[async_trait]
impl BackendFactory for LocalBackendFactory {
    async fn open(&self, context: BackendContext) -> Result<Arc<dyn TaskBackend>> {
        Ok(Arc::new(LocalBackend::open(context).await?))
    }
}

impl LocalBackend {
    /// Opens the backend on the context's database. A process that runs tasks registers as a
    /// worker, takes back the tasks of workers whose lease expired, then starts its workers;
    /// a client only submits and reads. Must be called inside a tokio runtime.
    pub async fn open(context: BackendContext) -> Result<Self> {
        let BackendContext {
            db,
            config,
            handlers,
            mode,
        } = context;
        config.validate()?;
        let me = WorkerRow::this_process(&config, mode);
        let last = store::last_event_seq(&db).await?;
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            db,
            log: EventLog::new(last, config.event_buffer, config.result_expires),
            config,
            handlers,
            mode,
            me,
            live: Mutex::new(Live::default()),
            writer: writer_tx,
            queue_tx,
            queue_rx: tokio::sync::Mutex::new(queue_rx),
            stop_taking: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            finished: Notify::new(),
            hungry: Notify::new(),
            admissions: Admissions::default(),
            // Until a first look, the store may hold anything.
            claimable: AtomicBool::new(true),
            processed: AtomicU64::new(0),
            order: MonotonicMicros::default(),
        });
        let mut background = Background {
            writer: Some(tokio::spawn(writer_loop(shared.clone(), writer_rx))),
            pump: Some(tokio::spawn(pump_loop(shared.clone()))),
            ..Background::default()
        };
        if mode.runs_tasks() {
            let opened = async {
                shared.request(WriteOp::Register).await?;
                recover(&shared).await;
                Ok::<(), HubError>(())
            };
            if let Err(err) = opened.await {
                background.abort_all();
                return Err(err);
            }
            for _ in 0..shared.config.concurrency {
                background
                    .workers
                    .push(tokio::spawn(worker_loop(shared.clone())));
            }
            background
                .upkeep
                .push(tokio::spawn(feeder_loop(shared.clone())));
            background
                .upkeep
                .push(tokio::spawn(heartbeat_loop(shared.clone())));
            if !shared.config.result_expires.is_zero() {
                background
                    .upkeep
                    .push(tokio::spawn(sweep_loop(shared.clone())));
            }
            tracing::info!(worker = %shared.me.id, concurrency = shared.config.concurrency, "task worker registered");
        }
        Ok(LocalBackend {
            shared,
            background: Mutex::new(background),
        })
    }

    /// This process's worker id: what the tasks it runs name as their `worker`.
    pub fn worker_id(&self) -> &str {
        self.shared.id()
    }

    /// Waits until every change made so far is stored.
    pub async fn flush(&self) -> Result<()> {
        self.shared.flush().await
    }

    /// Deletes finished records older than the configured expiry now (the sweep does this
    /// periodically); returns how many were deleted.
    pub async fn purge_expired(&self) -> Result<u64> {
        self.shared.purge_expired().await
    }

    /// Takes back the tasks of workers whose lease expired now (runners do this every
    /// heartbeat).
    pub async fn recover_lost(&self) {
        recover(&self.shared).await;
    }

    /// What the store holds for `id`, a task that ended here while the store held its writes
    /// back. Its admission is written behind the caller, so the store may not have it at all
    /// yet: that is the store being unavailable, not an unknown task (a 404 would tell the
    /// caller the task is gone, and it is not).
    async fn stored_while_refused(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        match store::get(&self.shared.db, id).await? {
            Some(record) => Ok(Some(record)),
            None => Err(HubError::BackendUnavailable {
                message: format!(
                    "task {id} was accepted, but the store ({}) has not taken its writes yet: \
                     another process may hold its write lock; ask again shortly",
                    self.shared.db.display_url()
                ),
            }),
        }
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        self.shared.stop_taking.cancel();
        lock(&self.background).abort_all();
        for task in lock(&self.shared.live).tasks.values() {
            if let Some(abort) = task.run.as_ref().and_then(|run| run.abort.as_ref()) {
                abort.abort();
            }
        }
    }
}

#[async_trait]
impl TaskBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "in_process"
    }

    async fn enqueue(&self, job: JobRequest) -> Result<TaskId> {
        let shared = &self.shared;
        let (record, exclusive_key) = new_task(
            job,
            &shared.accepting,
            &shared.config,
            shared.mode,
            &shared.handlers,
        )?;
        // An embedded process runs what it submits (when it takes that queue): it reserves the
        // task at once, with no claim round trip. A client leaves it for any worker to claim.
        let runs_here = shared.mode.runs_tasks()
            && (shared.config.queues.is_empty() || shared.config.queues.contains(&record.queue));
        let id = record.id;
        let stored = StoredTask {
            record: Arc::new(record),
            exclusive_key,
            owner: runs_here.then(|| shared.me.id.clone()),
            lease_until: runs_here.then(|| shared.lease_until()),
            queue_order: shared.next_order(),
        };
        if stored.exclusive_key.is_some() {
            // The writer queues it once stored, whether or not this caller is still waiting.
            let _waiting = shared.admissions.enter();
            shared
                .request(|ack| WriteOp::Insert {
                    task: stored,
                    ack: Some(ack),
                })
                .await?;
        } else {
            shared.admit_and_store(stored)?;
        }
        Ok(id)
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let ended = match lock(&self.shared.live).tasks.get(&id) {
            Some(task) if !task.stored.record.state.is_terminal() => {
                return Ok(Some(TaskRecord::clone(&task.stored.record)));
            }
            held => held.is_some(),
        };
        if ended {
            // An end is reported once stored, with whatever the task's handler stored before
            // it (a project's status): that is what lets a handler go on without waiting for
            // its writes, and what a reader acts on is never lost with this process.
            // A store that refuses writes holds the flush back: the reader then gets what the
            // store holds (or its error) rather than waiting for as long as it refuses.
            match tokio::time::timeout(END_STORED_WAIT, self.shared.flush()).await {
                Ok(flushed) => flushed?,
                Err(_) => return self.stored_while_refused(id).await,
            }
        }
        let finished = self.shared.log.feed.finished();
        if let Some(record) = finished.get(id) {
            return Ok(Some(record));
        }
        let record = store::get(&self.shared.db, id).await?;
        if let Some(record) = &record {
            finished.offer(record);
        }
        Ok(record)
    }

    async fn revoke(&self, id: TaskId, terminate: bool) -> Result<TaskRecord> {
        let shared = &self.shared;
        if let Some(record) = shared.revoke_here(id, terminate) {
            return Ok(record);
        }
        // Queued for any worker, held by another process, or finished: the store decides, and a
        // live owner carries the revoke out. A queued task is gone within a poll or two.
        shared
            .request(|ack| WriteOp::Revoke { id, terminate, ack })
            .await?;
        let deadline = tokio::time::Instant::now() + shared.config.poll_interval * 40;
        loop {
            let record = store::get(&shared.db, id)
                .await?
                .ok_or_else(|| HubError::not_found(crate::Entity::Task, id))?;
            if record.state != TaskState::Pending || tokio::time::Instant::now() >= deadline {
                return Ok(record);
            }
            tokio::time::sleep(shared.config.poll_interval / 2).await;
        }
    }

    async fn subscribe(&self, after: Option<EventCursor>) -> Result<EventSubscription> {
        self.shared.log.subscribe(&self.shared.db, after).await
    }

    async fn holder(&self, key: &str) -> Result<Option<TaskRecord>> {
        self.shared.flush().await?;
        store::holder(&self.shared.db, key).await
    }

    async fn shutdown(&self, grace: Duration) -> Result<()> {
        let shared = &self.shared;
        shared.accepting.store(false, Ordering::Release);
        shared.stop_taking.cancel();
        wait_for_running(&shared.finished, || shared.running_count(), grace).await;
        let interrupted = shared.interrupt_running();
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "tasks still running at the end of the shutdown grace period"
            );
        }
        let (workers, upkeep) = {
            let mut background = lock(&self.background);
            (
                std::mem::take(&mut background.workers),
                std::mem::take(&mut background.upkeep),
            )
        };
        upkeep.iter().for_each(JoinHandle::abort);
        for worker in workers {
            let _ = worker.await;
        }
        if shared.mode.runs_tasks() {
            // What this worker reserved but never started goes back to the queue.
            let released = shared.request(WriteOp::Release).await?;
            if released > 0 {
                tracing::info!(released, "queued tasks handed back for other workers");
            }
        }
        shared.flush().await?;
        // Publish the last events before the pump stops.
        if let Err(err) = shared.log.publish_new(&shared.db, shared.id(), true).await {
            tracing::debug!(error = %err, "last events not published");
        }
        // The writer goes last, once every change is stored; stopping it returns its connection
        // to the pool, which closing the database waits for.
        lock(&self.background).abort_all();
        tracing::info!("task backend stopped");
        Ok(())
    }

    fn history(&self) -> Option<&dyn TaskHistory> {
        Some(self)
    }

    fn monitor(&self) -> Option<&dyn TaskMonitor> {
        Some(self)
    }
}

#[async_trait]
impl TaskHistory for LocalBackend {
    async fn page(&self, query: &TaskQuery) -> Result<TaskPage> {
        query.validate()?;
        self.shared.flush().await?;
        store::page(&self.shared.db, query).await
    }

    async fn timeline(&self, id: TaskId) -> Result<Vec<TimelineEntry>> {
        self.shared.flush().await?;
        store::timeline(&self.shared.db, id).await
    }
}

#[async_trait]
impl TaskMonitor for LocalBackend {
    async fn stats(&self) -> Result<BackendStats> {
        let shared = &self.shared;
        shared.flush().await?;
        let mut workers = store::workers(&shared.db, now_millis()).await?;
        // This process's own count is current, not as of its last heartbeat.
        if let Some(me) = workers.iter_mut().find(|w| w.id == shared.me.id) {
            me.processed += shared.processed.load(Ordering::Relaxed);
        }
        let mut queues: HashMap<String, QueueInfo> = HashMap::new();
        queues.insert(
            shared.config.default_queue.clone(),
            QueueInfo {
                name: shared.config.default_queue.clone(),
                pending: 0,
                active: 0,
                oldest_queued_at: None,
            },
        );
        for queue in store::queue_depths(&shared.db).await? {
            queues.insert(queue.name.clone(), queue);
        }
        let mut queues: Vec<QueueInfo> = queues.into_values().collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let minutes =
            store::minute_counts(&shared.db, Utc::now() - chrono::Duration::minutes(14)).await?;
        Ok(BackendStats::assemble(
            self.name(),
            workers,
            queues,
            store::kind_counts(&shared.db).await?,
            &minutes,
            shared.log.subscribers(),
        ))
    }

    async fn window(&self, since: DateTime<Utc>) -> Result<WindowData> {
        self.shared.flush().await?;
        store::window(&self.shared.db, since).await
    }

    async fn histograms(&self) -> Result<Vec<LatencyHistogram>> {
        self.shared.flush().await?;
        store::histograms(&self.shared.db).await
    }
}
