//! The [`Hub`] facade: the one object frontends talk to.

use std::sync::Arc;

use futures_util::stream::BoxStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{HubConfig, HubMode};
use crate::db::Database;
use crate::error::{Entity, HubError, Result};
use crate::health::{self, ComponentState, HealthBoard, HealthReport};
use crate::monitor::{
    self, Alert, MonitorOverview, QueueView, TaskDetail, TaskHistoryPage, WindowStats, WorkersView,
};
use crate::orchestration::{
    self, EffectiveStack, ExtraPorts, Orchestrator, ReconcileChange, StackStatus, jobs,
};
use crate::ports::BusyPort;
use crate::project::{
    LOCAL_HOST, NewProject, Project, ProjectKey, ProjectPage, ProjectStats, ProjectStatus,
    ProjectUpdate,
};
use crate::registry::Registry;
use crate::runtime::{DockerRuntime, LogLine, Runtime};
use crate::tasks::{
    BackendContext, BackendFactory, BackendStats, EventCursor, EventSubscription, Handlers,
    JobOptions, JobRequest, TaskBackend, TaskHistory, TaskId, TaskMonitor, TaskQuery, TaskRecord,
    TaskState, TaskStatus, TaskWatch,
};

/// Running tasks the stuck rule looks at (each costs a timeline read).
const MAX_STUCK_CHECKS: u32 = 200;

/// A running hub: registry, port allocator, task backend and container runtime.
///
/// Cloning is cheap and shares the same hub. Call [`Hub::close`] to stop cleanly; dropping the
/// last clone stops the task workers abruptly, as a crash would.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    registry: Arc<Registry>,
    tasks: Arc<dyn TaskBackend>,
    orchestrator: Arc<Orchestrator>,
    health: HealthBoard,
    /// Stops the hub's own background loops (the health probe).
    stop: CancellationToken,
    /// The changes of several steps under way (see [`Hub::to_the_end`]); `close` waits for them.
    changes: TaskTracker,
    /// Requests a frontend served, by route and status.
    http_metrics: crate::metrics::HttpMetrics,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("tasks", &self.inner.tasks.name())
            .finish_non_exhaustive()
    }
}

/// Chooses how a [`Hub`] opens: its mode, job handlers, container runtime and task backend.
///
/// ```no_run
/// # async fn demo() -> hub_core::Result<()> {
/// use hub_core::{Hub, HubConfig, HubMode};
///
/// // Beside a running `hub serve` on the same folder: submit and read, never run tasks.
/// let client = Hub::builder(HubConfig::with_data_dir("/tmp/hub"))
///     .mode(HubMode::Client)
///     .open()
///     .await?;
/// # Ok(()) }
/// ```
pub struct HubBuilder {
    config: HubConfig,
    handlers: Handlers,
    runtime: Option<Arc<dyn Runtime>>,
    backend: Option<Arc<dyn BackendFactory>>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// Embedded (submit and run), client (submit and read) or worker (run only).
    pub fn mode(mut self, mode: HubMode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Extra job handlers (they win over built-in ones of the same kind).
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = handlers;
        self
    }

    /// The container runtime (default: the Docker engine of the configuration).
    pub fn runtime(mut self, runtime: Arc<dyn Runtime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The task backend (default: the one the configuration names).
    pub fn task_backend(mut self, factory: impl BackendFactory + 'static) -> Self {
        self.backend = Some(Arc::new(factory));
        self
    }

    /// Opens the hub, creating its data folder and database if needed.
    ///
    /// The container engine is not needed to open: the registry and tasks work without it, and
    /// operations that need it fail with `runtime_unavailable` until it answers. Once open, a
    /// hub that runs tasks reconciles the registry with the engine in the background.
    pub async fn open(self) -> Result<Hub> {
        let HubBuilder {
            config,
            handlers,
            runtime,
            backend,
        } = self;
        // An address no engine can be at is refused now, not at the first operation.
        let runtime: Arc<dyn Runtime> = match runtime {
            Some(runtime) => runtime,
            None => Arc::new(DockerRuntime::try_new(config.docker_host.as_deref())?),
        };
        let roots = config.effective_project_roots()?;
        let db = Database::open(&config.effective_database_url()).await?;
        let registry = Arc::new(Registry::open(db.clone(), config.ports.clone(), roots).await?);
        let orchestrator = Arc::new(Orchestrator::new(registry.clone(), runtime).await?);
        let handlers = orchestrator
            .handlers(config.tasks.retries_lost_operations())
            .merge(handlers);
        let factory = backend.unwrap_or_else(|| config.tasks.backend.factory());
        let tasks = factory
            .open(BackendContext {
                db,
                config: config.tasks.clone(),
                handlers,
                mode: config.mode,
            })
            .await?;
        tracing::info!(
            database = %registry.database().display_url(),
            tasks = tasks.name(),
            mode = config.mode.as_str(),
            docker = %orchestrator.runtime().address(),
            "hub opened"
        );
        let hub = Hub {
            inner: Arc::new(HubInner {
                config,
                registry,
                tasks,
                orchestrator,
                health: HealthBoard::new(),
                stop: CancellationToken::new(),
                changes: TaskTracker::new(),
                http_metrics: crate::metrics::HttpMetrics::default(),
            }),
        };
        hub.start_health_probe().await;
        // A client leaves the registry to the processes that run the stacks.
        if !hub.inner.config.reconcile_on_open || !hub.inner.config.mode.runs_tasks() {
            return Ok(hub);
        }
        let background = hub.clone();
        tokio::spawn(async move {
            match background.reconcile().await {
                Ok(changes) if !changes.is_empty() => {
                    tracing::info!(
                        changed = changes.len(),
                        "registry reconciled with the engine"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::info!(error = %err, "no reconcile at start"),
            }
        });
        Ok(hub)
    }
}

impl Hub {
    /// A builder for a hub opened with `config`.
    pub fn builder(config: HubConfig) -> HubBuilder {
        HubBuilder {
            config,
            handlers: Handlers::new(),
            runtime: None,
            backend: None,
        }
    }

    /// Opens the hub `config` describes, creating its data folder and database if needed.
    pub async fn open(config: HubConfig) -> Result<Self> {
        Hub::builder(config).open().await
    }

    /// Opens the hub with extra job handlers (they win over built-in ones of the same kind).
    pub async fn open_with(config: HubConfig, handlers: Handlers) -> Result<Self> {
        Hub::builder(config).handlers(handlers).open().await
    }

    /// Opens the hub on a runtime of the caller's choice.
    pub async fn open_with_runtime(
        config: HubConfig,
        handlers: Handlers,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Self> {
        Hub::builder(config)
            .handlers(handlers)
            .runtime(runtime)
            .open()
            .await
    }

    /// The configuration the hub was opened with.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The project registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The task backend.
    pub fn task_backend(&self) -> &dyn TaskBackend {
        self.inner.tasks.as_ref()
    }

    /// Registers a project and allocates its ports.
    pub async fn create_project(&self, new: NewProject) -> Result<Project> {
        self.inner.registry.create(new).await
    }

    /// The project with this id or slug.
    pub async fn project(&self, key: impl Into<ProjectKey>) -> Result<Project> {
        self.inner.registry.get(key).await
    }

    /// Every project, ordered by id.
    pub async fn projects(&self) -> Result<Vec<Project>> {
        self.inner.registry.list().await
    }

    /// Every project, ordered by id, a chunk at a time (the chunks of [`Registry::list`]): for
    /// an answer that streams the whole list instead of holding all of it at once.
    pub fn project_chunks(&self) -> BoxStream<'static, Result<Vec<Project>>> {
        let registry = Arc::clone(&self.inner.registry);
        Box::pin(futures_util::stream::try_unfold(Some(0), move |after| {
            let registry = Arc::clone(&registry);
            async move {
                let Some(after) = after else {
                    return Ok(None);
                };
                let chunk = registry.list_after(after).await?;
                if chunk.is_empty() {
                    return Ok(None);
                }
                let next = crate::registry::next_chunk_after(&chunk);
                Ok(Some((chunk, next)))
            }
        }))
    }

    /// How many projects are registered.
    pub async fn project_count(&self) -> Result<u64> {
        self.inner.registry.count().await
    }

    /// One page of projects, ordered by id, with the total (see [`Registry::page`]).
    pub async fn projects_page(&self, limit: u32, offset: u32) -> Result<ProjectPage> {
        self.inner.registry.page(limit, offset).await
    }

    /// Renames, moves or re-ports a project; a new name gives a new slug.
    pub async fn update_project(
        &self,
        key: impl Into<ProjectKey>,
        update: ProjectUpdate,
    ) -> Result<Project> {
        let key = key.into();
        // The registry checks again inside its transaction, where the task store shares its
        // database; a store elsewhere (Redis) is asked here.
        if update.name.is_some()
            || update.path.is_some()
            || update.host.is_some()
            || !update.ports.is_empty()
        {
            let project = self.project(key.clone()).await?;
            self.ensure_idle(&project).await?;
        }
        self.inner.registry.update(key, update).await
    }

    /// Removes a project: its containers and network, its volumes too when `delete_data` is
    /// set, then its registry entry and ports. Refused while an operation on it runs.
    ///
    /// Without `delete_data`, an unreachable engine does not block the removal (the containers,
    /// if any, are left behind and logged); with it, the volumes must go, so it fails.
    ///
    /// Once begun, it runs to its end even if the caller is dropped (an HTTP client that hangs
    /// up, a cancelled asyncio task), and [`Hub::close`] waits for it.
    pub async fn delete_project(
        &self,
        key: impl Into<ProjectKey>,
        delete_data: bool,
    ) -> Result<Project> {
        let (hub, key) = (self.clone(), key.into());
        self.to_the_end(async move { hub.delete_now(key, delete_data).await })
            .await
    }

    /// Runs `change`, a change of several steps, to its end in a task of its own, whatever
    /// becomes of the caller. A frontend's caller may be dropped midway (an HTTP client that
    /// hangs up, a cancelled asyncio task): cut between two engine calls, a delete would leave
    /// some containers gone and the project still registered. [`Hub::close`] waits for the
    /// changes still running.
    async fn to_the_end<T: Send + 'static>(
        &self,
        change: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        // In the caller's span, as if it ran in place.
        let change = change.instrument(tracing::Span::current());
        self.inner
            .changes
            .spawn(change)
            .await
            .map_err(|err| HubError::Internal(format!("a change failed to run: {err}")))?
    }

    async fn delete_now(&self, key: ProjectKey, delete_data: bool) -> Result<Project> {
        let project = self.project(key).await?;
        self.ensure_idle(&project).await?;
        match self
            .inner
            .orchestrator
            .remove_resources(&project, delete_data)
            .await
        {
            Ok(()) => {}
            Err(HubError::RuntimeUnavailable { address, message }) if !delete_data => {
                tracing::warn!(project = %project.slug, %address, %message, "engine unreachable: containers of the deleted project, if any, are left");
            }
            Err(err) => return Err(err),
        }
        self.inner.registry.delete(project.id).await
    }

    /// The health of the hub's parts, as the background probe last found it. Never waits on a
    /// dependency.
    pub fn health(&self) -> HealthReport {
        self.inner.health.report()
    }

    /// Checks the database, the task store and the engine now and then every few seconds, each
    /// under a short timeout. Holds only a weak reference, so a dropped hub stops it too.
    async fn start_health_probe(&self) {
        let weak = Arc::downgrade(&self.inner);
        health::start_probe(
            self.inner.health.clone(),
            self.inner.stop.clone(),
            move || {
                let inner = weak.upgrade();
                async move {
                    let inner = inner?;
                    let (database, task_backend, docker) = tokio::join!(
                        health::check("the database", inner.registry.database().ping()),
                        // A lookup that goes through the store's writer: a wedged writer shows.
                        health::check("the task store", async {
                            inner.tasks.holder("health-probe").await.map(|_| ())
                        }),
                        health::check("the container engine", async {
                            inner.orchestrator.runtime().ping().await.map(|_| ())
                        }),
                    );
                    Some(HealthReport {
                        database,
                        task_backend,
                        docker,
                    })
                }
            },
        )
        .await;
    }

    /// Refuses work that needs the engine when it is down: unless the last check found it up,
    /// a fresh, short check decides (so an engine that came back is used at once, and one that
    /// is gone is a 503 at submission rather than a failed task). Only where this process runs
    /// tasks: a client's workers may be elsewhere.
    async fn ensure_engine_up(&self) -> Result<()> {
        if !self.inner.config.mode.runs_tasks() || self.inner.health.docker_up() {
            return Ok(());
        }
        let runtime = self.inner.orchestrator.runtime();
        let result = match tokio::time::timeout(health::CHECK_TIMEOUT, runtime.ping()).await {
            Ok(answer) => answer.map(|_| ()),
            Err(_) => Err(HubError::RuntimeUnavailable {
                address: runtime.address(),
                message: format!("no answer within {:?}", health::CHECK_TIMEOUT),
            }),
        };
        let state = match &result {
            Ok(()) => ComponentState::Up,
            Err(err) => ComponentState::Down(err.to_string()),
        };
        self.inner.health.set_docker(state);
        match result {
            // Only an engine that cannot be reached refuses the submission; an odd answer from
            // one that can is the task's to meet.
            Err(err @ HubError::RuntimeUnavailable { .. }) => Err(err),
            _ => Ok(()),
        }
    }

    /// Fails with `conflict` while a task for `project` is queued or running.
    async fn ensure_idle(&self, project: &Project) -> Result<()> {
        let unfinished =
            orchestration::unfinished_task(self.inner.tasks.as_ref(), project.id).await?;
        match unfinished {
            Some(task) => Err(HubError::Conflict {
                message: format!(
                    "task {} ({}) is still {} for project '{}'; wait for it or revoke it",
                    task.id, task.kind, task.state, project.slug
                ),
            }),
            None => Ok(()),
        }
    }

    /// Counts of projects by status.
    pub async fn stats(&self) -> Result<ProjectStats> {
        self.inner.registry.stats().await
    }

    /// Which of the project's ports are busy on the host right now.
    pub async fn check_ports(&self, key: impl Into<ProjectKey>) -> Result<Vec<BusyPort>> {
        self.inner.registry.check_ports(key).await
    }

    /// Starts the project's stack in the background; returns the task id at once. A second
    /// operation on the same project while one runs is refused with `conflict`.
    pub async fn start_project(&self, key: impl Into<ProjectKey>) -> Result<TaskId> {
        self.submit_project_job(key, jobs::START_PROJECT, None)
            .await
    }

    /// Stops the project's stack (volumes are kept).
    pub async fn stop_project(&self, key: impl Into<ProjectKey>) -> Result<TaskId> {
        self.submit_project_job(key, jobs::STOP_PROJECT, None).await
    }

    /// Stops, then starts the project's stack.
    pub async fn restart_project(&self, key: impl Into<ProjectKey>) -> Result<TaskId> {
        self.submit_project_job(key, jobs::RESTART_PROJECT, None)
            .await
    }

    /// Recreates one service of the project's stack.
    pub async fn restart_service(
        &self,
        key: impl Into<ProjectKey>,
        service: &str,
    ) -> Result<TaskId> {
        let project = self.project(key).await?;
        let stack = self
            .inner
            .orchestrator
            .stack(&project, ExtraPorts::Read)
            .await?;
        if stack.service(service).is_none() {
            return Err(HubError::not_found(
                Entity::Service,
                format!("{}/{service}", project.slug),
            ));
        }
        self.submit_project_job(project.id, jobs::RESTART_SERVICE, Some(service))
            .await
    }

    async fn submit_project_job(
        &self,
        key: impl Into<ProjectKey>,
        kind: &str,
        service: Option<&str>,
    ) -> Result<TaskId> {
        let project = self.project(key).await?;
        // Another host's engine is its workers' to reach, not this process's.
        if project.host == LOCAL_HOST {
            self.ensure_engine_up().await?;
        }
        let job = JobRequest::new(kind, orchestration::payload(project.id, service))
            .project(project.id)
            .options(JobOptions {
                exclusive_key: Some(orchestration::exclusive_key(project.id)),
                queue: Some(project.queue(&self.inner.config.tasks.default_queue)),
                ..JobOptions::default()
            });
        self.submit(job).await
    }

    /// The stack a start of the project would run: its services after interpolation and port
    /// remapping. Extra ports its compose file publishes are leased now if they were not yet,
    /// so the ports shown are the ones a start uses.
    pub async fn effective_stack(&self, key: impl Into<ProjectKey>) -> Result<EffectiveStack> {
        let project = self.project(key).await?;
        self.inner.orchestrator.effective_stack(&project).await
    }

    /// Per-service state, health and ports of the project's stack, read from the engine.
    pub async fn project_status(&self, key: impl Into<ProjectKey>) -> Result<StackStatus> {
        let project = self.project(key).await?;
        self.inner.orchestrator.status(&project).await
    }

    /// The last `lines` lines of one service's output (at most
    /// [`orchestration::MAX_LOG_LINES`]).
    pub async fn logs(
        &self,
        key: impl Into<ProjectKey>,
        service: &str,
        lines: usize,
    ) -> Result<Vec<String>> {
        let project = self.project(key).await?;
        let lines = lines.min(orchestration::MAX_LOG_LINES);
        self.inner.orchestrator.logs(&project, service, lines).await
    }

    /// The last `lines` lines of one service's output, then new lines as they come.
    pub async fn follow_logs(
        &self,
        key: impl Into<ProjectKey>,
        service: &str,
        lines: usize,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let project = self.project(key).await?;
        let lines = lines.min(orchestration::MAX_LOG_LINES);
        self.inner
            .orchestrator
            .follow_logs(&project, service, lines)
            .await
    }

    /// Corrects project statuses from what the engine really runs (see
    /// [`Orchestrator::reconcile`]).
    pub async fn reconcile(&self) -> Result<Vec<ReconcileChange>> {
        self.inner
            .orchestrator
            .reconcile(self.inner.tasks.as_ref())
            .await
    }

    /// The container runtime.
    pub fn runtime(&self) -> &dyn Runtime {
        self.inner.orchestrator.runtime()
    }

    /// Queues a background job; returns its task id at once.
    pub async fn submit(&self, job: JobRequest) -> Result<TaskId> {
        self.inner.tasks.enqueue(job).await
    }

    /// A task's record. An unknown (or expired) id is `not_found` — never `PENDING`.
    pub async fn task(&self, id: TaskId) -> Result<TaskRecord> {
        self.inner
            .tasks
            .get(id)
            .await?
            .ok_or_else(|| HubError::not_found(Entity::Task, id))
    }

    /// Task records matching `query`, in its order (when the backend keeps a history).
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>> {
        query.validate()?;
        self.history()?.list(query).await
    }

    /// Revokes a task (see [`TaskBackend::revoke`]).
    pub async fn revoke(&self, id: TaskId, terminate: bool) -> Result<TaskRecord> {
        self.inner.tasks.revoke(id, terminate).await
    }

    /// Every task event after `after` (`None`: from now on), then live ones — from every process
    /// sharing the store.
    pub async fn subscribe(&self, after: Option<EventCursor>) -> Result<EventSubscription> {
        self.inner.tasks.subscribe(after).await
    }

    /// Follows one task: its current state, then each change until the terminal one; or,
    /// resumed `after` a cursor, what followed it. `not_found` for an unknown task.
    pub async fn watch(&self, id: TaskId, after: Option<EventCursor>) -> Result<TaskWatch> {
        // Subscribed before the read, so no change in between is missed.
        let subscription = self.subscribe(after).await?;
        let current = self.task(id).await?;
        Ok(TaskWatch::new(current, subscription, after.is_some()))
    }

    /// The hub's figures in the Prometheus text format (see [`crate::metrics`]), with the
    /// HTTP figures a frontend recorded in [`Hub::http_metrics`].
    pub async fn metrics(&self) -> Result<String> {
        let (tasks, projects, histograms) =
            tokio::try_join!(self.task_stats(), self.stats(), async {
                self.monitor()?.histograms().await
            },)?;
        // The alerts from the stats just read, not from a second read of them.
        let alerts = self.overview_of(tasks.clone()).await?.alerts;
        Ok(crate::metrics::render(&crate::metrics::Figures {
            tasks: &tasks,
            projects: &projects,
            latency: &histograms,
            alerts: &alerts,
            http: &self.inner.http_metrics,
        }))
    }

    /// Where a frontend records the requests it serves, for [`Hub::metrics`].
    pub fn http_metrics(&self) -> &crate::metrics::HttpMetrics {
        &self.inner.http_metrics
    }

    fn monitor(&self) -> Result<&dyn TaskMonitor> {
        self.inner
            .tasks
            .monitor()
            .ok_or_else(|| unsupported(self.inner.tasks.name(), "monitoring"))
    }

    fn history(&self) -> Result<&dyn TaskHistory> {
        self.inner
            .tasks
            .history()
            .ok_or_else(|| unsupported(self.inner.tasks.name(), "task history"))
    }

    /// The workers: online ones, and offline ones until they age out
    /// ([`crate::monitor::MonitorConfig::worker_expiry`]).
    pub async fn monitor_workers(&self) -> Result<WorkersView> {
        let stats = self.task_stats().await?;
        Ok(self.workers_view(stats.workers))
    }

    fn workers_view(&self, workers: Vec<crate::tasks::WorkerInfo>) -> WorkersView {
        monitor::views::workers_view(
            workers,
            self.inner.config.monitor.worker_expiry,
            chrono::Utc::now(),
        )
    }

    /// The queues: depth, running tasks, oldest waiting task, consumers.
    pub async fn monitor_queues(&self) -> Result<Vec<QueueView>> {
        let stats = self.task_stats().await?;
        Ok(monitor::views::queue_views(
            stats.queues,
            &stats.workers,
            chrono::Utc::now(),
        ))
    }

    /// One page of the task history, filtered and sorted as `query` says.
    pub async fn monitor_tasks(&self, query: &TaskQuery) -> Result<TaskHistoryPage> {
        query.validate()?;
        let page = self.history()?.page(query).await?;
        Ok(TaskHistoryPage {
            tasks: page.tasks.iter().map(TaskStatus::from).collect(),
            total: page.total,
            limit: query.limit,
            offset: query.offset,
        })
    }

    /// One task with its timeline; `not_found` for an unknown (or expired) id.
    pub async fn monitor_task(&self, id: TaskId) -> Result<TaskDetail> {
        let (record, timeline) = tokio::try_join!(self.task(id), self.history()?.timeline(id))?;
        Ok(TaskDetail::new(&record, timeline))
    }

    /// Throughput, outcome rates and latency percentiles over the `window` ending now (at
    /// most [`crate::monitor::MAX_WINDOW`]).
    pub async fn monitor_stats(&self, window: std::time::Duration) -> Result<WindowStats> {
        let window = window.min(monitor::MAX_WINDOW);
        let now = chrono::Utc::now();
        let since = now - chrono::Duration::from_std(window).unwrap_or_default();
        let data = self.monitor()?.window(since).await?;
        Ok(WindowStats::compute(data, window, now))
    }

    /// The alerts firing now (see [`crate::monitor::alerts`]).
    pub async fn monitor_alerts(&self) -> Result<Vec<Alert>> {
        Ok(self.monitor_overview().await?.alerts)
    }

    /// Workers, queues, the last hour's stats and the alerts, read at once.
    pub async fn monitor_overview(&self) -> Result<MonitorOverview> {
        self.overview_of(self.task_stats().await?).await
    }

    /// The overview around backend stats already read.
    async fn overview_of(&self, stats: BackendStats) -> Result<MonitorOverview> {
        let thresholds = &self.inner.config.monitor.alerts;
        let running_query = TaskQuery {
            states: TaskState::ALL
                .into_iter()
                .filter(|s| s.is_active())
                .collect(),
            limit: MAX_STUCK_CHECKS,
            ..TaskQuery::default()
        };
        // One read of the longer window serves the hour's stats and the failure window's.
        let longest = monitor::DEFAULT_WINDOW.max(thresholds.failure_window);
        let now = chrono::Utc::now();
        let since = now - chrono::Duration::from_std(longest).unwrap_or_default();
        // Only projects in error can raise an alert: the rest of the registry is not read.
        let (window, running, in_error) = tokio::try_join!(
            self.monitor()?.window(since),
            self.history()?.list(&running_query),
            self.inner.registry.with_status(ProjectStatus::Error),
        )?;
        let failures = WindowStats::compute(window.clone(), thresholds.failure_window, now);
        let hour = WindowStats::compute(window, monitor::DEFAULT_WINDOW, now);
        let history = self.history()?;
        let timelines = futures_util::future::try_join_all(
            running.iter().map(|task| history.timeline(task.id)),
        )
        .await?;
        let queues = monitor::views::queue_views(stats.queues, &stats.workers, now);
        let workers = self.workers_view(stats.workers);
        let alerts = monitor::alerts::evaluate(
            thresholds,
            &monitor::alerts::Snapshot {
                now,
                workers_online: workers.online,
                queues: &queues,
                failures: &failures,
                running: running
                    .iter()
                    .zip(&timelines)
                    .map(|(record, timeline)| monitor::alerts::RunningTask {
                        record,
                        last_change: timeline.last(),
                    })
                    .collect(),
                projects: &in_error,
            },
        );
        Ok(MonitorOverview {
            backend: stats.backend,
            workers,
            queues,
            stats: hour,
            alerts,
        })
    }

    /// Workers, queues, task history and rates.
    pub async fn task_stats(&self) -> Result<BackendStats> {
        self.monitor()?.stats().await
    }

    /// Stops taking tasks, lets running ones finish within the configured grace period
    /// (interrupting the rest), lets a delete whose caller is gone finish (up to 20 s), and
    /// closes the database. The hub is unusable afterwards.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        // A change whose caller is gone may still run: it ends before the database closes.
        self.inner.changes.close();
        if tokio::time::timeout(CHANGES_GRACE, self.inner.changes.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.inner.changes.len(),
                "changes still running at close are cut short"
            );
        }
        if let Err(err) = self
            .inner
            .tasks
            .shutdown(self.inner.config.tasks.shutdown_grace)
            .await
        {
            tracing::warn!(error = %err, "task backend did not stop cleanly");
        }
        self.inner.registry.database().close().await;
    }
}

/// How long [`Hub::close`] waits for changes still running (a delete taking a stack down).
const CHANGES_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

fn unsupported(backend: &str, what: &str) -> HubError {
    HubError::BackendUnavailable {
        message: format!("the {backend} task backend does not offer {what}"),
    }
}
