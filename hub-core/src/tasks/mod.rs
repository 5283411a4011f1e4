//! Background tasks: operations that take minutes run here, and callers follow them by id.
//!
//! - [`model`] — states, records, events, queries;
//! - [`backend`] — the [`TaskBackend`] trait the hub depends on;
//! - [`handler`] — [`JobHandler`]s per job kind and the [`TaskContext`] they report through;
//! - [`local`] — the in-process backend (the default): tokio workers, the hub's database as the
//!   one store every process shares;
//! - [`redis`] (feature `redis`) — the Redis backend: workers in other processes and on other
//!   hosts;
//! - [`history`] — timelines, samples and histograms kept for monitoring;
//! - [`config`] — [`TaskConfig`].

pub mod backend;
pub mod config;
mod events;
pub mod handler;
pub mod history;
mod identity;
pub mod local;
pub mod model;
mod recent;
#[cfg(feature = "redis")]
pub mod redis;
pub(crate) mod run;
mod store;
pub mod watch;

pub use backend::{
    BackendContext, BackendFactory, EventSubscription, TaskBackend, TaskHistory, TaskMonitor,
};
pub use config::{BackendKind, TaskConfig};
pub use handler::{Handlers, JobHandler, JobResult, ProgressSink, Retryable, TaskContext};
pub use local::{LocalBackend, LocalBackendFactory};
pub use model::{
    BackendStats, CancelReason, DEFAULT_LIST_LIMIT, EventCursor, JobOptions, JobRequest,
    KindCounts, MAX_LIST_LIMIT, QueueInfo, TaskError, TaskEvent, TaskId, TaskPage, TaskQuery,
    TaskRecord, TaskSort, TaskState, TaskStatus, TimeLimits, WorkerInfo, codes,
};
#[cfg(feature = "redis")]
pub use redis::{RedisBackend, RedisBackendFactory, RedisSettings};
pub use watch::{TaskWatch, WatchItem};
