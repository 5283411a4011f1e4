//! The in-process task backend: tokio workers in this process, records in the hub's database.
//!
//! Live state (unfinished tasks, the event ring) is kept in memory behind one mutex, the only
//! place state changes are decided, so events come out in sequence order. Every change is also
//! sent, in order, to a single writer task that stores batches in one transaction each ("group
//! commit"); a finished record leaves memory once it is stored.
//!
//! Enqueue answers as soon as the task is queued in memory and handed to the writer, which
//! commits it within milliseconds — like a broker's publish, a crash in that window loses the
//! task (a clean shutdown loses nothing). An enqueue with an exclusive key is the exception: it
//! must ask the database whether the key is free, so it waits for its commit.

mod state;
mod worker;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::state::{Change, Live, Shared, lock, writer_gone};
use self::worker::{hostname, sweep_loop, worker_loop};
use self::writer::{WriteOp, writer_loop};
use super::backend::{EventSubscription, TaskBackend};
use super::config::TaskConfig;
use super::handler::Handlers;
use super::model::{
    BackendStats, CancelReason, JobRequest, QueueInfo, TaskError, TaskId, TaskQuery, TaskRecord,
    TaskState, TimeLimits, WorkerInfo,
};
use super::store::{self, StoredTask};
use crate::db::Database;
use crate::error::{HubError, Result};

/// The in-process backend. Dropping it stops its workers abruptly (as a crash would: running
/// tasks are marked interrupted on the next open); call [`TaskBackend::shutdown`] to stop cleanly.
pub struct LocalBackend {
    shared: Arc<Shared>,
    background: Mutex<Background>,
}

/// The tokio tasks a backend runs besides the handlers.
#[derive(Default)]
struct Background {
    writer: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    sweeper: Option<JoinHandle<()>>,
}

impl Background {
    fn abort_all(&mut self) {
        self.workers.drain(..).for_each(|h| h.abort());
        for handle in [self.sweeper.take(), self.writer.take()]
            .into_iter()
            .flatten()
        {
            handle.abort();
        }
    }
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("config", &self.shared.config)
            .field("handlers", &self.shared.handlers)
            .finish_non_exhaustive()
    }
}

impl LocalBackend {
    /// Opens the backend on `db`: recovers what a previous run left (pending tasks are queued
    /// again, running ones become `FAILURE` with code `interrupted`), then starts the workers,
    /// the writer and the expiry sweep. Must be called inside a tokio runtime.
    pub async fn open(db: Database, config: TaskConfig, handlers: Handlers) -> Result<Self> {
        config.validate()?;
        let (pending, interrupted) = store::recover(&db).await?;
        // Sequence numbers keep increasing across restarts: start above both what was stored
        // and the current time in microseconds (no run emits events faster than that).
        let seq = store::max_seq(&db)
            .await?
            .max(u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0));

        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(config.event_buffer.max(16));
        let host = hostname();
        let workers = (1..=config.concurrency)
            .map(|i| WorkerInfo {
                name: format!("worker-{i}@{host}"),
                current_task: None,
                processed: 0,
            })
            .collect();
        let live = Arc::new(Mutex::new(Live {
            tasks: HashMap::new(),
            seq,
            recent: VecDeque::new(),
            workers,
        }));
        let shared = Arc::new(Shared {
            db: db.clone(),
            config: config.clone(),
            handlers,
            live: live.clone(),
            events,
            writer: writer_tx,
            queue_tx,
            queue_rx: tokio::sync::Mutex::new(queue_rx),
            stop_taking: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            finished: Notify::new(),
        });

        let mut background = Background {
            writer: Some(tokio::spawn(writer_loop(db, live, writer_rx))),
            ..Background::default()
        };
        for record in interrupted {
            tracing::warn!(task = %record.id, kind = %record.kind, "task interrupted by a restart");
            shared.announce(record);
        }
        let requeued = pending.len();
        for task in pending {
            let id = task.record.id;
            shared.admit(task);
            let _ = shared.queue_tx.send(id);
        }
        if requeued > 0 {
            tracing::info!(requeued, "pending tasks queued again after restart");
        }
        for index in 0..config.concurrency as usize {
            background
                .workers
                .push(tokio::spawn(worker_loop(shared.clone(), index)));
        }
        if !config.result_expires.is_zero() {
            background.sweeper = Some(tokio::spawn(sweep_loop(shared.clone())));
        }
        Ok(LocalBackend {
            shared,
            background: Mutex::new(background),
        })
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
        if !shared.accepting.load(Ordering::Acquire) {
            return Err(HubError::BackendUnavailable {
                message: "the task backend is shutting down".into(),
            });
        }
        if !shared.handlers.contains(&job.kind) {
            return Err(HubError::invalid(
                "kind",
                format!("no handler is registered for job kind '{}'", job.kind),
            ));
        }
        let limits = TimeLimits {
            soft: job
                .options
                .soft_time_limit
                .unwrap_or(shared.config.limits.soft),
            hard: job
                .options
                .hard_time_limit
                .unwrap_or(shared.config.limits.hard),
        };
        if limits.hard.is_zero() {
            return Err(HubError::invalid("hard_time_limit", "must be above zero"));
        }
        let record = TaskRecord {
            id: Uuid::new_v4(),
            kind: job.kind,
            queue: job
                .options
                .queue
                .unwrap_or_else(|| shared.config.default_queue.clone()),
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
        let id = record.id;
        let stored = StoredTask {
            record,
            seq: 0,
            exclusive_key: job.options.exclusive_key,
        };
        if stored.exclusive_key.is_some() {
            let (ack, committed) = oneshot::channel();
            shared.send(WriteOp::Insert(stored.clone(), Some(ack)))?;
            committed.await.map_err(|_| writer_gone())??;
            shared.admit(stored);
        } else {
            // Admitted under the same lock that orders writes, so the insert reaches the writer
            // before any change a worker makes to the task.
            shared.admit_and_store(stored)?;
        }
        shared
            .queue_tx
            .send(id)
            .map_err(|_| HubError::BackendUnavailable {
                message: "the task queue is closed".into(),
            })?;
        Ok(id)
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        if let Some(task) = lock(&self.shared.live).tasks.get(&id) {
            return Ok(Some(task.stored.record.clone()));
        }
        store::get(&self.shared.db, id).await
    }

    async fn list(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>> {
        self.shared.flush().await?;
        store::list(&self.shared.db, query).await
    }

    async fn revoke(&self, id: TaskId, terminate: bool) -> Result<TaskRecord> {
        let shared = &self.shared;
        let in_memory = {
            let mut live = lock(&shared.live);
            match live.tasks.get(&id).map(|task| task.stored.record.state) {
                Some(TaskState::Pending) => {
                    let change = Change::Finish {
                        state: TaskState::Revoked,
                        result: None,
                        error: Some(TaskError::new("revoked", "revoked before it started")),
                    };
                    shared.apply_locked(&mut live, id, change);
                }
                Some(state) if state.is_active() && terminate => {
                    if let Some(run) = live.tasks.get(&id).and_then(|task| task.run.as_ref()) {
                        run.ctx.cancel(CancelReason::Revoked);
                        run.revoke.notify_one();
                    }
                }
                _ => {}
            }
            live.tasks.get(&id).map(|task| task.stored.record.clone())
        };
        match in_memory {
            Some(record) => Ok(record),
            // Not live: finished and stored, or unknown.
            None => store::get(&shared.db, id)
                .await?
                .ok_or_else(|| HubError::not_found(crate::Entity::Task, id)),
        }
    }

    fn subscribe(&self, since: Option<u64>) -> EventSubscription {
        // Under the lock, so no event falls between the backlog and the live receiver.
        let live = lock(&self.shared.live);
        let receiver = self.shared.events.subscribe();
        let backlog = match since {
            Some(since) => live
                .recent
                .iter()
                .filter(|event| event.seq > since)
                .cloned()
                .collect(),
            None => VecDeque::new(),
        };
        let mut subscription = EventSubscription::new(backlog, receiver);
        if let Some(since) = since {
            subscription.skip_through(since);
        }
        subscription
    }

    async fn stats(&self) -> Result<BackendStats> {
        let shared = &self.shared;
        shared.flush().await?;
        let (workers, queues) = {
            let live = lock(&shared.live);
            let mut queues: HashMap<&str, QueueInfo> = HashMap::new();
            queues.insert(
                &shared.config.default_queue,
                QueueInfo {
                    name: shared.config.default_queue.clone(),
                    pending: 0,
                    active: 0,
                },
            );
            for task in live.tasks.values() {
                let record = &task.stored.record;
                let entry = queues.entry(&record.queue).or_insert_with(|| QueueInfo {
                    name: record.queue.clone(),
                    pending: 0,
                    active: 0,
                });
                match record.state {
                    TaskState::Pending => entry.pending += 1,
                    state if state.is_active() => entry.active += 1,
                    _ => {}
                }
            }
            let mut queues: Vec<QueueInfo> = queues.into_values().collect();
            queues.sort_by(|a, b| a.name.cmp(&b.name));
            (live.workers.clone(), queues)
        };
        let minute = Utc::now().timestamp() / 60;
        let last_15 = store::finished_since(&shared.db, minute - 14).await?;
        Ok(BackendStats {
            backend: self.name().to_owned(),
            concurrency: shared.config.concurrency,
            workers,
            queues,
            kinds: store::kind_counts(&shared.db).await?,
            finished_last_minute: store::finished_since(&shared.db, minute).await?,
            rate_per_minute_15m: last_15 as f64 / 15.0,
        })
    }

    async fn shutdown(&self, grace: Duration) -> Result<()> {
        let shared = &self.shared;
        shared.accepting.store(false, Ordering::Release);
        shared.stop_taking.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            // Register interest before checking, so a finish in between is not missed.
            let finished = shared.finished.notified();
            if shared.running_count() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                break;
            }
        }
        let interrupted = shared.interrupt_running();
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "tasks still running at the end of the shutdown grace period"
            );
        }
        let (workers, sweeper) = {
            let mut background = lock(&self.background);
            (
                std::mem::take(&mut background.workers),
                background.sweeper.take(),
            )
        };
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        for worker in workers {
            let _ = worker.await;
        }
        // The writer goes last, once every change is stored; stopping it returns its connection
        // to the pool, which closing the database waits for.
        shared.flush().await?;
        if let Some(writer) = lock(&self.background).writer.take() {
            writer.abort();
        }
        tracing::info!("task backend stopped");
        Ok(())
    }
}
