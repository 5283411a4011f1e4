//! Health of the hub's parts, checked in the background.
//!
//! Asking for health never waits on a dependency: a probe task checks the database, the task
//! store and the container engine every few seconds, each under a short timeout, and
//! [`crate::Hub::health`] reads the last results from memory. An engine that accepts
//! connections but never answers costs the probe one timeout, and callers nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::sync::lock;

/// Time between two rounds of checks.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Longest one check may take before its component counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the last check of one component found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    /// Not checked yet.
    Unknown,
    /// It answered.
    Up,
    /// It failed or did not answer in time; the message says how.
    Down(String),
}

impl ComponentState {
    /// `ok`, `unknown`, or the failure, as the health route shows it.
    pub fn describe(&self) -> String {
        match self {
            ComponentState::Unknown => "unknown".to_owned(),
            ComponentState::Up => "ok".to_owned(),
            ComponentState::Down(message) => message.clone(),
        }
    }

    fn of(result: Result<()>) -> Self {
        match result {
            Ok(()) => ComponentState::Up,
            Err(err) => ComponentState::Down(err.to_string()),
        }
    }
}

/// The hub's health as last checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The registry database.
    pub database: ComponentState,
    /// The task store (a wedged writer shows here).
    pub task_backend: ComponentState,
    /// The container engine.
    pub docker: ComponentState,
}

impl HealthReport {
    /// Whether the hub can serve: its database answers. (An engine that is down is reported
    /// but does not make the hub unhealthy: the registry and tasks still work.)
    pub fn healthy(&self) -> bool {
        !matches!(self.database, ComponentState::Down(_))
    }

    /// `unhealthy` without a database; `degraded` while the task store does not answer (a
    /// wedged or failing writer: changes wait and are retried, nothing is dropped); else
    /// `healthy`. An engine that is down shows in `docker` alone.
    pub fn status(&self) -> &'static str {
        if !self.healthy() {
            "unhealthy"
        } else if matches!(self.task_backend, ComponentState::Down(_)) {
            "degraded"
        } else {
            "healthy"
        }
    }
}

/// The last report, shared between the probe task and readers.
#[derive(Debug, Clone)]
pub(crate) struct HealthBoard {
    report: Arc<Mutex<HealthReport>>,
}

impl HealthBoard {
    pub(crate) fn new() -> Self {
        HealthBoard {
            report: Arc::new(Mutex::new(HealthReport {
                database: ComponentState::Unknown,
                task_backend: ComponentState::Unknown,
                docker: ComponentState::Unknown,
            })),
        }
    }

    pub(crate) fn report(&self) -> HealthReport {
        lock(&self.report).clone()
    }

    /// Whether the engine was up at the last check (without copying the report).
    pub(crate) fn docker_up(&self) -> bool {
        lock(&self.report).docker == ComponentState::Up
    }

    /// Records a check of the engine made outside the probe (at a submission).
    pub(crate) fn set_docker(&self, state: ComponentState) {
        lock(&self.report).docker = state;
    }

    fn publish(&self, report: HealthReport) {
        *lock(&self.report) = report;
    }
}

/// One check under the probe timeout.
pub(crate) async fn check<F>(what: &str, probe: F) -> ComponentState
where
    F: Future<Output = Result<()>>,
{
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(result) => ComponentState::of(result),
        Err(_) => ComponentState::Down(format!("{what} did not answer within {CHECK_TIMEOUT:?}")),
    }
}

/// Runs a first round of `round` now (each check is bounded, so this takes at most
/// [`CHECK_TIMEOUT`]), then one every [`CHECK_INTERVAL`] in the background until `stop` is
/// cancelled or a round finds nothing left to check (`None`: the hub is gone).
pub(crate) async fn start_probe<R, F>(board: HealthBoard, stop: CancellationToken, round: R)
where
    R: Fn() -> F + Send + 'static,
    F: Future<Output = Option<HealthReport>> + Send,
{
    if let Some(report) = round().await {
        board.publish(report);
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
                () = stop.cancelled() => return,
            }
            let report = tokio::select! {
                report = round() => report,
                () = stop.cancelled() => return,
            };
            let Some(report) = report else { return };
            if report != board.report() {
                tracing::info!(
                    database = %report.database.describe(),
                    task_backend = %report.task_backend.describe(),
                    docker = %report.docker.describe(),
                    "health changed"
                );
            }
            board.publish(report);
        }
    });
}
