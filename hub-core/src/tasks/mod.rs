//! Background tasks: operations that take minutes run here, and callers follow them by id.
//!
//! - [`model`] — states, records, events, queries;
//! - [`backend`] — the [`TaskBackend`] trait the hub depends on;
//! - [`handler`] — [`JobHandler`]s per job kind and the [`TaskContext`] they report through;
//! - [`local`] — the in-process backend (the default);
//! - [`config`] — [`TaskConfig`].

pub mod backend;
pub mod config;
pub mod handler;
pub mod local;
pub mod model;
mod store;

pub use backend::{EventSubscription, TaskBackend};
pub use config::{BackendKind, TaskConfig};
pub use handler::{Handlers, JobHandler, JobResult, ProgressSink, TaskContext};
pub use local::LocalBackend;
pub use model::{
    BackendStats, CancelReason, JobOptions, JobRequest, KindCounts, QueueInfo, TaskError,
    TaskEvent, TaskId, TaskQuery, TaskRecord, TaskState, TimeLimits, WorkerInfo, codes,
};
