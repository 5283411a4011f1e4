//! The one error type of the hub and its stable, machine-readable codes.
//!
//! Frontends (HTTP, Python) map [`ErrorCode`]s to their own vocabulary — status codes, exception
//! classes — and never inspect messages, which are written for people.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ports::PortRole;

/// A crate-wide result, defaulting to [`HubError`].
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// What kind of thing a [`HubError::NotFound`] was looking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// A registered project.
    Project,
    /// A background task.
    Task,
    /// A service of a project's stack.
    Service,
    /// A file or folder.
    Path,
    /// A container of the engine.
    Container,
    /// An image of the engine.
    Image,
    /// A network of the engine.
    Network,
    /// A volume of the engine.
    Volume,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Project => "project",
            Entity::Task => "task",
            Entity::Service => "service",
            Entity::Path => "path",
            Entity::Container => "container",
            Entity::Image => "image",
            Entity::Network => "network",
            Entity::Volume => "volume",
        })
    }
}

/// Every failure the hub reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The named thing does not exist.
    #[error("{entity} '{key}' not found")]
    NotFound {
        /// What was looked up.
        entity: Entity,
        /// The id, slug or path used to look it up.
        key: String,
    },

    /// A project with the same name, slug or path is already registered.
    #[error("a project with {field} '{value}' already exists")]
    AlreadyExists {
        /// `name`, `slug` or `path`.
        field: &'static str,
        /// The clashing value.
        value: String,
    },

    /// Input was rejected before anything changed.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The offending field, as the caller named it (`name`, `path`, `ports.backend`, …).
        field: String,
        /// What is wrong and, where it helps, what would be accepted.
        message: String,
    },

    /// An explicitly requested port is already held by another project.
    #[error("{role} port {port} is already held by project '{holder}'")]
    PortConflict {
        /// The role the caller wanted the port for.
        role: PortRole,
        /// The port.
        port: u16,
        /// Name of the project that holds it.
        holder: String,
    },

    /// No port (or set of ports) could be found, or a requested port cannot be bound on the host.
    #[error("{message}")]
    PortUnavailable {
        /// Which ports and why.
        message: String,
    },

    /// The caller may not see or do this (e.g. a folder outside the browse roots).
    #[error("{message}")]
    Forbidden {
        /// Why.
        message: String,
    },

    /// The operation clashes with one already running (e.g. a second start of the same project).
    #[error("{message}")]
    Conflict {
        /// What is already happening.
        message: String,
    },

    /// The database or the task backend (database queue, Redis) cannot be reached or refused
    /// the request. The message names which, and where.
    #[error("{message}")]
    BackendUnavailable {
        /// What failed.
        message: String,
    },

    /// The container engine cannot be reached.
    #[error("container runtime unavailable at {address}: {message}")]
    RuntimeUnavailable {
        /// The address that was tried (socket path or URL).
        address: String,
        /// What failed.
        message: String,
    },

    /// The registry database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// A database migration failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the hub was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A bug or an unexpected state; the message says what.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The stable, machine-readable kind of a [`HubError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// See [`HubError::NotFound`].
    NotFound,
    /// See [`HubError::AlreadyExists`].
    AlreadyExists,
    /// See [`HubError::InvalidInput`].
    InvalidInput,
    /// See [`HubError::PortConflict`].
    PortConflict,
    /// See [`HubError::PortUnavailable`].
    PortUnavailable,
    /// See [`HubError::Forbidden`].
    Forbidden,
    /// See [`HubError::Conflict`].
    Conflict,
    /// See [`HubError::BackendUnavailable`].
    BackendUnavailable,
    /// See [`HubError::RuntimeUnavailable`].
    RuntimeUnavailable,
    /// Database, I/O or other unexpected failures.
    Internal,
}

impl ErrorCode {
    /// The code as a `snake_case` string, as it appears in JSON and Python.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::PortConflict => "port_conflict",
            ErrorCode::PortUnavailable => "port_unavailable",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::RuntimeUnavailable => "runtime_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HubError {
    /// The stable kind of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::NotFound { .. } => ErrorCode::NotFound,
            HubError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            HubError::InvalidInput { .. } => ErrorCode::InvalidInput,
            HubError::PortConflict { .. } => ErrorCode::PortConflict,
            HubError::PortUnavailable { .. } => ErrorCode::PortUnavailable,
            HubError::Forbidden { .. } => ErrorCode::Forbidden,
            HubError::Conflict { .. } => ErrorCode::Conflict,
            HubError::BackendUnavailable { .. } => ErrorCode::BackendUnavailable,
            HubError::RuntimeUnavailable { .. } => ErrorCode::RuntimeUnavailable,
            HubError::Database(_)
            | HubError::Migration(_)
            | HubError::Io { .. }
            | HubError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The input field this error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            HubError::InvalidInput { field, .. } => Some(field),
            HubError::AlreadyExists { field, .. } => Some(field),
            HubError::PortConflict { role, .. } => Some(role.field_name()),
            _ => None,
        }
    }

    /// Shorthand for [`HubError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        HubError::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`HubError::NotFound`].
    pub fn not_found(entity: Entity, key: impl fmt::Display) -> Self {
        HubError::NotFound {
            entity,
            key: key.to_string(),
        }
    }

    /// Shorthand for [`HubError::Io`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HubError::Io {
            context: context.into(),
            source,
        }
    }
}
