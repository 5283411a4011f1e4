//! # hub-core
//!
//! The engine of CommandCenter Hub, embeddable in any Rust program:
//!
//! - [`registry`] — projects (a folder plus a stack of services) stored with sqlx,
//!   SQLite by default, PostgreSQL when several hosts share one registry ([`db`]);
//! - [`ports`] — the [`PortAllocator`] that gives every project its own set of host ports;
//! - [`hub`] — the [`Hub`] facade that ties them together;
//! - [`error`] — the one [`HubError`] type with stable [`ErrorCode`]s.
//!
//! ```no_run
//! # async fn demo() -> hub_core::Result<()> {
//! use hub_core::{Hub, HubConfig, NewProject};
//!
//! let config = HubConfig::with_data_dir("/tmp/hub-demo").project_roots(["/srv"]);
//! let hub = Hub::open(config).await?;
//! let project = hub.create_project(NewProject::new("Alpha", "/srv/alpha")).await?;
//! assert_eq!(project.ports.backend, 8010);
//! # Ok(()) }
//! ```

pub mod browse;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod hub;
pub mod metrics;
pub mod monitor;
pub mod orchestration;
pub mod paths;
pub mod ports;
pub mod project;
pub mod registry;
pub mod runtime;
pub mod stack;
mod sync;
pub mod tasks;

pub use config::{HubConfig, HubMode};
pub use error::{Entity, ErrorCode, HubError, Result};
pub use hub::{Hub, HubBuilder};
pub use ports::{BusyPort, PortAllocator, PortConfig, PortRequest, PortRole, PortSet};
pub use project::{
    Health, NewProject, Project, ProjectKey, ProjectPage, ProjectStats, ProjectStatus,
    ProjectUpdate, slugify,
};
pub use registry::Registry;
