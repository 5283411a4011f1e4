//! The behaviour suite of task backends: every case takes a [`Fixture`] that opens hubs on one
//! backend, and `tests/backends.rs` runs every case unchanged against every backend there is.
//! A new backend adds one line there.
//!
//! Cases that open several hubs on one store stand for several processes: each hub has its own
//! worker id, writer, event pump and memory, and shares only the store.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)] // test helpers panic on setup failure by design

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hub_core::monitor::{AlertKind, AlertThresholds, MonitorConfig};
use hub_core::registry::StatusChange;
use hub_core::tasks::{
    BackendFactory, CancelReason, EventCursor, Handlers, JobHandler, JobOptions, JobRequest,
    JobResult, LocalBackendFactory, MAX_LIST_LIMIT, Retryable, TaskConfig, TaskContext, TaskError,
    TaskEvent, TaskId, TaskQuery, TaskRecord, TaskSort, TaskState, codes,
};
use hub_core::{ErrorCode, Health, Hub, HubConfig, HubMode, NewProject, ProjectStatus};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Mutex, Notify};

/// Opens the backend of the store in a test's folder.
type FactoryFor = dyn Fn(&std::path::Path) -> Arc<dyn BackendFactory> + Send + Sync;

/// Opens hubs on one backend; several hubs opened on the same folder share one store.
#[derive(Clone)]
pub struct Fixture {
    name: &'static str,
    factory: Arc<FactoryFor>,
    /// The registry's database is PostgreSQL (one database per test folder), not SQLite.
    postgres: bool,
}

impl Fixture {
    /// The in-process backend on a SQLite file in the test's folder.
    pub fn in_process() -> Self {
        Fixture {
            name: "in_process",
            factory: Arc::new(|_| Arc::new(LocalBackendFactory)),
            postgres: false,
        }
    }

    /// The in-process backend with its store on the test PostgreSQL server.
    pub fn in_process_on_postgres() -> Self {
        Fixture {
            postgres: true,
            ..Self::in_process()
        }
    }

    /// The Redis backend on the test Redis, under a key prefix of the test's folder.
    #[cfg(feature = "redis")]
    pub fn redis() -> Self {
        let url = redis_server::url();
        Fixture {
            name: "redis",
            factory: Arc::new(move |dir| {
                let folder = dir
                    .parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Arc::new(hub_core::tasks::RedisBackendFactory::new(
                    hub_core::tasks::RedisSettings::new(url.clone())
                        .prefix(format!("suite:{folder}:")),
                ))
            }),
            postgres: false,
        }
    }

    /// The backend of the store kept in `state_dir`.
    fn factory_for(&self, state_dir: &std::path::Path) -> SharedFactory {
        SharedFactory((self.factory)(state_dir))
    }

    /// The configuration of a hub whose state lives in the test folder `dir`.
    async fn config(&self, dir: &std::path::Path, tasks: TaskConfig, mode: HubMode) -> HubConfig {
        let mut config = HubConfig::with_data_dir(dir.join("state"))
            .tasks(tasks)
            .mode(mode);
        if self.postgres {
            config = config.database_url(crate::postgres::database(dir).await);
        }
        // No engine is needed here, and none is asked.
        config.reconcile_on_open = false;
        config
    }

    /// A hub in `mode` with monitoring settings `monitor`.
    pub async fn open_monitored(
        &self,
        dir: &TempDir,
        tasks: TaskConfig,
        handlers: Handlers,
        mode: HubMode,
        monitor: MonitorConfig,
    ) -> Hub {
        let mut config = self.config(dir.path(), tasks, mode).await;
        config.monitor = monitor;
        Hub::builder(config)
            .handlers(handlers)
            .task_backend(self.factory_for(&dir.path().join("state")))
            .open()
            .await
            .unwrap()
    }

    /// A hub that only submits and reads (a client process), with default settings.
    pub async fn client(&self, dir: &TempDir) -> Hub {
        self.open_as(dir, TaskConfig::default(), Handlers::new(), HubMode::Client)
            .await
    }

    /// A hub that submits and runs tasks.
    pub async fn open(&self, dir: &TempDir, tasks: TaskConfig, handlers: Handlers) -> Hub {
        self.open_as(dir, tasks, handlers, HubMode::Embedded).await
    }

    /// A hub in `mode` (one "process" sharing the store).
    pub async fn open_as(
        &self,
        dir: &TempDir,
        tasks: TaskConfig,
        handlers: Handlers,
        mode: HubMode,
    ) -> Hub {
        let hub = Hub::builder(self.config(dir.path(), tasks, mode).await)
            .handlers(handlers)
            .task_backend(self.factory_for(&dir.path().join("state")))
            .open()
            .await
            .unwrap();
        assert_eq!(hub.task_backend().name(), self.name);
        hub
    }
}

/// The Redis the suite runs against: `HUB_TEST_REDIS_URL` when set (the test command starts
/// one), else a `redis-server` started for this test binary, stopped when it exits.
#[cfg(feature = "redis")]
pub mod redis_server {
    use std::sync::OnceLock;

    static URL: OnceLock<String> = OnceLock::new();

    pub fn url() -> String {
        URL.get_or_init(|| {
            if let Ok(url) = std::env::var("HUB_TEST_REDIS_URL") {
                return url;
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            // A watchdog stops the server once this process is gone; it outlives this process
            // by design, so it is never waited for.
            let script = format!(
                "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no \
                 --loglevel warning & server=$!; \
                 while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $server",
                parent = std::process::id()
            );
            #[allow(clippy::zombie_processes)]
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (Debian package redis-server) on PATH");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return format!("redis://127.0.0.1:{port}/0");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            panic!("redis-server did not start on port {port}");
        })
        .clone()
    }
}

/// A factory shared between hubs of one test.
struct SharedFactory(Arc<dyn BackendFactory>);

#[async_trait::async_trait]
impl BackendFactory for SharedFactory {
    async fn open(
        &self,
        context: hub_core::tasks::BackendContext,
    ) -> hub_core::Result<Arc<dyn hub_core::tasks::TaskBackend>> {
        self.0.open(context).await
    }
}

/// Short leases, so that lost workers are noticed within a test's patience.
fn short_leases(tasks: TaskConfig) -> TaskConfig {
    TaskConfig {
        lease: Duration::from_millis(1000),
        heartbeat: Duration::from_millis(200),
        ..tasks
    }
}

fn job(kind: &str) -> JobRequest {
    JobRequest::new(kind, json!({}))
}

async fn noop(_: TaskContext, _: Value) -> Result<Value, TaskError> {
    Ok(json!(null))
}

/// Polls until the task is terminal (10 s at most).
async fn wait_done(hub: &Hub, id: TaskId) -> TaskRecord {
    for _ in 0..1000 {
        let record = hub.task(id).await.unwrap();
        if record.ready() {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} did not finish");
}

/// Polls until the task reaches `state` (5 s at most).
async fn wait_state(hub: &Hub, id: TaskId, state: TaskState) {
    for _ in 0..500 {
        if hub.task(id).await.unwrap().state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} never reached {state}");
}

/// Events of task `id` until its terminal one.
async fn events_until_done(
    subscription: &mut hub_core::tasks::EventSubscription,
    id: TaskId,
) -> Vec<TaskEvent> {
    let mut events = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), subscription.recv())
            .await
            .expect("event in time")
            .expect("stream open");
        if event.task.id != id {
            continue;
        }
        let done = event.task.ready();
        events.push(event);
        if done {
            return events;
        }
    }
}

pub async fn a_job_lives_through_its_states_with_progress_events_in_order(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers =
        Handlers::new().register("build", |ctx: TaskContext, payload: Value| async move {
            ctx.progress(TaskState::Building, 10, "Initializing...")
                .await?;
            ctx.progress(TaskState::Building, 30, "Building containers...")
                .await?;
            ctx.progress(TaskState::Running, 80, "Starting services...")
                .await?;
            Ok(json!({"echo": payload["n"]}))
        });
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let mut events = hub.subscribe(None).await.unwrap();
    let id = hub
        .submit(JobRequest::new("build", json!({"n": 7})).project(42))
        .await
        .unwrap();

    let events = events_until_done(&mut events, id).await;
    let states: Vec<TaskState> = events.iter().map(|e| e.task.state).collect();
    assert_eq!(
        states,
        [
            TaskState::Pending,
            TaskState::Started,
            TaskState::Building,
            TaskState::Building,
            TaskState::Running,
            TaskState::Success
        ]
    );
    let progress: Vec<u8> = events.iter().map(|e| e.task.progress).collect();
    assert_eq!(progress, [0, 0, 10, 30, 80, 100]);
    let steps: Vec<Option<&str>> = events.iter().map(|e| e.task.status.as_deref()).collect();
    assert_eq!(steps[3], Some("Building containers..."));
    assert!(events.windows(2).all(|w| w[1].seq > w[0].seq));
    let ready: Vec<bool> = events.iter().map(|e| e.task.ready()).collect();
    assert_eq!(ready, [false, false, false, false, false, true]);

    let record = hub.task(id).await.unwrap();
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.result, Some(json!({"echo": 7})));
    assert_eq!(record.project_id, Some(42));
    assert_eq!(record.kind, "build");
    assert_eq!(record.queue, "default");
    assert_eq!(record.attempt, 1);
    let worker = record.worker.clone().unwrap();
    assert!(worker.starts_with("embedded@"), "{worker}");
    assert!(record.started_at.is_some() && record.finished_at.is_some());
    assert!(record.runtime().unwrap() >= 0.0);
}

pub async fn a_failing_handler_ends_in_failure_with_its_error_kept(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register("fail", |ctx: TaskContext, _: Value| async move {
        ctx.progress(TaskState::Building, 40, "half way").await?;
        Err(TaskError::new(
            "port_in_use",
            "Frontend port 3010 is in use",
        ))
    });
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let id = hub.submit(job("fail")).await.unwrap();
    let record = wait_done(&hub, id).await;
    assert_eq!(record.state, TaskState::Failure);
    assert!(record.ready());
    let error = record.error.unwrap();
    assert_eq!(error.code, "port_in_use");
    assert_eq!(error.message, "Frontend port 3010 is in use");
    // Progress does not go backwards on failure.
    assert_eq!(record.progress, 40);
    assert_eq!(record.result, None);

    // Also once it is only in the database.
    let listed = hub.tasks(&TaskQuery::default()).await.unwrap();
    assert_eq!(listed[0].error.as_ref().unwrap().code, "port_in_use");
    let stored = hub.task(id).await.unwrap();
    assert_eq!(stored.state, TaskState::Failure);
}

pub async fn a_panicking_handler_fails_the_task_not_the_worker(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new()
        .register("panic", |_: TaskContext, _: Value| async move {
            if true {
                panic!("boom");
            }
            Ok(json!(null))
        })
        .register("noop", noop);
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let id = hub.submit(job("panic")).await.unwrap();
    let record = wait_done(&hub, id).await;
    assert_eq!(record.state, TaskState::Failure);
    assert_eq!(record.error.as_ref().unwrap().code, codes::PANIC);
    assert!(record.error.unwrap().message.contains("boom"));
    // The worker goes on.
    let next = hub.submit(job("noop")).await.unwrap();
    assert_eq!(wait_done(&hub, next).await.state, TaskState::Success);
}

pub async fn an_unknown_task_id_is_not_found_never_pending(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let hub = backend
        .open(&dir, TaskConfig::default(), Handlers::new())
        .await;
    let err = hub.task(uuid::Uuid::new_v4()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    let err = hub.revoke(uuid::Uuid::new_v4(), true).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

pub async fn a_job_without_a_handler_is_refused_at_enqueue(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let hub = backend
        .open(&dir, TaskConfig::default(), Handlers::new())
        .await;
    let err = hub.submit(job("nope")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    assert_eq!(err.field(), Some("kind"));
    assert!(hub.tasks(&TaskQuery::default()).await.unwrap().is_empty());
}

pub async fn two_workers_never_run_three_handlers_at_once(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let handlers = Handlers::new().register("work", move |_: TaskContext, _: Value| {
        let (running, peak) = (r.clone(), p.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(60)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(json!(null))
        }
    });
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(hub.submit(job("work")).await.unwrap());
    }
    for id in ids {
        assert_eq!(wait_done(&hub, id).await.state, TaskState::Success);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "both workers used, never more"
    );
}

pub async fn tasks_run_in_fifo_order(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let handlers = Handlers::new().register("record", move |_: TaskContext, payload: Value| {
        let order = o.clone();
        async move {
            order.lock().await.push(payload["i"].as_u64().unwrap());
            Ok(json!(null))
        }
    });
    let tasks = TaskConfig {
        concurrency: 1,
        ..TaskConfig::default()
    };
    let hub = backend.open(&dir, tasks, handlers).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            hub.submit(JobRequest::new("record", json!({"i": i})))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        wait_done(&hub, *id).await;
    }
    assert_eq!(*order.lock().await, (0..20).collect::<Vec<u64>>());
}

/// A handler that blocks until released (or cancelled), reporting what it saw.
#[derive(Clone, Default)]
struct Gate {
    release: Arc<Notify>,
    started: Arc<AtomicUsize>,
    saw_cancel: Arc<Mutex<Option<CancelReason>>>,
}

impl Gate {
    fn handlers(&self) -> Handlers {
        let gate = self.clone();
        Handlers::new()
            .register("gate", move |ctx: TaskContext, _: Value| {
                let gate = gate.clone();
                async move {
                    gate.started.fetch_add(1, Ordering::SeqCst);
                    ctx.progress(TaskState::Running, 50, "waiting").await?;
                    tokio::select! {
                        () = gate.release.notified() => Ok(json!("released")),
                        () = ctx.cancelled() => {
                            *gate.saw_cancel.lock().await = ctx.cancel_reason();
                            Err(TaskError::new("cancelled", "stopped early"))
                        }
                    }
                }
            })
            .register("stubborn", |_: TaskContext, _: Value| async move {
                // Ignores cancellation entirely.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(json!(null))
            })
            .register("noop", noop)
    }
}

pub async fn a_task_revoked_before_it_starts_never_runs(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let tasks = TaskConfig {
        concurrency: 1,
        ..TaskConfig::default()
    };
    let hub = backend.open(&dir, tasks, gate.handlers()).await;
    let first = hub.submit(job("gate")).await.unwrap();
    let second = hub.submit(job("gate")).await.unwrap();
    wait_state(&hub, first, TaskState::Running).await;

    let revoked = hub.revoke(second, false).await.unwrap();
    assert_eq!(revoked.state, TaskState::Revoked);
    assert!(revoked.ready());

    gate.release.notify_one();
    assert_eq!(wait_done(&hub, first).await.state, TaskState::Success);
    // Give the worker the chance to (wrongly) pick the revoked task up.
    let after = hub.submit(job("noop")).await.unwrap();
    wait_done(&hub, after).await;
    assert_eq!(gate.started.load(Ordering::SeqCst), 1);
    assert_eq!(hub.task(second).await.unwrap().state, TaskState::Revoked);
}

pub async fn revoking_a_running_task_with_terminate_cancels_its_handler(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let hub = backend
        .open(&dir, TaskConfig::default(), gate.handlers())
        .await;
    let id = hub.submit(job("gate")).await.unwrap();
    wait_state(&hub, id, TaskState::Running).await;

    // Without terminate a running task is left to finish (Celery's rule).
    let still = hub.revoke(id, false).await.unwrap();
    assert_eq!(still.state, TaskState::Running);

    hub.revoke(id, true).await.unwrap();
    let record = wait_done(&hub, id).await;
    assert_eq!(record.state, TaskState::Revoked);
    assert_eq!(*gate.saw_cancel.lock().await, Some(CancelReason::Revoked));
}

pub async fn a_handler_that_ignores_revoke_is_aborted_after_the_grace_period(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let tasks = TaskConfig {
        revoke_grace: Duration::from_millis(200),
        ..TaskConfig::default()
    };
    let hub = backend.open(&dir, tasks, Gate::default().handlers()).await;
    let id = hub.submit(job("stubborn")).await.unwrap();
    wait_state(&hub, id, TaskState::Started).await;
    let asked = std::time::Instant::now();
    hub.revoke(id, true).await.unwrap();
    let record = wait_done(&hub, id).await;
    assert_eq!(record.state, TaskState::Revoked);
    assert!(asked.elapsed() >= Duration::from_millis(200));
    assert!(asked.elapsed() < Duration::from_secs(5));
}

pub async fn soft_time_limit_cancels_the_handler_with_its_reason(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let hub = backend
        .open(&dir, TaskConfig::default(), gate.handlers())
        .await;
    let options = JobOptions {
        soft_time_limit: Some(Duration::from_millis(150)),
        ..JobOptions::default()
    };
    let id = hub.submit(job("gate").options(options)).await.unwrap();
    let record = wait_done(&hub, id).await;
    assert_eq!(
        *gate.saw_cancel.lock().await,
        Some(CancelReason::SoftTimeLimit)
    );
    // The handler chose to give up: its error is kept.
    assert_eq!(record.state, TaskState::Failure);
    assert_eq!(record.error.unwrap().code, "cancelled");
    assert_eq!(record.limits.soft, Duration::from_millis(150));
}

pub async fn hard_time_limit_aborts_the_handler(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let hub = backend
        .open(&dir, TaskConfig::default(), Gate::default().handlers())
        .await;
    let options = JobOptions {
        soft_time_limit: Some(Duration::from_millis(100)),
        hard_time_limit: Some(Duration::from_millis(300)),
        ..JobOptions::default()
    };
    let started = std::time::Instant::now();
    let id = hub.submit(job("stubborn").options(options)).await.unwrap();
    let record = wait_done(&hub, id).await;
    assert_eq!(record.state, TaskState::Failure);
    assert_eq!(record.error.unwrap().code, codes::TIME_LIMIT);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
}

pub async fn expired_results_are_swept_but_history_counters_stay(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let tasks = TaskConfig {
        result_expires: Duration::from_millis(300),
        sweep_interval: Duration::from_millis(100),
        ..TaskConfig::default()
    };
    let handlers = Handlers::new()
        .register("noop", noop)
        .register("fail", |_: TaskContext, _: Value| async move {
            Err(TaskError::new("nope", "nope"))
        });
    let hub = backend.open(&dir, tasks, handlers).await;
    let ok = hub.submit(job("noop")).await.unwrap();
    let failed = hub.submit(job("fail")).await.unwrap();
    wait_done(&hub, ok).await;
    wait_done(&hub, failed).await;

    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if hub.task(ok).await.is_err() && hub.task(failed).await.is_err() {
            gone = true;
            break;
        }
    }
    assert!(gone, "expired records were not swept");
    assert_eq!(hub.task(ok).await.unwrap_err().code(), ErrorCode::NotFound);
    let stats = hub.task_stats().await.unwrap();
    let noop = stats.kinds.iter().find(|k| k.kind == "noop").unwrap();
    let fail = stats.kinds.iter().find(|k| k.kind == "fail").unwrap();
    assert_eq!((noop.succeeded, noop.failed), (1, 0));
    assert_eq!((fail.succeeded, fail.failed), (0, 1));
    assert_eq!(stats.finished_last_minute, 2);
}

/// Handlers for the restart test: `hang` never finishes, `mark` records that it ran.
fn restart_handlers(ran: Arc<AtomicUsize>) -> Handlers {
    Handlers::new()
        .register("hang", |ctx: TaskContext, _: Value| async move {
            ctx.progress(TaskState::Building, 20, "hanging").await?;
            std::future::pending::<()>().await;
            Ok(json!(null))
        })
        .register("mark", move |_: TaskContext, _: Value| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(json!("ran"))
            }
        })
}

pub async fn after_a_crash_queued_tasks_rerun_and_running_ones_end_once_their_lease_expires(
    backend: &Fixture,
) {
    let dir = TempDir::new().unwrap();
    let tasks = TaskConfig {
        concurrency: 1,
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(200),
        ..TaskConfig::default()
    };
    let ran = Arc::new(AtomicUsize::new(0));

    // First life: one task hangs in a worker, two wait behind it. Then the process "dies":
    // the hub is dropped without a shutdown, its workers and heartbeat with it.
    let hub = backend
        .open(&dir, tasks.clone(), restart_handlers(ran.clone()))
        .await;
    let hanging = hub.submit(job("hang")).await.unwrap();
    let queued = vec![
        hub.submit(job("mark")).await.unwrap(),
        hub.submit(job("mark")).await.unwrap(),
    ];
    wait_state(&hub, hanging, TaskState::Building).await;
    // Listing flushes the writer, as time would.
    hub.tasks(&TaskQuery::default()).await.unwrap();
    drop(hub);
    let died = std::time::Instant::now();
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    let hub = backend
        .open(&dir, tasks, restart_handlers(ran.clone()))
        .await;
    // Until the lease runs out, nobody may assume the worker is gone.
    let still = hub.task(hanging).await.unwrap();
    if died.elapsed() < Duration::from_millis(1500) {
        assert_eq!(still.state, TaskState::Building);
    }
    let interrupted = wait_done(&hub, hanging).await;
    // The lease runs from the last renewal, at most one heartbeat before the crash.
    assert!(
        died.elapsed() >= Duration::from_millis(1800),
        "reclaimed before the lease expired"
    );
    assert_eq!(interrupted.state, TaskState::Failure);
    assert_eq!(interrupted.error.unwrap().code, codes::INTERRUPTED);
    for id in &queued {
        let record = wait_done(&hub, *id).await;
        assert_eq!(record.state, TaskState::Success);
        assert_eq!(record.result, Some(json!("ran")));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    hub.close().await;
}

pub async fn graceful_shutdown_lets_quick_tasks_finish_and_interrupts_the_rest(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let tasks = TaskConfig {
        concurrency: 2,
        shutdown_grace: Duration::from_millis(300),
        ..TaskConfig::default()
    };
    let handlers = Handlers::new()
        .register("quick", |_: TaskContext, _: Value| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(json!("done"))
        })
        .register("hang", |_: TaskContext, _: Value| async move {
            std::future::pending::<()>().await;
            Ok(json!(null))
        });
    let hub = backend.open(&dir, tasks.clone(), handlers.clone()).await;
    let quick = hub.submit(job("quick")).await.unwrap();
    let hang = hub.submit(job("hang")).await.unwrap();
    let waiting = hub.submit(job("quick")).await.unwrap();
    wait_state(&hub, hang, TaskState::Started).await;
    hub.close().await;

    let hub = backend.open(&dir, tasks, handlers).await;
    assert_eq!(hub.task(quick).await.unwrap().state, TaskState::Success);
    let hung = hub.task(hang).await.unwrap();
    assert_eq!(hung.state, TaskState::Failure);
    assert_eq!(hung.error.unwrap().code, codes::INTERRUPTED);
    // Queued but never started: it runs in the next life.
    assert_eq!(wait_done(&hub, waiting).await.state, TaskState::Success);
}

pub async fn five_long_jobs_across_projects_all_progress_together(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register("long", |ctx: TaskContext, _: Value| async move {
        for step in 1..=5u8 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            ctx.progress(TaskState::Running, step * 20, format!("step {step}/5"))
                .await?;
        }
        Ok(json!(null))
    });
    let tasks = TaskConfig {
        concurrency: 5,
        ..TaskConfig::default()
    };
    let hub = backend.open(&dir, tasks, handlers).await;
    let mut subscription = hub.subscribe(None).await.unwrap();
    let mut ids = Vec::new();
    for project in 1..=5 {
        ids.push(hub.submit(job("long").project(project)).await.unwrap());
    }
    // Track every task's progress; count how many were mid-flight at once.
    let mut progress = std::collections::HashMap::<TaskId, Vec<u8>>::new();
    let mut peak_in_flight = 0;
    let mut finished = 0;
    while finished < ids.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), subscription.recv())
            .await
            .unwrap()
            .unwrap();
        let task = &event.task;
        if task.state == TaskState::Running {
            progress.entry(task.id).or_default().push(task.progress);
        }
        if task.ready() {
            finished += 1;
            assert_eq!(task.state, TaskState::Success);
        }
        let in_flight = progress
            .iter()
            .filter(|(_, p)| p.last().is_some_and(|last| *last < 100))
            .count();
        peak_in_flight = peak_in_flight.max(in_flight);
    }
    assert_eq!(peak_in_flight, 5, "all five progressed side by side");
    for id in &ids {
        assert_eq!(progress[id], [20, 40, 60, 80, 100]);
    }
    let projects: Vec<Option<i64>> = {
        let mut all: Vec<_> = hub
            .tasks(&TaskQuery::default())
            .await
            .unwrap()
            .iter()
            .map(|t| t.project_id)
            .collect();
        all.sort();
        all
    };
    assert_eq!(projects, (1..=5).map(Some).collect::<Vec<_>>());
}

pub async fn progress_never_goes_back_and_nothing_changes_after_the_end(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let late = Arc::new(Mutex::new(None::<TaskContext>));
    let l = late.clone();
    let handlers = Handlers::new().register("zigzag", move |ctx: TaskContext, _: Value| {
        let late = l.clone();
        async move {
            ctx.progress(TaskState::Running, 80, "high").await?;
            ctx.progress(TaskState::Building, 30, "lower").await?;
            assert!(ctx.progress(TaskState::Success, 100, "no").await.is_err());
            *late.lock().await = Some(ctx);
            Ok(json!(null))
        }
    });
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let mut subscription = hub.subscribe(None).await.unwrap();
    let id = hub.submit(job("zigzag")).await.unwrap();
    let events = events_until_done(&mut subscription, id).await;
    let progress: Vec<u8> = events.iter().map(|e| e.task.progress).collect();
    assert!(progress.windows(2).all(|w| w[1] >= w[0]), "{progress:?}");
    assert_eq!(events[3].task.progress, 80);
    assert_eq!(events[3].task.status.as_deref(), Some("lower"));

    // A context kept past the end cannot change the finished task.
    let ctx = late.lock().await.take().unwrap();
    ctx.progress(TaskState::Running, 90, "too late")
        .await
        .unwrap();
    let record = hub.task(id).await.unwrap();
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.progress, 100);
}

pub async fn an_exclusive_key_allows_one_unfinished_task_at_a_time(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let hub = backend
        .open(&dir, TaskConfig::default(), gate.handlers())
        .await;
    let exclusive = |key: &str| JobOptions {
        exclusive_key: Some(key.into()),
        ..JobOptions::default()
    };
    let first = hub
        .submit(job("gate").options(exclusive("project:1")))
        .await
        .unwrap();
    let err = hub
        .submit(job("gate").options(exclusive("project:1")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    // Another key is independent.
    let other = hub
        .submit(job("noop").options(exclusive("project:2")))
        .await
        .unwrap();
    wait_done(&hub, other).await;

    wait_state(&hub, first, TaskState::Running).await;
    gate.release.notify_one();
    wait_done(&hub, first).await;
    let again = hub
        .submit(job("noop").options(exclusive("project:1")))
        .await
        .unwrap();
    assert_eq!(wait_done(&hub, again).await.state, TaskState::Success);
}

pub async fn concurrent_exclusive_submits_let_exactly_one_through(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let hub = backend
        .open(&dir, TaskConfig::default(), Gate::default().handlers())
        .await;
    let mut handles = Vec::new();
    for _ in 0..10 {
        let hub = hub.clone();
        handles.push(tokio::spawn(async move {
            hub.submit(job("gate").options(JobOptions {
                exclusive_key: Some("project:7".into()),
                ..JobOptions::default()
            }))
            .await
        }));
    }
    let mut accepted = 0;
    for handle in handles {
        match handle.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(err) => assert_eq!(err.code(), ErrorCode::Conflict),
        }
    }
    assert_eq!(accepted, 1);
}

pub async fn tasks_can_be_listed_and_filtered(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new()
        .register("noop", noop)
        .register("fail", |_: TaskContext, _: Value| async move {
            Err(TaskError::new("x", "x"))
        });
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let before = chrono::Utc::now();
    let mut ids = Vec::new();
    for i in 0..6 {
        let kind = if i % 3 == 0 { "fail" } else { "noop" };
        ids.push(hub.submit(job(kind).project(i % 2)).await.unwrap());
    }
    for id in &ids {
        wait_done(&hub, *id).await;
    }
    let all = hub.tasks(&TaskQuery::default()).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].id, ids[5], "newest first");

    let failed = hub
        .tasks(&TaskQuery {
            states: vec![TaskState::Failure],
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    let noop_in_project_1 = hub
        .tasks(&TaskQuery {
            kind: Some("noop".into()),
            project_id: Some(1),
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(noop_in_project_1.len(), 2);
    let page = hub
        .tasks(&TaskQuery {
            limit: 2,
            offset: 1,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|t| t.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let none = hub
        .tasks(&TaskQuery {
            queued_before: Some(before),
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let stats = hub.task_stats().await.unwrap();
    assert_eq!(stats.workers.len(), 1, "one process: {:?}", stats.workers);
    assert_eq!(stats.workers[0].concurrency, 2);
    assert!(stats.workers[0].online);
    assert_eq!(stats.workers[0].processed, 6);
    assert_eq!(stats.queues[0].name, "default");
}

/// Handlers for the monitoring cases: `ok` sleeps its payload's `ms`, `fail` fails with its
/// payload's `message`, `gate` waits to be released or revoked.
fn monitored_handlers(gate: &Gate) -> Handlers {
    gate.handlers()
        .register("ok", |ctx: TaskContext, payload: Value| async move {
            ctx.progress(TaskState::Building, 30, "Building the thing")
                .await?;
            let ms = payload["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ctx.progress(TaskState::Running, 70, "Running the thing")
                .await?;
            Ok(json!({"slept": ms}))
        })
        .register("fail", |_: TaskContext, payload: Value| async move {
            Err(TaskError::new(
                "broken",
                payload["message"].as_str().unwrap_or("failed"),
            ))
        })
}

pub async fn monitoring_counts_and_rates_match_a_known_mix_of_outcomes(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let hub = backend
        .open(&dir, TaskConfig::default(), monitored_handlers(&gate))
        .await;
    let mut ids = Vec::new();
    for ms in [10, 20, 30, 40, 50, 60] {
        ids.push(
            hub.submit(JobRequest::new("ok", json!({ "ms": ms })))
                .await
                .unwrap(),
        );
    }
    for _ in 0..2 {
        ids.push(
            hub.submit(JobRequest::new("fail", json!({"message": "no"})))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        wait_done(&hub, *id).await;
    }
    for _ in 0..2 {
        let id = hub.submit(job("gate")).await.unwrap();
        wait_state(&hub, id, TaskState::Running).await;
        hub.revoke(id, true).await.unwrap();
        assert_eq!(wait_done(&hub, id).await.state, TaskState::Revoked);
    }

    let stats = hub.monitor_stats(Duration::from_secs(900)).await.unwrap();
    assert_eq!(
        (stats.finished, stats.succeeded, stats.failed, stats.revoked),
        (10, 6, 2, 2)
    );
    assert!(
        (stats.failure_rate - 0.2).abs() < 1e-9,
        "{}",
        stats.failure_rate
    );
    assert!((stats.success_rate - 0.6).abs() < 1e-9);
    assert!((stats.throughput_per_minute - 10.0 / 15.0).abs() < 1e-9);
    let per_minute: u64 = stats
        .minutes
        .iter()
        .map(|m| m.succeeded + m.failed + m.revoked)
        .sum();
    assert_eq!(per_minute, 10, "{:?}", stats.minutes);
    assert_eq!(
        stats.minutes.len(),
        16,
        "every minute of the window, both ends"
    );
    let ok = stats.kinds.iter().find(|k| k.kind == "ok").unwrap();
    assert_eq!(
        (ok.succeeded, ok.runtime.count, ok.queue_wait.count),
        (6, 6, 6)
    );
    // Nearest-rank over 10..60 ms sleeps: p50 is the third (30 ms), p95 and max the sixth.
    let p50 = ok.runtime.p50.unwrap();
    let max = ok.runtime.max.unwrap();
    assert!((0.030..0.5).contains(&p50), "p50 {p50}");
    assert!(max >= 0.060 && max >= p50, "max {max}");
    assert_eq!(ok.runtime.p95, ok.runtime.max);
    assert!(stats.queue_wait.p95.is_some());

    // All-time counts, per worker, and the Prometheus figures say the same.
    let counts = hub.task_stats().await.unwrap();
    let fail = counts.kinds.iter().find(|k| k.kind == "fail").unwrap();
    assert_eq!((fail.failed, fail.succeeded), (2, 0));
    let workers = hub.monitor_workers().await.unwrap();
    assert_eq!(workers.online, 1);
    let me = &workers.workers[0];
    assert_eq!((me.succeeded, me.failed), (6, 2), "{me:?}");
    let text = hub.metrics().await.unwrap();
    for line in [
        "hub_tasks_finished_total{kind=\"ok\",state=\"success\"} 6",
        "hub_tasks_finished_total{kind=\"fail\",state=\"failure\"} 2",
        "hub_tasks_finished_total{kind=\"gate\",state=\"revoked\"} 2",
        "hub_task_runtime_seconds_count{kind=\"ok\"} 6",
        "hub_task_runtime_seconds_bucket{kind=\"ok\",le=\"+Inf\"} 6",
        "hub_task_queue_wait_seconds_count{kind=\"gate\"} 2",
        "hub_workers_online 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    // A shorter window leaves out what finished before it: nothing here.
    let alerts = hub.monitor_alerts().await.unwrap();
    let kinds: Vec<_> = alerts.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [AlertKind::FailureRate],
        "2 of 10 failed: above 10 %"
    );
}

pub async fn the_history_filters_searches_sorts_pages_and_tells_timelines(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let hub = backend
        .open(&dir, TaskConfig::default(), monitored_handlers(&gate))
        .await;
    let mut ok = Vec::new();
    for ms in [120, 10, 60] {
        let id = hub
            .submit(JobRequest::new("ok", json!({ "ms": ms })).project(7))
            .await
            .unwrap();
        wait_done(&hub, id).await;
        ok.push(id);
    }
    let failed = hub
        .submit(JobRequest::new(
            "fail",
            json!({"message": "Frontend port 3010 is in use"}),
        ))
        .await
        .unwrap();
    wait_done(&hub, failed).await;

    let all = hub.monitor_tasks(&TaskQuery::default()).await.unwrap();
    assert_eq!(all.total, 4);
    assert_eq!(all.tasks[0].task_id, failed, "newest first");
    let by_runtime = hub
        .monitor_tasks(&TaskQuery {
            kind: Some("ok".into()),
            sort: TaskSort::Runtime,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    let order: Vec<_> = by_runtime.tasks.iter().map(|t| t.task_id).collect();
    assert_eq!(order, [ok[0], ok[2], ok[1]], "longest first");
    let shortest_first = hub
        .monitor_tasks(&TaskQuery {
            kind: Some("ok".into()),
            sort: TaskSort::Runtime,
            ascending: true,
            limit: 2,
            offset: 0,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(shortest_first.total, 3);
    let order: Vec<_> = shortest_first.tasks.iter().map(|t| t.task_id).collect();
    assert_eq!(order, [ok[1], ok[2]]);
    let started = hub
        .monitor_tasks(&TaskQuery {
            sort: TaskSort::Started,
            ascending: true,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(started.tasks[0].task_id, ok[0]);

    let search = |text: &str| TaskQuery {
        search: Some(text.into()),
        ..TaskQuery::default()
    };
    let found = hub.monitor_tasks(&search("PORT 3010")).await.unwrap();
    assert_eq!(found.total, 1, "case-insensitive, in the error");
    assert_eq!(found.tasks[0].task_id, failed);
    // The dashboard's short id: the random end (the start is the creation time).
    let id = failed.to_string();
    let short_id = &id[id.len() - 8..];
    assert_eq!(hub.monitor_tasks(&search(short_id)).await.unwrap().total, 1);
    assert_eq!(hub.monitor_tasks(&search("50%_")).await.unwrap().total, 0);
    let worker = hub.task(ok[0]).await.unwrap().worker.unwrap();
    let by_worker = hub
        .monitor_tasks(&TaskQuery {
            worker: Some(worker),
            project_id: Some(7),
            states: vec![TaskState::Success],
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_worker.total, 3);
    let nobody = hub
        .monitor_tasks(&TaskQuery {
            worker: Some("nobody".into()),
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((nobody.total, nobody.tasks.len()), (0, 0));
    let err = hub
        .monitor_tasks(&search(&"x".repeat(201)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);

    let detail = hub.monitor_task(ok[0]).await.unwrap();
    let states: Vec<_> = detail.timeline.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [
            TaskState::Pending,
            TaskState::Started,
            TaskState::Building,
            TaskState::Running,
            TaskState::Success
        ]
    );
    let progress: Vec<_> = detail.timeline.iter().map(|e| e.progress).collect();
    assert_eq!(progress, [0, 0, 30, 70, 100]);
    assert_eq!(
        detail.timeline[2].status.as_deref(),
        Some("Building the thing")
    );
    assert!(detail.timeline.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(detail.task.result, Some(json!({"slept": 120})));
    assert!(detail.queue_wait.is_some());
    let failure = hub.monitor_task(failed).await.unwrap();
    assert_eq!(failure.task.error_code.as_deref(), Some("broken"));
    assert_eq!(
        failure.timeline.last().map(|e| e.state),
        Some(TaskState::Failure)
    );
    let err = hub.monitor_task(uuid::Uuid::new_v4()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

pub async fn a_stuck_task_raises_its_alert_and_clears_when_it_ends(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let monitor = MonitorConfig {
        alerts: AlertThresholds {
            stalled_after: Duration::from_millis(700),
            expected_runtime_by_kind: [("stubborn".to_owned(), Duration::from_millis(300))].into(),
            ..AlertThresholds::default()
        },
        ..MonitorConfig::default()
    };
    let hub = backend
        .open_monitored(
            &dir,
            TaskConfig::default(),
            monitored_handlers(&gate),
            HubMode::Embedded,
            monitor,
        )
        .await;
    let quiet = hub.submit(job("gate")).await.unwrap();
    let overdue = hub.submit(job("stubborn")).await.unwrap();
    wait_state(&hub, quiet, TaskState::Running).await;
    wait_state(&hub, overdue, TaskState::Started).await;
    let stuck = |alerts: &[hub_core::monitor::Alert]| -> Vec<String> {
        let mut subjects: Vec<String> = alerts
            .iter()
            .filter(|a| a.kind == AlertKind::TaskStuck)
            .filter_map(|a| a.subject.clone())
            .collect();
        subjects.sort();
        subjects
    };
    assert!(stuck(&hub.monitor_alerts().await.unwrap()).is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        stuck(&hub.monitor_alerts().await.unwrap()),
        [overdue.to_string()],
        "past its kind's expected runtime"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alerts = hub.monitor_alerts().await.unwrap();
    let mut both = vec![quiet.to_string(), overdue.to_string()];
    both.sort();
    assert_eq!(
        stuck(&alerts),
        both,
        "no change for longer than the stall time"
    );
    let message = &alerts
        .iter()
        .find(|a| a.subject.as_deref() == Some(&quiet.to_string()))
        .unwrap()
        .message;
    assert!(message.contains("no progress"), "{message}");

    gate.release.notify_one();
    wait_done(&hub, quiet).await;
    hub.revoke(overdue, true).await.unwrap();
    wait_done(&hub, overdue).await;
    assert!(stuck(&hub.monitor_alerts().await.unwrap()).is_empty());
}

pub async fn queued_work_without_workers_raises_alerts_and_queues_show_it(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let client = backend.client(&dir).await;
    let first = chrono::Utc::now();
    for _ in 0..11 {
        client.submit(job("noop")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queues = client.monitor_queues().await.unwrap();
    let default = queues.iter().find(|q| q.name == "default").unwrap();
    assert_eq!(
        (default.depth, default.active, default.consumers),
        (11, 0, 0)
    );
    let oldest = default.oldest_queued_at.unwrap();
    assert!(
        (oldest - first).num_milliseconds().abs() < 1000,
        "{oldest} vs {first}"
    );
    assert!(default.oldest_wait_seconds.unwrap() >= 0.25);
    let alerts = client.monitor_alerts().await.unwrap();
    let kinds: Vec<_> = alerts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [AlertKind::NoWorkerOnline, AlertKind::QueueDepth]);
    assert_eq!(alerts[1].subject.as_deref(), Some("default"));

    let worker = backend
        .open_as(
            &dir,
            TaskConfig::default(),
            Handlers::new().register("noop", noop),
            HubMode::Worker,
        )
        .await;
    for _ in 0..500 {
        let queues = client.monitor_queues().await.unwrap();
        if queues.iter().all(|q| q.depth == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queues = client.monitor_queues().await.unwrap();
    let default = queues.iter().find(|q| q.name == "default").unwrap();
    assert_eq!((default.depth, default.oldest_queued_at), (0, None));
    assert_eq!(default.consumers, 1);
    assert!(client.monitor_alerts().await.unwrap().is_empty());
    worker.close().await;
    client.close().await;
}

pub async fn a_worker_that_stops_heartbeating_turns_offline_then_ages_out(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let monitor = MonitorConfig {
        worker_expiry: Duration::from_secs(3),
        ..MonitorConfig::default()
    };
    let client = backend
        .open_monitored(
            &dir,
            short_leases(TaskConfig::default()),
            Handlers::new(),
            HubMode::Client,
            monitor,
        )
        .await;
    let worker = backend
        .open_as(
            &dir,
            short_leases(TaskConfig::default()),
            Handlers::new().register("noop", noop),
            HubMode::Worker,
        )
        .await;
    let view = client.monitor_workers().await.unwrap();
    assert_eq!(view.online, 1);
    // Dropped without closing: the process is gone as a crash leaves it, heartbeats stop.
    drop(worker);
    let lost = std::time::Instant::now();
    loop {
        let view = client.monitor_workers().await.unwrap();
        if view.online == 0 {
            assert_eq!(view.workers.len(), 1, "offline but still listed");
            assert!(!view.workers[0].online);
            break;
        }
        assert!(
            lost.elapsed() < Duration::from_secs(3),
            "offline within the lease (1 s) and a heartbeat"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        if client.monitor_workers().await.unwrap().workers.is_empty() {
            break;
        }
        assert!(
            lost.elapsed() < Duration::from_secs(8),
            "aged out after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.close().await;
}

pub async fn a_subscriber_resumes_after_the_last_event_it_saw(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register("steps", |ctx: TaskContext, _: Value| async move {
        for p in [25, 50, 75] {
            ctx.progress(TaskState::Running, p, format!("{p}%")).await?;
        }
        Ok(json!(null))
    });
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let mut first = hub.subscribe(None).await.unwrap();
    let id = hub.submit(job("steps")).await.unwrap();
    let all = events_until_done(&mut first, id).await;
    assert_eq!(all.len(), 6);

    // A client that saw the first three resumes from the third's sequence number.
    let mut resumed = hub.subscribe(Some(all[2].cursor())).await.unwrap();
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(resumed.recv().await.unwrap());
    }
    assert_eq!(rest, all[3..].to_vec());
}

pub async fn the_event_sequence_keeps_increasing_across_restarts(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register("noop", noop);
    let hub = backend
        .open(&dir, TaskConfig::default(), handlers.clone())
        .await;
    let mut events = hub.subscribe(None).await.unwrap();
    let id = hub.submit(job("noop")).await.unwrap();
    let last = events_until_done(&mut events, id).await.pop().unwrap().seq;
    hub.close().await;

    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let mut events = hub.subscribe(None).await.unwrap();
    let id = hub.submit(job("noop")).await.unwrap();
    let first_after = events_until_done(&mut events, id).await[0].seq;
    assert!(first_after > last);
}

pub async fn enqueue_after_shutdown_is_refused(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let hub = backend
        .open(
            &dir,
            TaskConfig::default(),
            Handlers::new().register("noop", noop),
        )
        .await;
    hub.task_backend()
        .shutdown(Duration::from_millis(10))
        .await
        .unwrap();
    let err = hub.submit(job("noop")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BackendUnavailable);
}

pub async fn cancellation_reason_is_visible_to_handlers_that_poll(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let saw = Arc::new(AtomicBool::new(false));
    let s = saw.clone();
    let handlers = Handlers::new().register("poll", move |ctx: TaskContext, _: Value| {
        let saw = s.clone();
        async move {
            while !ctx.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            saw.store(
                ctx.cancel_reason() == Some(CancelReason::Revoked),
                Ordering::SeqCst,
            );
            Err(TaskError::new("stopped", "stopped"))
        }
    });
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let id = hub.submit(job("poll")).await.unwrap();
    wait_state(&hub, id, TaskState::Started).await;
    hub.revoke(id, true).await.unwrap();
    assert_eq!(wait_done(&hub, id).await.state, TaskState::Revoked);
    assert!(saw.load(Ordering::SeqCst));
}

pub async fn the_key_of_a_finished_task_is_free_at_once(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register("noop", noop);
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let exclusive = || {
        job("noop").options(JobOptions {
            exclusive_key: Some("project:1".into()),
            ..JobOptions::default()
        })
    };
    let mut events = hub.subscribe(None).await.unwrap();
    let mut id = hub.submit(exclusive()).await.unwrap();
    for round in 0..50 {
        // As soon as the terminal event is out, the next operation must be accepted.
        events_until_done(&mut events, id).await;
        id = match hub.submit(exclusive()).await {
            Ok(next) => next,
            Err(err) => panic!("round {round}: {err}"),
        };
    }
    events_until_done(&mut events, id).await;
    // The same when the end is seen by polling: the next submit is stored after the end,
    // never judged against the key it frees. Other
    // exclusive work keeps the store busy, so that ends and submits share its batches.
    let busy: Vec<_> = (0..4)
        .map(|i| {
            let hub = hub.clone();
            tokio::spawn(async move {
                loop {
                    let key = format!("busy:{i}");
                    let other = job("noop").options(JobOptions {
                        exclusive_key: Some(key),
                        ..JobOptions::default()
                    });
                    if let Ok(other) = hub.submit(other).await {
                        wait_done(&hub, other).await;
                    }
                }
            })
        })
        .collect();
    for round in 0..100 {
        while !hub.task(id).await.unwrap().ready() {
            tokio::task::yield_now().await;
        }
        id = match hub.submit(exclusive()).await {
            Ok(next) => next,
            Err(err) => panic!("polled round {round}: {err}"),
        };
    }
    busy.iter().for_each(tokio::task::JoinHandle::abort);
    wait_done(&hub, id).await;
}

/// A handler's change of its project's status goes with the task's own writes (or, where the
/// backend keeps tasks elsewhere, is made by the handler itself): whoever polls a task until
/// it ends sees that status, even when the handler did not wait for it to be stored.
pub async fn a_task_s_end_is_seen_with_the_project_status_its_handler_recorded(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    // The hub the handler records through when its backend does not take the change.
    let registry: Arc<std::sync::OnceLock<Hub>> = Arc::default();
    let handlers = {
        let registry = registry.clone();
        Handlers::new().register("mark", move |ctx: TaskContext, payload: Value| {
            let registry = registry.clone();
            async move {
                let status = if payload["running"] == json!(true) {
                    ProjectStatus::Running
                } else {
                    ProjectStatus::Stopped
                };
                let project = payload["project"].as_i64().unwrap_or_default();
                let change = StatusChange::new(project, status, Health::Unknown, None);
                if ctx.record_project_status(change.clone()).is_none() {
                    let hub = registry.get().expect("hub set before any job");
                    hub.registry()
                        .apply_status(&change)
                        .await
                        .map_err(|err| TaskError::new("store", err.to_string()))?;
                }
                Ok(Value::Null)
            }
        })
    };
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let _ = registry.set(hub.clone());
    let folder = dir.path().join("project");
    std::fs::create_dir_all(&folder).unwrap();
    let project = hub
        .create_project(NewProject::new("marked", &folder))
        .await
        .unwrap();
    for round in 0..40 {
        let running = round % 2 == 0;
        let id = hub
            .submit(JobRequest::new(
                "mark",
                json!({"project": project.id, "running": running}),
            ))
            .await
            .unwrap();
        // Polled as fast as it goes: the first answer that shows the end counts.
        let record = loop {
            let record = hub.task(id).await.unwrap();
            if record.ready() {
                break record;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(
            record.state,
            TaskState::Success,
            "round {round}: {record:?}"
        );
        let seen = hub.project(project.id).await.unwrap().status;
        let expected = if running {
            ProjectStatus::Running
        } else {
            ProjectStatus::Stopped
        };
        assert_eq!(
            seen, expected,
            "round {round}: the end was seen before the status"
        );
    }
}

// ---- Several processes on one store --------------------------------------------------------

fn exclusive(kind: &str, key: &str) -> JobRequest {
    job(kind).options(JobOptions {
        exclusive_key: Some(key.into()),
        ..JobOptions::default()
    })
}

/// Polls `hub` until the task reaches `state` as the store says (10 s at most).
async fn wait_seen(hub: &Hub, id: TaskId, state: TaskState) -> TaskRecord {
    for _ in 0..1000 {
        if let Ok(record) = hub.task(id).await
            && record.state == state
        {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} never reached {state}");
}

pub async fn opening_and_closing_a_second_process_leaves_a_running_task_alone(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let first = backend
        .open(&dir, TaskConfig::default(), gate.handlers())
        .await;
    let id = first.submit(exclusive("gate", "project:1")).await.unwrap();
    wait_state(&first, id, TaskState::Running).await;

    for mode in [HubMode::Embedded, HubMode::Client] {
        let second = backend
            .open_as(&dir, TaskConfig::default(), gate.handlers(), mode)
            .await;
        // One truth: the second process sees the task running, and its key held.
        assert_eq!(
            wait_seen(&second, id, TaskState::Running).await.state,
            TaskState::Running
        );
        let err = second
            .submit(exclusive("gate", "project:1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Conflict, "{mode:?}");
        second.close().await;
        // Closing it touched nothing of the first's.
        assert_eq!(first.task(id).await.unwrap().state, TaskState::Running);
        let err = first
            .submit(exclusive("gate", "project:1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Conflict);
    }
    gate.release.notify_one();
    assert_eq!(wait_done(&first, id).await.state, TaskState::Success);
    let third = backend.client(&dir).await;
    assert_eq!(third.task(id).await.unwrap().state, TaskState::Success);
    third.close().await;
    first.close().await;
}

pub async fn a_client_submits_and_a_worker_process_runs(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register("noop", noop);
    let client = backend.client(&dir).await;
    let id = client.submit(job("noop")).await.unwrap();
    // No worker yet: it waits, visible to all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.task(id).await.unwrap().state, TaskState::Pending);
    let stats = client.task_stats().await.unwrap();
    assert!(stats.workers.iter().all(|w| !w.online));
    assert_eq!(stats.queues.iter().map(|q| q.pending).sum::<u64>(), 1);

    let worker = backend
        .open_as(&dir, TaskConfig::default(), handlers, HubMode::Worker)
        .await;
    let done = wait_seen(&client, id, TaskState::Success).await;
    let stats = client.task_stats().await.unwrap();
    let online: Vec<_> = stats.workers.iter().filter(|w| w.online).collect();
    assert_eq!(online.len(), 1);
    assert_eq!(online[0].mode, "worker");
    assert_eq!(done.worker.as_deref(), Some(online[0].id.as_str()));
    // Queued while the worker runs: its enqueue event reaching the worker after the claim
    // must not make it drop the task.
    let mut events = client.subscribe(None).await.unwrap();
    let second = client.submit(job("noop")).await.unwrap();
    let seen = events_until_done(&mut events, second).await;
    let states: Vec<TaskState> = seen.iter().map(|e| e.task.state).collect();
    assert_eq!(
        states,
        [TaskState::Pending, TaskState::Started, TaskState::Success]
    );
    worker.close().await;
    let stats = client.task_stats().await.unwrap();
    assert!(
        stats.workers.iter().all(|w| !w.online),
        "a stopped worker is offline"
    );
    client.close().await;
}

pub async fn every_process_publishes_one_event_sequence_without_gaps(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register("steps", |ctx: TaskContext, _: Value| async move {
        ctx.progress(TaskState::Running, 50, "half").await?;
        Ok(json!(null))
    });
    let worker = backend
        .open_as(
            &dir,
            TaskConfig::default(),
            handlers.clone(),
            HubMode::Worker,
        )
        .await;
    let embedded = backend.open(&dir, TaskConfig::default(), handlers).await;
    let client = backend.client(&dir).await;
    let mut events = client.subscribe(None).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let hub = if i % 2 == 0 { &client } else { &embedded };
        ids.push(hub.submit(job("steps")).await.unwrap());
    }
    let mut seen: std::collections::HashMap<TaskId, Vec<TaskState>> = Default::default();
    let mut last_seq = None;
    let mut finished = 0;
    while finished < ids.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("events keep coming")
            .unwrap();
        if let Some(last) = last_seq {
            assert_eq!(event.seq, last + 1, "no gap, no duplicate");
        }
        last_seq = Some(event.seq);
        if event.task.ready() {
            finished += 1;
        }
        seen.entry(event.task.id)
            .or_default()
            .push(event.task.state);
    }
    for id in &ids {
        assert_eq!(
            seen[id],
            [
                TaskState::Pending,
                TaskState::Started,
                TaskState::Running,
                TaskState::Success
            ],
            "every change of {id}, in order"
        );
    }
    // Resuming on another process from a cursor gives the same sequence.
    let first = ids[0];
    let mut again = embedded
        .subscribe(Some(hub_core::tasks::EventCursor::after(0)))
        .await
        .unwrap();
    let replayed = events_until_done(&mut again, first).await;
    assert_eq!(replayed.len(), 4);
    for hub in [client, embedded, worker] {
        hub.close().await;
    }
}

/// A handler whose `lost` hook records what it was told.
#[derive(Clone, Default)]
struct Watched {
    lost: Arc<Mutex<Vec<TaskId>>>,
}

#[async_trait::async_trait]
impl JobHandler for Watched {
    async fn run(&self, ctx: TaskContext, _: Value) -> JobResult {
        ctx.progress(TaskState::Running, 10, "hanging").await?;
        std::future::pending::<()>().await;
        Ok(json!(null))
    }

    async fn lost(&self, task: &TaskRecord) {
        self.lost.lock().await.push(task.id);
    }
}

pub async fn a_lost_worker_s_task_ends_interrupted_its_key_freed_and_its_handler_told(
    backend: &Fixture,
) {
    let dir = TempDir::new().unwrap();
    let watched = Watched::default();
    let handlers = Handlers::new()
        .register("watched", watched.clone())
        .register("noop", noop);
    let tasks = short_leases(TaskConfig::default());
    let doomed = backend.open(&dir, tasks.clone(), handlers.clone()).await;
    let survivor = backend.open(&dir, tasks, handlers).await;
    let id = doomed
        .submit(exclusive("watched", "project:9"))
        .await
        .unwrap();
    wait_seen(&survivor, id, TaskState::Running).await;
    drop(doomed); // kill -9
    let record = wait_seen(&survivor, id, TaskState::Failure).await;
    assert_eq!(record.error.unwrap().code, codes::INTERRUPTED);
    let next = survivor
        .submit(exclusive("noop", "project:9"))
        .await
        .unwrap();
    assert_eq!(wait_done(&survivor, next).await.state, TaskState::Success);
    for _ in 0..100 {
        if !watched.lost.lock().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*watched.lost.lock().await, [id]);
    survivor.close().await;
}

pub async fn a_task_safe_to_retry_runs_again_when_its_worker_is_lost(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register(
        "flaky",
        Retryable(|ctx: TaskContext, _: Value| async move {
            if ctx.attempt() == 1 {
                std::future::pending::<()>().await;
            }
            Ok(json!({"attempt": ctx.attempt()}))
        }),
    );
    let tasks = short_leases(TaskConfig::default());
    let doomed = backend.open(&dir, tasks.clone(), handlers.clone()).await;
    let id = doomed.submit(job("flaky")).await.unwrap();
    wait_state(&doomed, id, TaskState::Started).await;
    doomed.tasks(&TaskQuery::default()).await.unwrap();
    drop(doomed);
    let survivor = backend.open(&dir, tasks, handlers).await;
    let record = wait_done(&survivor, id).await;
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.attempt, 2);
    assert_eq!(record.result, Some(json!({"attempt": 2})));
    survivor.close().await;
}

pub async fn revokes_reach_the_process_that_holds_the_task(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Gate::default();
    let tasks = TaskConfig {
        concurrency: 1,
        ..TaskConfig::default()
    };
    let runner = backend.open(&dir, tasks.clone(), gate.handlers()).await;
    let running = runner.submit(job("gate")).await.unwrap();
    let queued = runner.submit(job("gate")).await.unwrap();
    wait_state(&runner, running, TaskState::Running).await;
    runner.tasks(&TaskQuery::default()).await.unwrap();

    let client = backend
        .open_as(&dir, tasks, Handlers::new(), HubMode::Client)
        .await;
    // Queued on the runner: revoked at once, and it never runs.
    let revoked = client.revoke(queued, false).await.unwrap();
    assert_eq!(revoked.state, TaskState::Revoked);
    // Running there: cancelled there, within a second.
    let asked = std::time::Instant::now();
    client.revoke(running, true).await.unwrap();
    let record = wait_seen(&client, running, TaskState::Revoked).await;
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(record.state, TaskState::Revoked);
    assert_eq!(*gate.saw_cancel.lock().await, Some(CancelReason::Revoked));
    let after = runner.submit(job("noop")).await.unwrap();
    wait_done(&runner, after).await;
    assert_eq!(
        gate.started.load(Ordering::SeqCst),
        1,
        "the revoked one never ran"
    );
    assert_eq!(runner.task(queued).await.unwrap().state, TaskState::Revoked);
    client.close().await;
    runner.close().await;
}

/// Opens a worker hub on a thread of its own with a single-threaded runtime, so that a handler
/// that blocks the thread freezes the whole process's view of time — its heartbeat included —
/// as `SIGSTOP` would.
fn freezable_worker(
    backend: Fixture,
    dir: std::path::PathBuf,
    tasks: TaskConfig,
    handlers: Handlers,
) -> (
    Hub,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (hub_tx, hub_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let factory = backend.factory_for(&dir.join("state"));
            let config = backend.config(&dir, tasks, HubMode::Worker).await;
            let hub = Hub::builder(config)
                .handlers(handlers)
                .task_backend(factory)
                .open()
                .await
                .unwrap();
            hub_tx.send(hub.clone()).unwrap();
            while stop_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            hub.close().await;
        });
    });
    (hub_rx.recv().unwrap(), stop_tx, thread)
}

pub async fn a_worker_frozen_past_its_lease_cannot_overwrite_what_replaced_it(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let frozen_for = Duration::from_millis(2500);
    let handlers = Handlers::new().register(
        "freeze",
        Retryable(move |ctx: TaskContext, _: Value| async move {
            ctx.progress(TaskState::Running, 10, "working").await?;
            if ctx.attempt() == 1 {
                // Let the writer store that it runs, then freeze.
                tokio::time::sleep(Duration::from_millis(300)).await;
                // Blocks the worker's only thread: heartbeat, writer and all stop, as if the
                // process were stopped.
                std::thread::sleep(frozen_for);
                return Ok(json!("stale result of attempt 1"));
            }
            Ok(json!("attempt 2"))
        }),
    );
    let tasks = short_leases(TaskConfig::default());
    let client = backend
        .open_as(&dir, tasks.clone(), Handlers::new(), HubMode::Client)
        .await;
    let (frozen, stop, thread) = freezable_worker(
        backend.clone(),
        dir.path().to_owned(),
        tasks.clone(),
        handlers.clone(),
    );
    let id = client
        .submit(exclusive("freeze", "project:3"))
        .await
        .unwrap();
    wait_seen(&client, id, TaskState::Running).await;
    // Another worker takes over once the frozen one's lease expires.
    let other = backend
        .open_as(&dir, tasks, handlers, HubMode::Worker)
        .await;
    let replaced = wait_seen(&client, id, TaskState::Success).await;
    assert_eq!(replaced.attempt, 2);
    assert_eq!(replaced.result, Some(json!("attempt 2")));
    // The frozen worker wakes up and finishes attempt 1: its write is refused.
    tokio::time::sleep(frozen_for).await;
    frozen.task(id).await.unwrap();
    frozen.tasks(&TaskQuery::default()).await.unwrap();
    let record = client.task(id).await.unwrap();
    assert_eq!(
        record.result,
        Some(json!("attempt 2")),
        "attempt 1 overwrote attempt 2"
    );
    assert_eq!(record.attempt, 2);
    stop.send(()).unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    other.close().await;
    client.close().await;
}

/// A caller that gives up on an exclusive submission at any point — before, during or after
/// its commit — leaves no task stuck `PENDING` holding its key: whatever was committed runs to
/// its end, and every key is free again afterwards.
pub async fn a_caller_dropped_mid_submit_leaves_no_task_stuck(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let hub = backend
        .open(
            &dir,
            TaskConfig::default(),
            Handlers::new().register("noop", noop),
        )
        .await;
    let exclusive = |key: String| JobOptions {
        exclusive_key: Some(key),
        ..JobOptions::default()
    };
    for i in 0..40u32 {
        let submitter = hub.clone();
        let options = exclusive(format!("key:{i}"));
        let attempt =
            tokio::spawn(async move { submitter.submit(job("noop").options(options)).await });
        for _ in 0..i % 8 {
            tokio::task::yield_now().await;
        }
        attempt.abort();
        let _ = attempt.await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let query = TaskQuery {
            limit: 1000,
            ..TaskQuery::default()
        };
        let tasks = hub.tasks(&query).await.unwrap();
        if tasks.iter().all(TaskRecord::ready) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck: {:?}",
            tasks
                .iter()
                .filter(|t| !t.ready())
                .map(|t| (t.id, t.state))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..40u32 {
        let again = hub
            .submit(job("noop").options(exclusive(format!("key:{i}"))))
            .await
            .unwrap_or_else(|err| panic!("key:{i} still held: {err}"));
        wait_done(&hub, again).await;
    }
}

/// A job names its queue; a worker takes only the queues it was given (all of them when it
/// was given none), so a job for queue `b` never runs on a worker of queue `a` alone.
pub async fn jobs_run_only_on_workers_of_their_queue(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let handlers = Handlers::new().register("noop", noop);
    let on = |queues: &[&str]| TaskConfig {
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        ..TaskConfig::default()
    };
    let client = backend.client(&dir).await;
    let worker_a = backend
        .open_as(&dir, on(&["a"]), handlers.clone(), HubMode::Worker)
        .await;
    let worker_b = backend
        .open_as(&dir, on(&["b"]), handlers.clone(), HubMode::Worker)
        .await;
    let submit = |queue: &'static str| {
        let client = client.clone();
        async move {
            client
                .submit(job("noop").options(JobOptions {
                    queue: Some(queue.to_owned()),
                    ..JobOptions::default()
                }))
                .await
                .unwrap()
        }
    };
    let for_a = submit("a").await;
    let for_b = submit("b").await;
    let for_c = submit("c").await;
    let ran_a = wait_done(&client, for_a).await;
    let ran_b = wait_done(&client, for_b).await;
    assert_eq!((ran_a.queue.as_str(), ran_b.queue.as_str()), ("a", "b"));
    let worker_of = |record: &TaskRecord| record.worker.clone().unwrap();
    assert_ne!(worker_of(&ran_a), worker_of(&ran_b), "one worker ran both");
    // Nobody takes `c` yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.task(for_c).await.unwrap().state, TaskState::Pending);
    let any = backend
        .open_as(&dir, TaskConfig::default(), handlers, HubMode::Worker)
        .await;
    let ran_c = wait_done(&client, for_c).await;
    assert_eq!(ran_c.state, TaskState::Success);
    assert_ne!(worker_of(&ran_c), worker_of(&ran_a));
    assert_ne!(worker_of(&ran_c), worker_of(&ran_b));
    // The same worker ran every job of its queue.
    let again_a = wait_done(&client, submit("a").await).await;
    assert!(
        [worker_of(&ran_a), worker_of(&ran_c)].contains(&worker_of(&again_a)),
        "a job for `a` ran on the worker of `b`"
    );
    for hub in [any, worker_a, worker_b, client] {
        hub.close().await;
    }
}

/// What every frontend shows of one task: its current state first, then each later version,
/// ending after the terminal one; resumed after a cursor, what followed it. And history queries
/// keep to the core's limit.
pub async fn a_watch_gives_the_current_state_then_each_change_until_the_end(backend: &Fixture) {
    let dir = TempDir::new().unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let opened = gate.clone();
    let handlers = Handlers::new().register("gated", move |ctx: TaskContext, _: Value| {
        let gate = opened.clone();
        async move {
            ctx.progress(TaskState::Building, 40, "waiting").await?;
            gate.notified().await;
            ctx.progress(TaskState::Running, 90, "almost").await?;
            Ok(json!(null))
        }
    });
    let hub = backend.open(&dir, TaskConfig::default(), handlers).await;
    let id = hub
        .submit(JobRequest::new("gated", json!({})))
        .await
        .unwrap();
    // Wait until it is in its handler, so the watch starts mid-way.
    while hub.task(id).await.unwrap().progress < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut watch = hub.watch(id, None).await.unwrap();
    let first = watch.next().await.unwrap();
    assert_eq!(
        (first.seq, first.task.progress),
        (None, 40),
        "current state first"
    );
    gate.notify_one();
    let mut seen = vec![first.task.progress];
    let mut last_seq = 0;
    while let Some(item) = watch.next().await {
        seen.push(item.task.progress);
        last_seq = item.seq.unwrap();
    }
    assert_eq!(seen, [40, 90, 100], "later versions only, until the end");
    assert!(watch.next().await.is_none(), "nothing after the end");

    // Resumed on the finished task after its first change: the rest of its log, then nothing.
    let resumed_from = EventCursor::after(last_seq - 1);
    let mut resumed = hub.watch(id, Some(resumed_from)).await.unwrap();
    let item = resumed.next().await.unwrap();
    assert_eq!(item.seq, Some(last_seq));
    assert!(item.task.ready());
    assert!(resumed.next().await.is_none());

    let err = hub.watch(uuid::Uuid::new_v4(), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    for limit in [0, MAX_LIST_LIMIT + 1] {
        let query = TaskQuery {
            limit,
            ..TaskQuery::default()
        };
        let err = hub.tasks(&query).await.unwrap_err();
        assert_eq!(err.field(), Some("limit"));
    }
}

/// Runs every case of the suite against one backend: `behaviour_suite!(Fixture::…())` in a
/// module of its own.
macro_rules! behaviour_suite {
    ($fixture:expr) => {
        behaviour_suite!(@cases $fixture;
            a_job_lives_through_its_states_with_progress_events_in_order,
            a_failing_handler_ends_in_failure_with_its_error_kept,
            a_panicking_handler_fails_the_task_not_the_worker,
            an_unknown_task_id_is_not_found_never_pending,
            a_job_without_a_handler_is_refused_at_enqueue,
            two_workers_never_run_three_handlers_at_once,
            tasks_run_in_fifo_order,
            a_task_revoked_before_it_starts_never_runs,
            revoking_a_running_task_with_terminate_cancels_its_handler,
            a_handler_that_ignores_revoke_is_aborted_after_the_grace_period,
            soft_time_limit_cancels_the_handler_with_its_reason,
            hard_time_limit_aborts_the_handler,
            expired_results_are_swept_but_history_counters_stay,
            after_a_crash_queued_tasks_rerun_and_running_ones_end_once_their_lease_expires,
            graceful_shutdown_lets_quick_tasks_finish_and_interrupts_the_rest,
            five_long_jobs_across_projects_all_progress_together,
            progress_never_goes_back_and_nothing_changes_after_the_end,
            an_exclusive_key_allows_one_unfinished_task_at_a_time,
            concurrent_exclusive_submits_let_exactly_one_through,
            tasks_can_be_listed_and_filtered,
            a_subscriber_resumes_after_the_last_event_it_saw,
            the_event_sequence_keeps_increasing_across_restarts,
            enqueue_after_shutdown_is_refused,
            cancellation_reason_is_visible_to_handlers_that_poll,
            the_key_of_a_finished_task_is_free_at_once,
            a_task_s_end_is_seen_with_the_project_status_its_handler_recorded,
            opening_and_closing_a_second_process_leaves_a_running_task_alone,
            a_client_submits_and_a_worker_process_runs,
            every_process_publishes_one_event_sequence_without_gaps,
            a_lost_worker_s_task_ends_interrupted_its_key_freed_and_its_handler_told,
            a_task_safe_to_retry_runs_again_when_its_worker_is_lost,
            revokes_reach_the_process_that_holds_the_task,
            a_worker_frozen_past_its_lease_cannot_overwrite_what_replaced_it,
            a_watch_gives_the_current_state_then_each_change_until_the_end,
            a_caller_dropped_mid_submit_leaves_no_task_stuck,
            jobs_run_only_on_workers_of_their_queue,
            monitoring_counts_and_rates_match_a_known_mix_of_outcomes,
            the_history_filters_searches_sorts_pages_and_tells_timelines,
            a_stuck_task_raises_its_alert_and_clears_when_it_ends,
            queued_work_without_workers_raises_alerts_and_queues_show_it,
            a_worker_that_stops_heartbeating_turns_offline_then_ages_out,
        );
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                crate::suite::$case(&$fixture).await;
            }
        )*
    };
}
