//! Everything a [`crate::Hub`] is opened with, in one place, with working defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::db::Database;
use crate::error::Result;
use crate::monitor::MonitorConfig;
use crate::paths::Roots;
use crate::ports::PortConfig;
use crate::tasks::TaskConfig;

/// File name of the embedded registry inside the data folder.
pub const DATABASE_FILE: &str = "hub.db";

/// How to open a hub. `HubConfig::default()` gives the embedded setup: a SQLite file in the
/// platform data folder and the original's port layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HubConfig {
    /// Folder for the embedded database and other state; created on first use.
    pub data_dir: PathBuf,
    /// Registry database URL (`sqlite://…` or `postgres://…`); `None` means
    /// `sqlite://<data_dir>/hub.db`.
    pub database_url: Option<String>,
    /// Port layout.
    pub ports: PortConfig,
    /// Background tasks: backend, concurrency, limits, expiry.
    pub tasks: TaskConfig,
    /// Docker engine address (`unix:///…`, `tcp://…`); `None` means `HUB_DOCKER_HOST`, else
    /// `DOCKER_HOST`, else the default socket.
    pub docker_host: Option<String>,
    /// Reconcile project statuses with the engine right after opening (on by default; never
    /// in [`HubMode::Client`]).
    pub reconcile_on_open: bool,
    /// What this process does with tasks: submit and run them, only submit, or only run.
    pub mode: HubMode,
    /// Folders that project folders must lie inside; each must exist. Empty means any folder:
    /// a program that embeds the hub is trusted with its own paths. A frontend that serves
    /// others sets them (`hub serve` confines to its browse roots, the home folder by default):
    /// the hub usually runs beside the Docker socket, and a project folder is what its
    /// containers may bind-mount.
    pub project_roots: Vec<PathBuf>,
    /// Monitoring: how long offline workers stay listed, alert thresholds.
    pub monitor: MonitorConfig,
}

/// What a process that opens a hub does with tasks. Several processes may share one store, each
/// in its own mode; see the README's process model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HubMode {
    /// Submits tasks and runs them (the tasks it submits, and any queued by clients): `hub
    /// serve`, and the Python `Hub` by default. Registers as a worker and recovers tasks whose
    /// worker is gone.
    #[default]
    Embedded,
    /// Submits tasks and reads them, never runs or recovers any: `hub serve --no-worker`, the
    /// Python `Hub(run_tasks=False)` beside a running server.
    Client,
    /// Runs tasks that others queue, and serves nothing: `hub worker`.
    Worker,
}

impl HubMode {
    /// `embedded`, `client` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            HubMode::Embedded => "embedded",
            HubMode::Client => "client",
            HubMode::Worker => "worker",
        }
    }

    /// Whether a process in this mode runs tasks.
    pub fn runs_tasks(self) -> bool {
        self != HubMode::Client
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            data_dir: default_data_dir(),
            database_url: None,
            ports: PortConfig::default(),
            tasks: TaskConfig::default(),
            docker_host: None,
            reconcile_on_open: true,
            mode: HubMode::Embedded,
            project_roots: Vec::new(),
            monitor: MonitorConfig::default(),
        }
    }
}

impl HubConfig {
    /// The defaults, with state kept in `data_dir`.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            data_dir: data_dir.into(),
            ..HubConfig::default()
        }
    }

    /// Uses the database at `url` (`sqlite://…` or `postgres://…`).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Uses the port layout `ports`.
    pub fn ports(mut self, ports: PortConfig) -> Self {
        self.ports = ports;
        self
    }

    /// Uses the task settings `tasks`.
    pub fn tasks(mut self, tasks: TaskConfig) -> Self {
        self.tasks = tasks;
        self
    }

    /// Opens in `mode` (embedded, client or worker).
    pub fn mode(mut self, mode: HubMode) -> Self {
        self.mode = mode;
        self
    }

    /// Accepts project folders only inside `roots`.
    pub fn project_roots(mut self, roots: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.project_roots = roots.into_iter().map(Into::into).collect();
        self
    }

    /// The project roots in force: the configured ones, each required to exist, or `/`.
    pub fn effective_project_roots(&self) -> Result<Roots> {
        if self.project_roots.is_empty() {
            Ok(Roots::single(std::path::PathBuf::from("/")))
        } else {
            Roots::existing("project_root", &self.project_roots)
        }
    }

    /// Uses the Docker engine at `address`.
    pub fn docker_host(mut self, address: impl Into<String>) -> Self {
        self.docker_host = Some(address.into());
        self
    }

    /// The database URL in effect.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => Database::sqlite_url(&self.data_dir.join(DATABASE_FILE)),
        }
    }
}

/// The platform's per-user data folder for the hub (`~/.local/share/commandcenter-hub` on Linux),
/// or `./.commandcenter-hub` when the platform has none.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|dir| dir.join("commandcenter-hub"))
        .unwrap_or_else(|| Path::new(".commandcenter-hub").to_path_buf())
}
