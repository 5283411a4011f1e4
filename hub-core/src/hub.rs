//! The [`Hub`] facade: the one object frontends talk to.

use std::sync::Arc;

use crate::config::HubConfig;
use crate::db::Database;
use crate::error::{Entity, HubError, Result};
use crate::ports::BusyPort;
use crate::project::{NewProject, Project, ProjectKey, ProjectStats, ProjectUpdate};
use crate::registry::Registry;
use crate::tasks::{
    BackendKind, BackendStats, EventSubscription, Handlers, JobRequest, LocalBackend, TaskBackend,
    TaskId, TaskQuery, TaskRecord,
};

/// A running hub: registry, port allocator and task backend.
///
/// Cloning is cheap and shares the same hub. Call [`Hub::close`] to stop cleanly; dropping the
/// last clone stops the task workers abruptly, as a crash would.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    registry: Registry,
    tasks: Arc<dyn TaskBackend>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("tasks", &self.inner.tasks.name())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Opens the hub `config` describes, creating its data folder and database if needed.
    pub async fn open(config: HubConfig) -> Result<Self> {
        Hub::open_with(config, Handlers::new()).await
    }

    /// Opens the hub with extra job handlers (they win over built-in ones of the same kind).
    pub async fn open_with(config: HubConfig, handlers: Handlers) -> Result<Self> {
        let db = Database::open(&config.effective_database_url()).await?;
        let registry = Registry::open(db.clone(), config.ports.clone()).await?;
        let tasks: Arc<dyn TaskBackend> = match &config.tasks.backend {
            BackendKind::InProcess => {
                Arc::new(LocalBackend::open(db, config.tasks.clone(), handlers).await?)
            }
        };
        tracing::info!(
            database = %registry.database().display_url(),
            tasks = tasks.name(),
            "hub opened"
        );
        Ok(Hub {
            inner: Arc::new(HubInner {
                config,
                registry,
                tasks,
            }),
        })
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

    /// Renames, moves or re-ports a project; a new name gives a new slug.
    pub async fn update_project(
        &self,
        key: impl Into<ProjectKey>,
        update: ProjectUpdate,
    ) -> Result<Project> {
        self.inner.registry.update(key, update).await
    }

    /// Removes a project from the registry and releases its ports.
    pub async fn delete_project(&self, key: impl Into<ProjectKey>) -> Result<Project> {
        self.inner.registry.delete(key).await
    }

    /// Counts of projects by status.
    pub async fn stats(&self) -> Result<ProjectStats> {
        self.inner.registry.stats().await
    }

    /// Which of the project's ports are busy on the host right now.
    pub async fn check_ports(&self, key: impl Into<ProjectKey>) -> Result<Vec<BusyPort>> {
        self.inner.registry.check_ports(key).await
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

    /// Task records matching `query`, newest first.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>> {
        self.inner.tasks.list(query).await
    }

    /// Revokes a task (see [`TaskBackend::revoke`]).
    pub async fn revoke(&self, id: TaskId, terminate: bool) -> Result<TaskRecord> {
        self.inner.tasks.revoke(id, terminate).await
    }

    /// Task events after sequence number `since` (still buffered), then live ones.
    pub fn subscribe(&self, since: Option<u64>) -> EventSubscription {
        self.inner.tasks.subscribe(since)
    }

    /// Workers, queues, task history and rates.
    pub async fn task_stats(&self) -> Result<BackendStats> {
        self.inner.tasks.stats().await
    }

    /// Stops taking tasks, lets running ones finish within the configured grace period
    /// (interrupting the rest), and closes the database. The hub is unusable afterwards.
    pub async fn close(&self) {
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
