//! The [`Hub`] facade: the one object frontends talk to.

use std::sync::Arc;

use crate::config::HubConfig;
use crate::db::Database;
use crate::error::Result;
use crate::ports::BusyPort;
use crate::project::{NewProject, Project, ProjectKey, ProjectStats, ProjectUpdate};
use crate::registry::Registry;

/// A running hub: registry, port allocator and (in later layers) tasks and runtime.
///
/// Cloning is cheap and shares the same hub.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    config: HubConfig,
    registry: Registry,
}

impl Hub {
    /// Opens the hub `config` describes, creating its data folder and database if needed.
    pub async fn open(config: HubConfig) -> Result<Self> {
        let db = Database::open(&config.effective_database_url()).await?;
        let registry = Registry::open(db, config.ports.clone()).await?;
        tracing::info!(database = %registry.database().display_url(), "hub opened");
        Ok(Hub {
            inner: Arc::new(HubInner { config, registry }),
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

    /// Closes the database; the hub is unusable afterwards.
    pub async fn close(&self) {
        self.inner.registry.database().close().await;
    }
}
