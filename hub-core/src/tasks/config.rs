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
    /// Redis streams and hashes shared by workers in any process on any host (feature `redis`).
    #[cfg(feature = "redis")]
    Redis(super::redis::RedisSettings),
}

impl BackendKind {
    /// The backend a command line or a binding names: `in_process` (also `in-process`, or
    /// nothing) or a `redis://host:port/db` URL, its keys under `prefix` (default `hub:`).
    pub fn from_spec(spec: Option<&str>, prefix: Option<&str>) -> Result<BackendKind> {
        match spec.map(str::trim) {
            None | Some("" | "in_process" | "in-process") => {
                if prefix.is_some() {
                    return Err(HubError::invalid(
                        "task_prefix",
                        "a key prefix applies to the Redis backend only",
                    ));
                }
                Ok(BackendKind::InProcess)
            }
            #[cfg(feature = "redis")]
            Some(url) if url.starts_with("redis://") || url.starts_with("redis+unix://") => {
                let prefix = prefix.unwrap_or(super::redis::DEFAULT_PREFIX);
                if prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(HubError::invalid(
                        "task_prefix",
                        "must be at most 64 characters, without spaces or control characters",
                    ));
                }
                Ok(BackendKind::Redis(
                    super::redis::RedisSettings::new(url).prefix(prefix),
                ))
            }
            Some(other) => Err(HubError::invalid(
                "task_backend",
                format!(
                    "'{}' is not a task backend: use 'in_process' or a URL such as \
                     redis://127.0.0.1:6379/0",
                    other.escape_debug()
                ),
            )),
        }
    }

    /// What opens a backend of this kind.
    pub fn factory(&self) -> std::sync::Arc<dyn super::BackendFactory> {
        match self {
            BackendKind::InProcess => std::sync::Arc::new(super::local::LocalBackendFactory),
            #[cfg(feature = "redis")]
            BackendKind::Redis(settings) => {
                std::sync::Arc::new(super::redis::RedisBackendFactory::new(settings.clone()))
            }
        }
    }
}

/// How tasks are queued, run and kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskConfig {
    /// The backend.
    pub backend: BackendKind,
    /// Tasks run at once (workers); default 2, like the original's Celery concurrency.
    pub concurrency: u32,
    /// Queue for jobs that name none (default `default`).
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
    /// Recent events kept in memory for subscribers that resume (`Last-Event-ID`); older
    /// ones are read back from the store.
    pub event_buffer: usize,
    /// How long a worker holds a task without renewing it (default 30 s). A worker that stops
    /// heartbeating (killed, paused, cut off) loses its tasks this long after its last renewal.
    #[serde(with = "duration_secs")]
    pub lease: Duration,
    /// How often a worker renews its leases and looks for expired ones (default 10 s).
    #[serde(with = "duration_secs")]
    pub heartbeat: Duration,
    /// How often a process looks in the store for other processes' events and queued tasks
    /// (default 50 ms).
    #[serde(with = "duration_secs")]
    pub poll_interval: Duration,
    /// Runs a task of a kind safe to retry gets when its worker is lost (default 3).
    pub max_attempts: u32,
    /// Queues this process takes tasks from; empty: every queue.
    pub queues: Vec<String>,
    /// The name this process registers as a worker under (default: the mode, `embedded` or
    /// `worker`).
    pub worker_name: Option<String>,
    /// Whether a project operation whose worker was lost mid-run runs again (operations are
    /// idempotent: a repeated start keeps what runs). Default: yes on the Redis backend, which
    /// delivers at least once to workers that come and go; no in-process, where the lost worker
    /// is the hub process itself and the operation ends `interrupted`.
    pub retry_lost_operations: Option<bool>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            backend: BackendKind::InProcess,
            concurrency: 2,
            default_queue: "default".into(),
            limits: TimeLimits::default(),
            result_expires: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(60),
            revoke_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            event_buffer: 1024,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_millis(50),
            max_attempts: 3,
            queues: Vec::new(),
            worker_name: None,
            retry_lost_operations: None,
        }
    }
}

impl TaskConfig {
    /// Whether project operations run again after their worker was lost (see
    /// [`TaskConfig::retry_lost_operations`]).
    pub fn retries_lost_operations(&self) -> bool {
        self.retry_lost_operations
            .unwrap_or(!matches!(self.backend, BackendKind::InProcess))
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(HubError::invalid("tasks.concurrency", "must be at least 1"));
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
        if self.heartbeat.is_zero() || self.lease <= self.heartbeat {
            return Err(HubError::invalid(
                "tasks.lease",
                format!(
                    "the lease ({:?}) must be longer than the heartbeat ({:?}), or every lease lapses between two renewals",
                    self.lease, self.heartbeat
                ),
            ));
        }
        if self.max_attempts == 0 {
            return Err(HubError::invalid(
                "tasks.max_attempts",
                "must be at least 1",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(HubError::invalid(
                "tasks.poll_interval",
                "must be above zero",
            ));
        }
        super::backend::validate_queue_name("tasks.default_queue", &self.default_queue)?;
        for queue in &self.queues {
            super::backend::validate_queue_name("tasks.queues", queue)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn a_backend_is_named_by_in_process_or_a_redis_url() {
        assert_eq!(
            BackendKind::from_spec(None, None).ok(),
            Some(BackendKind::InProcess)
        );
        assert_eq!(
            BackendKind::from_spec(Some("in-process"), None).ok(),
            Some(BackendKind::InProcess)
        );
        let bogus = BackendKind::from_spec(Some("amqp://rabbit"), None).err();
        assert_eq!(bogus.map(|e| e.code()), Some(ErrorCode::InvalidInput));
        let misplaced = BackendKind::from_spec(Some("in_process"), Some("x:")).err();
        assert_eq!(misplaced.map(|e| e.code()), Some(ErrorCode::InvalidInput));
        #[cfg(feature = "redis")]
        {
            let redis = BackendKind::from_spec(Some("redis://127.0.0.1:6379/0"), Some("team:"));
            match redis {
                Ok(BackendKind::Redis(settings)) => {
                    assert_eq!(settings.url, "redis://127.0.0.1:6379/0");
                    assert_eq!(settings.prefix, "team:");
                }
                other => panic!("{other:?}"),
            }
            let spaced = BackendKind::from_spec(Some("redis://h:1/0"), Some("a b")).err();
            assert_eq!(spaced.map(|e| e.code()), Some(ErrorCode::InvalidInput));
        }
    }

    #[test]
    fn queue_names_follow_one_rule() {
        let config = TaskConfig {
            queues: vec!["gpu-box".into(), "a.b_c:d".into()],
            ..TaskConfig::default()
        };
        assert!(config.validate().is_ok());
        for bad in ["", "has space", "ünï", &"x".repeat(65)] {
            let config = TaskConfig {
                queues: vec![bad.to_owned()],
                ..TaskConfig::default()
            };
            let err = config.validate().err();
            assert_eq!(
                err.map(|e| e.code()),
                Some(ErrorCode::InvalidInput),
                "{bad:?}"
            );
        }
    }
}
