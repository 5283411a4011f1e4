//! Settings of the task engine; the defaults follow the original's Celery setup.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{TimeLimits, duration_secs};
use crate::error::{HubError, Result};

/// Which [`super::TaskBackend`] a hub runs tasks on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum BackendKind {
    /// Tokio workers inside the hub process, records in the hub's database (the default).
    #[default]
    InProcess,
}

/// How tasks are queued, run and kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskConfig {
    /// The backend.
    pub backend: BackendKind,
    /// Tasks run at once (workers); default 2, like the original's Celery concurrency.
    pub concurrency: u32,
    /// Queue for jobs that name none (default `orchestration`).
    pub default_queue: String,
    /// Default soft (3600 s) and hard (7200 s) time limits.
    pub limits: TimeLimits,
    /// Finished records older than this are purged (default 3600 s; zero keeps them forever).
    #[serde(with = "duration_secs")]
    pub result_expires: Duration,
    /// How often the expiry sweep runs (default 60 s).
    #[serde(with = "duration_secs")]
    pub sweep_interval: Duration,
    /// How long a handler may take to stop after `revoke(terminate)` before it is aborted.
    #[serde(with = "duration_secs")]
    pub revoke_grace: Duration,
    /// How long shutdown waits for running tasks before interrupting them.
    #[serde(with = "duration_secs")]
    pub shutdown_grace: Duration,
    /// Recent events kept for subscribers that resume (`Last-Event-ID`).
    pub event_buffer: usize,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            backend: BackendKind::InProcess,
            concurrency: 2,
            default_queue: "orchestration".into(),
            limits: TimeLimits::default(),
            result_expires: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(60),
            revoke_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            event_buffer: 4096,
        }
    }
}

impl TaskConfig {
    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(HubError::invalid("tasks.concurrency", "must be at least 1"));
        }
        if self.default_queue.trim().is_empty() {
            return Err(HubError::invalid(
                "tasks.default_queue",
                "must not be empty",
            ));
        }
        if self.limits.hard.is_zero() {
            return Err(HubError::invalid("tasks.limits.hard", "must be above zero"));
        }
        if self.sweep_interval.is_zero() {
            return Err(HubError::invalid(
                "tasks.sweep_interval",
                "must be above zero",
            ));
        }
        Ok(())
    }
}
