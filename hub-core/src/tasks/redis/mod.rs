//! The Redis backend: workers in any process on any host that reaches one Redis.
//!
//! - **Delivery**: one Redis stream per queue, read by the consumer group `workers`
//!   (`XREADGROUP`); a worker reads only as many entries as it has free slots. Entries stay in
//!   the reader's pending list until the task ends, and are taken back (`XPENDING` for that
//!   consumer, then `XCLAIM`) only from consumers whose worker stopped heartbeating — never
//!   because an entry is old, so a 20-minute image pull is not delivered twice.
//! - **Records** sit in a hash per task beside the fence fields (owner, attempt, write
//!   counter); every change is a Lua script that checks the fence, writes, and appends the
//!   event in one step (see [`scripts`]). Finished records expire after `result_expires`; the
//!   counts by kind and by minute are kept apart and outlive them.
//! - **Events**: one capped stream with ids `<seq>-0`; every process follows it (`XREAD
//!   BLOCK`), so subscribers resume with a cursor from any process.
//! - **Revokes** of queued tasks end them at once; of running ones, they are stored and read
//!   by the worker that holds the task within a fraction of a second.
//!
//! Delivery is at least once: a task whose worker is lost runs again when its kind is safe to
//! retry, and the fence discards whatever the lost run still writes.

mod events;
mod keys;
mod scripts;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisError};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::keys::{GROUP, Keys};
use self::scripts::Scripts;
use super::backend::{
    BackendContext, BackendFactory, EventSubscription, TaskBackend, TaskHistory, TaskMonitor,
    key_held, new_task, wait_for_running,
};
use super::config::TaskConfig;
use super::events::EventFeed;
use super::handler::{Handlers, ProgressSink};
use super::history::{
    Finished, FinishedSample, Latency, LatencyHistogram, MinuteCounts, SAMPLE_RETENTION,
    TIMELINE_CAP, TimelineEntry, WindowData,
};
use super::identity::{MonotonicMicros, WorkerRow};
use super::model::{
    BackendStats, CancelReason, Change, EventCursor, JobRequest, KindCounts, QueueInfo, TaskError,
    TaskId, TaskMap, TaskPage, TaskQuery, TaskRecord, TaskSort, TaskState, codes,
};
use super::run::RunControl;
use crate::config::HubMode;
use crate::error::{HubError, Result};
use crate::sync::lock;

/// The key prefix when none is given.
pub const DEFAULT_PREFIX: &str = "hub:";
/// Events the event stream keeps (older ones are trimmed).
const EVENT_STREAM_CAP: usize = 100_000;
/// How long a blocking read waits before it looks at its stop signal again.
const BLOCK: Duration = Duration::from_millis(1000);
/// How often a worker looks for revoke requests while it runs tasks.
const REVOKE_POLL: Duration = Duration::from_millis(200);

/// Where the Redis backend lives: `redis://[:password@]host:port/db` and a key prefix.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedisSettings {
    /// The Redis URL.
    pub url: String,
    /// What every key starts with (default `hub:`), so several hubs can share one Redis.
    pub prefix: String,
}

impl RedisSettings {
    /// Settings for `url` with the default prefix.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSettings {
            url: url.into(),
            prefix: DEFAULT_PREFIX.into(),
        }
    }

    /// Uses `prefix` for every key.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

/// Debug output never shows a password in the URL.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &self.url[..scheme], &self.url[at + 1..])
            }
            _ => self.url.clone(),
        };
        f.debug_struct("RedisSettings")
            .field("url", &url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Opens [`RedisBackend`]s.
#[derive(Debug, Clone)]
pub struct RedisBackendFactory {
    settings: RedisSettings,
}

impl RedisBackendFactory {
    /// A factory for the Redis at `settings`.
    pub fn new(settings: RedisSettings) -> Self {
        RedisBackendFactory { settings }
    }
}

#[async_trait]
impl BackendFactory for RedisBackendFactory {
    async fn open(&self, context: BackendContext) -> Result<Arc<dyn TaskBackend>> {
        Ok(Arc::new(RedisBackend::open(&self.settings, context).await?))
    }
}

/// The Redis backend. Dropping it stops its workers abruptly, as a crash would: the tasks it
/// held are taken back by another worker once its heartbeat lease runs out. Call
/// [`TaskBackend::shutdown`] to stop cleanly.
pub struct RedisBackend {
    shared: Arc<Shared>,
    background: Mutex<Background>,
    /// Held while the event pump starts: it follows the event stream only once somebody
    /// subscribes (a worker nobody watches reads no events).
    pump_start: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Background {
    pump: Option<JoinHandle<()>>,
    fetcher: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// Heartbeat, revoke watch and index sweep.
    upkeep: Vec<JoinHandle<()>>,
}

impl Background {
    fn abort_all(&mut self) {
        self.workers.drain(..).for_each(|h| h.abort());
        self.upkeep.drain(..).for_each(|h| h.abort());
        for handle in [self.fetcher.take(), self.pump.take()]
            .into_iter()
            .flatten()
        {
            handle.abort();
        }
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.shared.address)
            .field("worker", &self.shared.me.id)
            .field("mode", &self.shared.mode)
            .finish_non_exhaustive()
    }
}

/// What the backend's handle, its loops and its task contexts share.
struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    /// `redis://host:port/db`, without a password: for messages.
    address: String,
    keys: Keys,
    scripts: Scripts,
    config: TaskConfig,
    handlers: Handlers,
    mode: HubMode,
    me: WorkerRow,
    feed: EventFeed,
    /// Tasks this process holds: delivered to it (reserved) or running here.
    held: Mutex<TaskMap<Held>>,
    work_tx: mpsc::UnboundedSender<TaskId>,
    work_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<TaskId>>,
    /// Fired at shutdown: the fetcher and the workers stop taking tasks.
    stop_taking: CancellationToken,
    accepting: AtomicBool,
    /// Woken whenever a task held here ends: a slot is free.
    finished: Notify,
    /// Tasks finished by this process since it started.
    processed: AtomicU64,
    /// Queues this process has added to the queue set (each once).
    queues_used: Mutex<std::collections::HashSet<String>>,
    /// Index scores (queue time in µs, strictly increasing here), so that history lists a
    /// process's tasks in submission order.
    order: MonotonicMicros,
}

/// A task this process holds.
struct Held {
    record: TaskRecord,
    /// The queue entry that delivered it.
    msg: String,
    /// Its exclusive key, if any.
    key: Option<String>,
    /// This owner's write counter (the start is write 1).
    version: u64,
    /// Handles on its run, once its handler runs.
    run: Option<RunControl>,
    /// Its start is being stored: lost now, it is told so once it runs instead of being
    /// dropped (its worker would return without running it or storing an end).
    starting: bool,
    /// Why it was lost while starting, for its worker to pass on to the run.
    lost_while_starting: Option<CancelReason>,
    /// Its handler returned; its end is being stored.
    finishing: bool,
}

/// What a fenced write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Stored, with this event.
    Stored,
    /// A later write of the same owner is already stored: nothing to do.
    Stale,
    /// The task is gone, or no longer this writer's: the change is discarded.
    Refused,
}

impl RedisBackend {
    /// Connects to Redis and opens the backend. A process that runs tasks registers as a
    /// worker, takes back the tasks of workers whose heartbeat expired, then starts taking
    /// tasks; a client only submits and reads. Must be called inside a tokio runtime.
    pub async fn open(settings: &RedisSettings, context: BackendContext) -> Result<Self> {
        let BackendContext {
            config,
            handlers,
            mode,
            ..
        } = context;
        config.validate()?;
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|err| HubError::invalid("task_backend", format!("{err}")))?;
        let address = display_address(&client);
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(|err| store_error(&address, err))?;
        let keys = Keys::new(&settings.prefix);
        let last: Option<u64> = conn
            .clone()
            .get(keys.event_seq())
            .await
            .map_err(|err| store_error(&address, err))?;
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client,
            conn,
            address,
            keys,
            scripts: Scripts::new(),
            feed: EventFeed::new(
                last.unwrap_or(0),
                config.event_buffer,
                config.result_expires,
            ),
            me: WorkerRow::this_process(&config, mode),
            config,
            handlers,
            mode,
            held: Mutex::new(TaskMap::default()),
            work_tx,
            work_rx: tokio::sync::Mutex::new(work_rx),
            stop_taking: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            finished: Notify::new(),
            processed: AtomicU64::new(0),
            order: MonotonicMicros::default(),
            queues_used: Mutex::default(),
        });
        let mut background = Background::default();
        if mode.runs_tasks() {
            if let Err(err) = worker::heartbeat(&shared).await {
                background.abort_all();
                return Err(err);
            }
            worker::recover(&shared).await;
            background.fetcher = Some(tokio::spawn(worker::fetch_loop(shared.clone())));
            for _ in 0..shared.config.concurrency {
                background
                    .workers
                    .push(tokio::spawn(worker::worker_loop(shared.clone())));
            }
            background
                .upkeep
                .push(tokio::spawn(worker::heartbeat_loop(shared.clone())));
            background
                .upkeep
                .push(tokio::spawn(worker::revoke_loop(shared.clone())));
            if !shared.config.result_expires.is_zero() {
                background
                    .upkeep
                    .push(tokio::spawn(worker::sweep_loop(shared.clone())));
            }
            tracing::info!(worker = %shared.me.id, redis = %shared.address, queues = ?shared.config.queues, concurrency = shared.config.concurrency, "task worker registered");
        }
        Ok(RedisBackend {
            shared,
            background: Mutex::new(background),
            pump_start: tokio::sync::Mutex::new(()),
        })
    }

    /// Starts following the event stream, from its end, unless it is followed already.
    async fn ensure_pump(&self) -> Result<()> {
        if lock(&self.background).pump.is_some() {
            return Ok(());
        }
        let _starting = self.pump_start.lock().await;
        if lock(&self.background).pump.is_some() {
            return Ok(());
        }
        let shared = &self.shared;
        let last: Option<u64> = shared
            .conn
            .clone()
            .get(shared.keys.event_seq())
            .await
            .map_err(|err| shared.error(err))?;
        shared.feed.skip_to(last.unwrap_or(0));
        lock(&self.background).pump = Some(tokio::spawn(events::pump_loop(shared.clone())));
        Ok(())
    }

    /// This process's worker id: what the tasks it runs name as their `worker`.
    pub fn worker_id(&self) -> &str {
        &self.shared.me.id
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.shared.stop_taking.cancel();
        lock(&self.background).abort_all();
        for held in lock(&self.shared.held).values() {
            if let Some(abort) = held.run.as_ref().and_then(|run| run.abort.as_ref()) {
                abort.abort();
            }
        }
    }
}

/// `redis://host:port/db` for messages: never the password.
fn display_address(client: &redis::Client) -> String {
    let info = client.get_connection_info();
    format!("redis://{}/{}", info.addr(), info.redis_settings().db())
}

/// A Redis failure as the hub reports it: a Redis that cannot be reached is
/// `backend_unavailable` (HTTP 503) naming the address; anything else is internal.
fn store_error(address: &str, err: RedisError) -> HubError {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
    {
        HubError::BackendUnavailable {
            message: format!("the Redis task backend at {address} does not answer: {err}"),
        }
    } else {
        HubError::Internal(format!("the Redis task backend at {address}: {err}"))
    }
}

fn decode(json: &str) -> Result<TaskRecord> {
    serde_json::from_str(json)
        .map_err(|err| HubError::Internal(format!("unreadable task record in Redis: {err}")))
}

fn encode(record: &TaskRecord) -> Result<String> {
    serde_json::to_string(record)
        .map_err(|err| HubError::Internal(format!("task record not serialisable: {err}")))
}

/// A task's hash as the fence sees it.
struct Stored {
    state: TaskState,
    owner: String,
    attempt: u32,
    version: u64,
    msg: Option<String>,
    /// The exclusive key, if any.
    key: Option<String>,
    record: TaskRecord,
}

/// `state, owner, attempt, v, msg, key, record` as `HMGET` gives them.
type StoredFields = (
    Option<String>,
    Option<String>,
    Option<u32>,
    Option<u64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl Stored {
    /// The fence of a write that expects the task exactly as read.
    fn fence(&self) -> Fence<'_> {
        Fence {
            owner: &self.owner,
            attempt: self.attempt,
            pending: self.state == TaskState::Pending,
        }
    }
}

/// How a fenced write expects the task to be.
#[derive(Debug, Clone, Copy)]
struct Fence<'a> {
    owner: &'a str,
    attempt: u32,
    /// Still queued (a start, or a revoke before it).
    pending: bool,
}

impl Shared {
    fn error(&self, err: RedisError) -> HubError {
        store_error(&self.address, err)
    }

    fn id(&self) -> &str {
        &self.me.id
    }

    /// The task's hash, or `None` when it is gone.
    async fn stored(&self, id: TaskId) -> Result<Option<Stored>> {
        let fields: StoredFields = redis::cmd("HMGET")
            .arg(self.keys.task(id))
            .arg(&["state", "owner", "attempt", "v", "msg", "key", "record"])
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|err| self.error(err))?;
        let (Some(state), Some(record)) = (fields.0, fields.6) else {
            return Ok(None);
        };
        Ok(Some(Stored {
            state: state.parse()?,
            owner: fields.1.unwrap_or_default(),
            attempt: fields.2.unwrap_or(1),
            version: fields.3.unwrap_or(0),
            msg: fields.4.filter(|m| !m.is_empty()),
            key: fields.5.filter(|k| !k.is_empty()),
            record: decode(&record)?,
        }))
    }

    /// Writes `record` (version `version`, now owned by `owner`) if the task is as `fence`
    /// expects; a terminal record also releases the task's delivery, its exclusive `key` and
    /// revoke request, counts it and lets it expire.
    async fn transition(
        &self,
        record: &TaskRecord,
        key: Option<&str>,
        version: u64,
        owner: &str,
        fence: Fence<'_>,
    ) -> Result<Written> {
        let terminal = record.state.is_terminal();
        let now = Utc::now();
        let finished = Finished::of(record);
        let runtime_ms = finished.as_ref().and_then(|f| f.runtime_ms).unwrap_or(0);
        let minute = finished
            .as_ref()
            .map_or(now.timestamp().div_euclid(60), |f| f.minute);
        let figures = finished.as_ref().map(FinishFigures::of).unwrap_or_default();
        // Released by a terminal write (the script compares before deleting).
        let key = key.filter(|k| terminal && !k.is_empty());
        let expires_ms = self.config.result_expires.as_millis().min(i64::MAX as u128) as i64;
        let answer: i64 = self
            .scripts
            .transition
            .key(self.keys.task(record.id))
            .key(self.keys.events())
            .key(self.keys.event_seq())
            .key(self.keys.queue(&record.queue))
            .key(key.map_or_else(|| self.keys.task(record.id), |key| self.keys.exclusive(key)))
            .key(self.keys.kind_counts())
            .key(self.keys.minute(minute))
            .key(self.keys.revokes())
            .key(self.keys.timeline(record.id))
            .key(self.keys.samples())
            .key(
                record
                    .worker
                    .as_deref()
                    .map_or_else(|| self.keys.task(record.id), |w| self.keys.worker(w)),
            )
            .arg(fence.owner)
            .arg(fence.attempt)
            .arg(if fence.pending { "1" } else { "0" })
            .arg(record.state.as_str())
            .arg(encode(record)?)
            .arg(owner)
            .arg(version)
            .arg(EVENT_STREAM_CAP)
            .arg(if terminal { "1" } else { "0" })
            .arg(expires_ms)
            .arg(record.id.to_string())
            .arg(&record.kind)
            .arg(runtime_ms)
            .arg(if key.is_some() { "1" } else { "0" })
            .arg(timeline_entry(record, now)?)
            .arg(TIMELINE_CAP)
            .arg(&figures.sample)
            .arg(finished.as_ref().map_or(0, |f| f.finished_ms))
            .arg(now.timestamp_millis() - SAMPLE_RETENTION.as_millis() as i64)
            .arg(&figures.runtime_bucket)
            .arg(&figures.wait_bucket)
            .arg(finished.as_ref().and_then(|f| f.wait_ms).unwrap_or(0))
            .arg(figures.worker_outcome)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|err| self.error(err))?;
        Ok(match answer {
            0 => Written::Stale,
            n if n > 0 => {
                self.feed.finished().offer(record);
                Written::Stored
            }
            _ => Written::Refused,
        })
    }

    /// Ends a task read as `stored` with `record`, on behalf of whoever held it (a revoke of a
    /// queued task, a lost worker's task): written only if the task is still as read.
    async fn end_as_read(&self, stored: &Stored, record: &TaskRecord) -> Result<Written> {
        self.transition(
            record,
            stored.key.as_deref(),
            stored.version + 1,
            "",
            stored.fence(),
        )
        .await
    }

    /// Queues the task again with a fresh delivery, as `record` (attempt `record.attempt`), if
    /// it is as `fence` expects; `announce` publishes the change.
    async fn requeue(
        &self,
        record: &TaskRecord,
        fence: Fence<'_>,
        announce: bool,
    ) -> Result<Written> {
        let answer: i64 = self
            .scripts
            .requeue
            .key(self.keys.task(record.id))
            .key(self.keys.queue(&record.queue))
            .key(self.keys.events())
            .key(self.keys.event_seq())
            .key(self.keys.timeline(record.id))
            .arg(fence.owner)
            .arg(fence.attempt)
            .arg(if fence.pending { "1" } else { "0" })
            .arg(record.attempt)
            .arg(encode(record)?)
            .arg(EVENT_STREAM_CAP)
            .arg(record.id.to_string())
            .arg(if announce { "1" } else { "0" })
            .arg(timeline_entry(record, Utc::now())?)
            .arg(TIMELINE_CAP)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|err| self.error(err))?;
        Ok(if answer >= 0 {
            Written::Stored
        } else {
            Written::Refused
        })
    }

    /// Acknowledges and deletes a queue entry that delivers nothing to run (a duplicate, or a
    /// task that ended meanwhile).
    async fn drop_delivery(&self, queue: &str, msg: &str) -> Result<()> {
        let key = self.keys.queue(queue);
        redis::pipe()
            .cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(msg)
            .ignore()
            .cmd("XDEL")
            .arg(&key)
            .arg(msg)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|err| self.error(err))
    }

    /// This process no longer holds task `id`: a reserved one leaves memory, a running one is
    /// stopped at once and its result discarded (or, for a revoke, ended `REVOKED`).
    fn lose(&self, id: TaskId, reason: CancelReason) {
        let mut held = lock(&self.held);
        let Some(task) = held.get_mut(&id) else {
            return;
        };
        match &task.run {
            Some(run) => {
                if reason != CancelReason::Revoked {
                    tracing::warn!(task = %id, ?reason, "task taken away from this worker; stopping its run");
                }
                run.stop(reason);
            }
            None if task.starting => {
                task.lost_while_starting.get_or_insert(reason);
            }
            None => {
                held.remove(&id);
                drop(held);
                self.finished.notify_waiters();
            }
        }
    }

    /// A connection of its own, for a blocking read (which would hold up every other command
    /// on the shared one).
    async fn dedicated_connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|err| self.error(err))
    }

    /// Known queues: the configured ones, else every queue ever used plus the default.
    async fn queues(&self) -> Result<Vec<String>> {
        if !self.config.queues.is_empty() {
            return Ok(self.config.queues.clone());
        }
        self.all_queues().await
    }

    /// Every queue ever used, plus the default.
    async fn all_queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = self
            .conn
            .clone()
            .smembers(self.keys.queues())
            .await
            .map_err(|err| self.error(err))?;
        if !queues.contains(&self.config.default_queue) {
            queues.push(self.config.default_queue.clone());
        }
        queues.sort();
        Ok(queues)
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
        let change = Change::Progress {
            state,
            percent,
            status,
        };
        let (record, version, attempt) = {
            let mut held = lock(&self.held);
            let Some(task) = held.get_mut(&id) else {
                return Ok(());
            };
            // A change after the task ended (a handler that keeps reporting) is ignored.
            if !task.record.apply(change, &self.me.id) {
                return Ok(());
            }
            task.version += 1;
            (task.record.clone(), task.version, task.record.attempt)
        };
        let fence = Fence {
            owner: self.id(),
            attempt,
            pending: false,
        };
        match self
            .transition(&record, None, version, self.id(), fence)
            .await
        {
            Ok(Written::Refused) => self.lose(id, CancelReason::LeaseLost),
            Ok(_) => {}
            // Progress is advisory: the run goes on, and its end is stored once Redis is back.
            Err(err) => tracing::warn!(task = %id, error = %err, "progress not stored"),
        }
        Ok(())
    }
}

#[async_trait]
impl TaskBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, job: JobRequest) -> Result<TaskId> {
        let shared = &self.shared;
        let (record, key) = new_task(
            job,
            &shared.accepting,
            &shared.config,
            shared.mode,
            &shared.handlers,
        )?;
        let keys = &shared.keys;
        let new_queue = !lock(&shared.queues_used).contains(&record.queue);
        let reply: (i64, String) = shared
            .scripts
            .enqueue
            .key(keys.task(record.id))
            .key(keys.queue(&record.queue))
            .key(keys.events())
            .key(keys.event_seq())
            .key(keys.index())
            .key(keys.queues())
            .key(
                key.as_deref()
                    .map_or_else(|| keys.task(record.id), |key| keys.exclusive(key)),
            )
            .key(keys.timeline(record.id))
            .arg(record.id.to_string())
            .arg(encode(&record)?)
            .arg(&record.queue)
            .arg(shared.order.next_after(record.queued_at.timestamp_micros()))
            .arg(EVENT_STREAM_CAP)
            .arg(if key.is_some() { "1" } else { "0" })
            .arg(keys.task_prefix())
            .arg(key.as_deref().unwrap_or(""))
            .arg(if new_queue { "1" } else { "0" })
            .arg(timeline_entry(&record, record.queued_at)?)
            .invoke_async(&mut shared.conn.clone())
            .await
            .map_err(|err| shared.error(err))?;
        if new_queue {
            lock(&shared.queues_used).insert(record.queue.clone());
        }
        if reply.0 == 0 {
            let holder = reply
                .1
                .parse::<TaskId>()
                .ok()
                .map(|id| async move { shared.stored(id).await });
            let described = match holder {
                Some(lookup) => match lookup.await {
                    Ok(Some(task)) => format!("{} {}", task.record.kind, task.record.id),
                    _ => reply.1.clone(),
                },
                None => reply.1.clone(),
            };
            return Err(key_held(key.as_deref().unwrap_or(""), &described));
        }
        Ok(record.id)
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let finished = self.shared.feed.finished();
        if let Some(record) = finished.get(id) {
            return Ok(Some(record));
        }
        let json: Option<String> = self
            .shared
            .conn
            .clone()
            .hget(self.shared.keys.task(id), "record")
            .await
            .map_err(|err| self.shared.error(err))?;
        let record = json.as_deref().map(decode).transpose()?;
        if let Some(record) = &record {
            finished.offer(record);
        }
        Ok(record)
    }

    async fn revoke(&self, id: TaskId, terminate: bool) -> Result<TaskRecord> {
        let shared = &self.shared;
        // A queued task may start between the read and the write: the fence notices, and the
        // next round sees it running.
        for _ in 0..5 {
            let stored = shared
                .stored(id)
                .await?
                .ok_or_else(|| HubError::not_found(crate::Entity::Task, id))?;
            if stored.state.is_terminal() {
                return Ok(stored.record);
            }
            if stored.state == TaskState::Pending {
                let mut record = stored.record.clone();
                record.apply(
                    Change::Finish {
                        state: TaskState::Revoked,
                        result: None,
                        error: Some(TaskError::new(codes::REVOKED, "revoked before it started")),
                    },
                    shared.id(),
                );
                if shared.end_as_read(&stored, &record).await? == Written::Stored {
                    shared.lose(id, CancelReason::Revoked);
                    return Ok(record);
                }
                continue;
            }
            if terminate {
                let _: () = shared
                    .conn
                    .clone()
                    .hset(shared.keys.revokes(), id.to_string(), 1)
                    .await
                    .map_err(|err| shared.error(err))?;
                // Held here: no need to wait for the watch.
                shared.lose(id, CancelReason::Revoked);
            }
            return Ok(stored.record);
        }
        self.get(id)
            .await?
            .ok_or_else(|| HubError::not_found(crate::Entity::Task, id))
    }

    async fn subscribe(&self, after: Option<EventCursor>) -> Result<EventSubscription> {
        self.ensure_pump().await?;
        let shared = &self.shared;
        shared
            .feed
            .subscribe(after, |after, limit| {
                events::read_after(shared, after, limit)
            })
            .await
    }

    async fn holder(&self, key: &str) -> Result<Option<TaskRecord>> {
        let shared = &self.shared;
        let id: Option<String> = shared
            .conn
            .clone()
            .get(shared.keys.exclusive(key))
            .await
            .map_err(|err| shared.error(err))?;
        let Some(id) = id.and_then(|id| id.parse::<TaskId>().ok()) else {
            return Ok(None);
        };
        Ok(shared
            .stored(id)
            .await?
            .filter(|task| !task.state.is_terminal())
            .map(|task| task.record))
    }

    async fn shutdown(&self, grace: Duration) -> Result<()> {
        let shared = &self.shared;
        shared.accepting.store(false, Ordering::Release);
        shared.stop_taking.cancel();
        wait_for_running(&shared.finished, || worker::running(shared), grace).await;
        let interrupted = worker::interrupt_running(shared);
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "tasks still running at the end of the shutdown grace period"
            );
        }
        let (workers, fetcher, upkeep) = {
            let mut background = lock(&self.background);
            (
                std::mem::take(&mut background.workers),
                background.fetcher.take(),
                std::mem::take(&mut background.upkeep),
            )
        };
        upkeep.iter().for_each(JoinHandle::abort);
        // Interrupted runs store their end; a Redis that does not answer is not waited for.
        let stopped = async {
            for handle in workers.into_iter().chain(fetcher) {
                let _ = handle.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), stopped)
            .await
            .is_err()
        {
            tracing::warn!("task workers did not stop in time");
        }
        if shared.mode.runs_tasks() {
            worker::sign_off(shared).await;
        }
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

/// Ids read per round when a history query walks the index.
const LIST_PAGE: isize = 500;

impl RedisBackend {
    /// Every record queued within `query`'s time range that passes its filters, newest
    /// first. Records that expired drop out of the index at the next sweep; until then they
    /// are skipped here.
    async fn matching(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>> {
        let shared = &self.shared;
        // Unfinished tasks are exactly the entries of the queue streams (an entry goes with its
        // task's end): a few, where the index holds every task kept.
        if !query.states.is_empty() && query.states.iter().all(|s| !s.is_terminal()) {
            let mut ids = Vec::new();
            for queue in shared.all_queues().await? {
                let entries: redis::streams::StreamRangeReply = shared
                    .conn
                    .clone()
                    .xrange_all(shared.keys.queue(&queue))
                    .await
                    .map_err(|err| shared.error(err))?;
                ids.extend(
                    entries
                        .ids
                        .iter()
                        .filter_map(|entry| entry.get::<String>("id")),
                );
            }
            let mut seen = std::collections::HashSet::new();
            ids.retain(|id| seen.insert(id.clone()));
            let mut records = self.records(&ids).await?;
            records.retain(|r| r.matches(query));
            records.sort_by_key(|r| std::cmp::Reverse(r.queued_at));
            return Ok(records);
        }
        let max = query.queued_before.map_or_else(
            || "+inf".to_owned(),
            |t| format!("({}", t.timestamp_micros()),
        );
        let min = query
            .queued_after
            .map_or_else(|| "-inf".to_owned(), |t| t.timestamp_micros().to_string());
        let mut out = Vec::new();
        let mut start: isize = 0;
        loop {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(shared.keys.index())
                .arg(&max)
                .arg(&min)
                .arg("LIMIT")
                .arg(start)
                .arg(LIST_PAGE)
                .query_async(&mut shared.conn.clone())
                .await
                .map_err(|err| shared.error(err))?;
            if ids.is_empty() {
                return Ok(out);
            }
            start += LIST_PAGE;
            out.extend(
                self.records(&ids)
                    .await?
                    .into_iter()
                    .filter(|r| r.matches(query)),
            );
        }
    }

    /// The records of tasks `ids` still kept, in order, in one round trip.
    async fn records(&self, ids: &[String]) -> Result<Vec<TaskRecord>> {
        let shared = &self.shared;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET")
                .arg(format!("{}{id}", shared.keys.task_prefix()))
                .arg("record");
        }
        let records: Vec<Option<String>> = pipe
            .query_async(&mut shared.conn.clone())
            .await
            .map_err(|err| shared.error(err))?;
        records
            .into_iter()
            .flatten()
            .map(|json| decode(&json))
            .collect()
    }
}

#[async_trait]
impl TaskHistory for RedisBackend {
    async fn page(&self, query: &TaskQuery) -> Result<TaskPage> {
        query.validate()?;
        let mut records = self.matching(query).await?;
        // The index walk yields newest first already; any other order sorts in memory.
        if query.sort != TaskSort::Received || query.ascending {
            TaskRecord::sort_for(&mut records, query);
        }
        let total = records.len() as u64;
        let tasks = records
            .into_iter()
            .skip(query.offset as usize)
            .take(query.limit as usize)
            .collect();
        Ok(TaskPage { tasks, total })
    }

    async fn timeline(&self, id: TaskId) -> Result<Vec<TimelineEntry>> {
        let shared = &self.shared;
        let entries: Vec<String> = shared
            .conn
            .clone()
            .lrange(shared.keys.timeline(id), 0, -1)
            .await
            .map_err(|err| shared.error(err))?;
        entries
            .iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|err| {
                    HubError::Internal(format!("a stored timeline entry is not JSON: {err}"))
                })
            })
            .collect()
    }
}

#[async_trait]
impl TaskMonitor for RedisBackend {
    async fn stats(&self) -> Result<BackendStats> {
        let shared = &self.shared;
        let workers = worker::registered(shared).await?;
        let mut queues = Vec::new();
        for name in shared.all_queues().await? {
            queues.push(self.queue_info(name).await?);
        }
        let counts = self.kind_fields().await?;
        let minutes = self
            .minutes(Utc::now() - chrono::Duration::minutes(14))
            .await?;
        Ok(BackendStats::assemble(
            self.name(),
            workers,
            queues,
            kind_counts(&counts),
            &minutes,
            shared.feed.subscribers(),
        ))
    }

    async fn window(&self, since: DateTime<Utc>) -> Result<WindowData> {
        let shared = &self.shared;
        let minutes = self.minutes(since).await?;
        let members: Vec<String> = shared
            .conn
            .clone()
            .zrangebyscore(shared.keys.samples(), since.timestamp_millis(), "+inf")
            .await
            .map_err(|err| shared.error(err))?;
        let samples = members.iter().filter_map(|m| parse_sample(m)).collect();
        Ok(WindowData { minutes, samples })
    }

    async fn histograms(&self) -> Result<Vec<LatencyHistogram>> {
        Ok(histograms(&self.kind_fields().await?))
    }
}

impl RedisBackend {
    /// The all-time figures by kind, as stored (see [`Keys::kind_counts`]).
    async fn kind_fields(&self) -> Result<HashMap<String, i64>> {
        let shared = &self.shared;
        shared
            .conn
            .clone()
            .hgetall(shared.keys.kind_counts())
            .await
            .map_err(|err| shared.error(err))
    }

    /// One queue's depth, running tasks and oldest waiting task.
    async fn queue_info(&self, name: String) -> Result<QueueInfo> {
        let shared = &self.shared;
        let key = shared.keys.queue(&name);
        let length: u64 = shared
            .conn
            .clone()
            .xlen(&key)
            .await
            .map_err(|err| shared.error(err))?;
        // Entries delivered and not yet acknowledged: reserved or running.
        let delivered: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
            .arg(&key)
            .arg(GROUP)
            .query_async(&mut shared.conn.clone())
            .await;
        let (active, group_exists) = match delivered {
            Ok(redis::Value::Array(items)) => (
                items
                    .first()
                    .and_then(|count| redis::from_redis_value_ref::<u64>(count).ok())
                    .unwrap_or(0),
                true,
            ),
            Ok(_) => (0, true),
            // A queue no worker has read yet has no group.
            Err(err) if err.code() == Some("NOGROUP") => (0, false),
            Err(err) => return Err(shared.error(err)),
        };
        let pending = length.saturating_sub(active);
        // The oldest waiting entry is the first one after the group's last delivery; its
        // stream id is the time it was (re)queued.
        let oldest_queued_at = if pending == 0 {
            None
        } else {
            let after = if group_exists {
                self.last_delivered(&key).await?
            } else {
                None
            };
            let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
            let first: redis::streams::StreamRangeReply = shared
                .conn
                .clone()
                .xrange_count(&key, start, "+", 1)
                .await
                .map_err(|err| shared.error(err))?;
            first
                .ids
                .first()
                .and_then(|entry| entry.id.split('-').next()?.parse::<i64>().ok())
                .map(from_millis)
        };
        Ok(QueueInfo {
            name,
            pending,
            active,
            oldest_queued_at,
        })
    }

    /// The id of the entry the `workers` group last read from stream `key`.
    async fn last_delivered(&self, key: &str) -> Result<Option<String>> {
        let shared = &self.shared;
        let groups: redis::streams::StreamInfoGroupsReply = shared
            .conn
            .clone()
            .xinfo_groups(key)
            .await
            .map_err(|err| shared.error(err))?;
        Ok(groups
            .groups
            .into_iter()
            .find(|g| g.name == GROUP)
            .map(|g| g.last_delivered_id))
    }

    /// Counts by state for every minute from `since`'s to now's, oldest first.
    async fn minutes(&self, since: DateTime<Utc>) -> Result<Vec<MinuteCounts>> {
        let shared = &self.shared;
        let first = since.timestamp().div_euclid(60);
        let last = Utc::now().timestamp().div_euclid(60);
        let mut pipe = redis::pipe();
        for minute in first..=last {
            pipe.hgetall(shared.keys.minute(minute));
        }
        let counts: Vec<HashMap<String, u64>> = pipe
            .query_async(&mut shared.conn.clone())
            .await
            .map_err(|err| shared.error(err))?;
        Ok((first..=last)
            .zip(counts)
            .map(|(minute, fields)| {
                let mut counts = MinuteCounts {
                    minute: from_millis(minute * 60_000),
                    ..MinuteCounts::default()
                };
                for (state, count) in fields {
                    if let Ok(state) = state.parse::<TaskState>() {
                        counts.add(state, count);
                    }
                }
                counts
            })
            .collect())
    }
}

/// Latency histograms from the `kind|run:<bucket>`, `kind|wait:<bucket>`, `kind|runtime_ms`
/// and `kind|wait_ms` fields.
fn histograms(fields: &HashMap<String, i64>) -> Vec<LatencyHistogram> {
    let mut by_key: HashMap<(&str, Latency), LatencyHistogram> = HashMap::new();
    for (field, value) in fields {
        let Some((kind, what)) = field.rsplit_once('|') else {
            continue;
        };
        let (latency, bucket) = match what.split_once(':') {
            Some(("run", bucket)) => (Latency::Runtime, bucket.parse::<usize>().ok()),
            Some(("wait", bucket)) => (Latency::Wait, bucket.parse::<usize>().ok()),
            _ => continue,
        };
        let n = u64::try_from(*value).unwrap_or(0);
        let histogram = by_key
            .entry((kind, latency))
            .or_insert_with(|| LatencyHistogram::new(kind, latency));
        if let Some(slot) = bucket.and_then(|b| histogram.buckets.get_mut(b)) {
            *slot += n;
        }
    }
    for ((kind, latency), histogram) in &mut by_key {
        let sum_field = match latency {
            Latency::Runtime => format!("{kind}|runtime_ms"),
            Latency::Wait => format!("{kind}|wait_ms"),
        };
        histogram.sum = fields.get(&sum_field).copied().unwrap_or(0) as f64 / 1000.0;
    }
    let mut out: Vec<LatencyHistogram> = by_key.into_values().collect();
    out.sort_by(|a, b| (&a.kind, a.latency.as_str()).cmp(&(&b.kind, b.latency.as_str())));
    out
}

/// Counts by kind from the `kind|STATE` and `kind|runtime_ms` fields.
fn kind_counts(fields: &HashMap<String, i64>) -> Vec<KindCounts> {
    let mut by_kind: HashMap<&str, (KindCounts, i64)> = HashMap::new();
    for (field, value) in fields {
        let Some((kind, what)) = field.rsplit_once('|') else {
            continue;
        };
        let (counts, runtime) = by_kind.entry(kind).or_insert_with(|| {
            (
                KindCounts {
                    kind: kind.to_owned(),
                    ..KindCounts::default()
                },
                0,
            )
        });
        let n = u64::try_from(*value).unwrap_or(0);
        match what {
            "SUCCESS" => counts.succeeded += n,
            "FAILURE" => counts.failed += n,
            "REVOKED" => counts.revoked += n,
            "runtime_ms" => *runtime += *value,
            _ => {}
        }
    }
    let mut kinds: Vec<KindCounts> = by_kind
        .into_values()
        .map(|(counts, runtime_ms)| counts.with_total_runtime_ms(runtime_ms))
        .collect();
    kinds.sort_by(|a, b| a.kind.cmp(&b.kind));
    kinds
}

/// A timeline entry for `record` as stored.
fn timeline_entry(record: &TaskRecord, at: DateTime<Utc>) -> Result<String> {
    serde_json::to_string(&TimelineEntry::of(record, at))
        .map_err(|err| HubError::Internal(format!("cannot encode a timeline entry: {err}")))
}

/// What a terminal write adds to the figures, as the transition script takes it: its sample
/// member, its histogram bucket fields ('' when it never started), and its worker's outcome
/// field.
#[derive(Debug, Default)]
struct FinishFigures {
    sample: String,
    runtime_bucket: String,
    wait_bucket: String,
    worker_outcome: &'static str,
}

impl FinishFigures {
    fn of(finished: &Finished) -> Self {
        let worker_outcome = finished.worker_tally().map_or("", |(_, tally)| tally);
        let ms = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let (runtime_bucket, wait_bucket) =
            finished
                .buckets()
                .map_or_else(Default::default, |(run, wait)| {
                    (
                        format!("{}|run:{run}", finished.kind),
                        format!("{}|wait:{wait}", finished.kind),
                    )
                });
        FinishFigures {
            sample: format!(
                "{}|{}|{}|{}|{}",
                finished.finished_ms,
                finished.state.as_str(),
                ms(finished.runtime_ms),
                ms(finished.wait_ms),
                finished.kind
            ),
            runtime_bucket,
            wait_bucket,
            worker_outcome,
        }
    }
}

/// A sample member (`finish ms|STATE|runtime ms|wait ms|kind`) read back.
fn parse_sample(member: &str) -> Option<FinishedSample> {
    let mut parts = member.splitn(5, '|');
    let finished_ms: i64 = parts.next()?.parse().ok()?;
    let state: TaskState = parts.next()?.parse().ok()?;
    let runtime_ms = parts.next()?.parse().ok();
    let wait_ms = parts.next()?.parse().ok();
    Some(FinishedSample {
        finished_at: from_millis(finished_ms),
        kind: parts.next()?.to_owned(),
        state,
        runtime_ms,
        wait_ms,
    })
}

/// A Unix-milliseconds field as a time (the epoch when unreadable).
fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let settings = RedisSettings::new("redis://:s3cret@cache.internal:6380/2");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("redis://***@cache.internal:6380/2"),
            "{shown}"
        );
        let plain = format!("{:?}", RedisSettings::new("redis://127.0.0.1:6379/0"));
        assert!(plain.contains("redis://127.0.0.1:6379/0"), "{plain}");
    }

    #[test]
    fn counts_by_kind_come_from_their_fields() {
        let fields: HashMap<String, i64> = [
            ("start_project|SUCCESS", 3),
            ("start_project|FAILURE", 1),
            ("start_project|runtime_ms", 8000),
            ("stop_project|REVOKED", 2),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let kinds = kind_counts(&fields);
        assert_eq!(kinds.len(), 2);
        assert_eq!(kinds[0].kind, "start_project");
        assert_eq!((kinds[0].succeeded, kinds[0].failed), (3, 1));
        assert!((kinds[0].mean_runtime - 2.0).abs() < 1e-9);
        assert_eq!(kinds[1].revoked, 2);
    }
}
