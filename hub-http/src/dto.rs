//! The API's JSON shapes. Field names follow the original hub where it had them.

use chrono::{DateTime, Utc};
use hub_core::{Health, PortRequest, Project, ProjectStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A project, with the original's flat port fields.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectJson {
    /// Registry id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// URL-safe name.
    pub slug: String,
    /// Absolute path of the project folder.
    pub path: String,
    /// The engine host it runs on: `local`, or a host whose workers take the queue of that
    /// name.
    pub host: String,
    /// Host port of the backend.
    pub backend_port: u16,
    /// Host port of the frontend.
    pub frontend_port: u16,
    /// Host port of PostgreSQL.
    pub postgres_port: u16,
    /// Host port of Redis.
    pub redis_port: u16,
    /// `stopped`, `starting`, `running`, `stopping` or `error`.
    pub status: ProjectStatus,
    /// `healthy`, `unhealthy` or `unknown`.
    pub health: Health,
    /// Why the last operation failed.
    pub last_error: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When its stack last finished starting.
    pub last_started: Option<DateTime<Utc>>,
    /// When its stack last finished stopping.
    pub last_stopped: Option<DateTime<Utc>>,
}

impl From<Project> for ProjectJson {
    fn from(p: Project) -> Self {
        ProjectJson {
            id: p.id,
            name: p.name,
            slug: p.slug,
            path: p.path.display().to_string(),
            host: p.host,
            backend_port: p.ports.backend,
            frontend_port: p.ports.frontend,
            postgres_port: p.ports.postgres,
            redis_port: p.ports.redis,
            status: p.status,
            health: p.health,
            last_error: p.last_error,
            created_at: p.created_at,
            updated_at: p.updated_at,
            last_started: p.last_started,
            last_stopped: p.last_stopped,
        }
    }
}

/// Body of `POST /api/projects`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Display name (1–255 characters; its slug must be unique).
    pub name: String,
    /// Absolute path of an existing folder.
    pub path: String,
    /// Ports to hold instead of allocated ones (any subset of roles).
    #[serde(default)]
    pub ports: Option<PortRequest>,
    /// The engine host it runs on (default `local`); its operations go to the queue of that
    /// name.
    #[serde(default)]
    pub host: Option<String>,
}

/// Body of `PATCH /api/projects/{id}`; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    /// New name (the slug follows).
    #[serde(default)]
    pub name: Option<String>,
    /// New folder.
    #[serde(default)]
    pub path: Option<String>,
    /// New ports for some roles.
    #[serde(default)]
    pub ports: Option<PortRequest>,
    /// New engine host (refused while the stack runs).
    #[serde(default)]
    pub host: Option<String>,
}

/// `?limit=&offset=` of a paged list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// Page size (1 to 1000); without `limit` and `offset`, the whole list.
    pub limit: Option<u32>,
    /// Items skipped before the page.
    pub offset: Option<u32>,
}

/// `?delete_data=` of `DELETE /api/projects/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeleteQuery {
    /// Also remove the project's volumes (its data).
    pub delete_data: Option<bool>,
}

/// The answer to an operation that runs in the background.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskAccepted {
    /// Follow it at `/api/tasks/{task_id}/status` or `/api/tasks/{task_id}/events`.
    pub task_id: Uuid,
    /// Always `pending`.
    pub status: String,
    /// What was queued.
    pub message: String,
}

/// A task's state as the original's status endpoint gave it (the view lives in the core, so
/// Python sees the same shape).
pub type TaskStatusJson = hub_core::tasks::TaskStatus;

/// Filters of `GET /api/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct TaskListQuery {
    /// One state or several, comma-separated (`RUNNING,PENDING`).
    pub state: Option<String>,
    /// Job kind.
    pub kind: Option<String>,
    /// Project id.
    pub project_id: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Skip this many.
    pub offset: Option<u32>,
}

/// `?terminate=` of a revoke.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RevokeQuery {
    /// Cancel the task even while it runs.
    pub terminate: Option<bool>,
}

/// Parameters of the log routes.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LogsQuery {
    /// Last N lines (default 100, at most 10000).
    pub lines: Option<usize>,
    /// The original v1 route's name for `lines`.
    pub tail: Option<usize>,
    /// Keep the response open and stream new lines (text/plain).
    pub follow: Option<bool>,
}

/// Lines of one service's output.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogsJson {
    /// Project id.
    pub project_id: i64,
    /// Service name.
    pub service: String,
    /// The lines.
    pub logs: Vec<String>,
    /// How many lines.
    pub lines: usize,
}

/// `?path=` of the folder browser.
#[derive(Debug, Deserialize, IntoParams)]
pub struct BrowseQuery {
    /// Folder to list (default: the first browse root).
    pub path: Option<String>,
}

/// Where folder browsing starts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HomeJson {
    /// Absolute path.
    pub path: String,
}

/// `GET /`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RootJson {
    /// `CommandCenter Hub`.
    pub app: String,
    /// Version of the hub.
    pub version: String,
    /// `running`.
    pub status: String,
}

/// `GET /health`: the hub and each component.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthJson {
    /// `healthy` while the hub can serve (database reachable), else `unhealthy`.
    pub status: String,
    /// Version of the hub.
    pub version: String,
    /// `ok` or the error.
    pub database: String,
    /// `ok` or the error.
    pub task_backend: String,
    /// `ok` or the error (the hub serves without Docker; operations then fail).
    pub docker: String,
}
