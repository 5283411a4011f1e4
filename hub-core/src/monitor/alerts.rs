//! The alert rules the hub evaluates itself (and shows in the API and the dashboard), with the
//! original's documented thresholds as defaults. The shipped Prometheus rules file says the
//! same over `/metrics` (`docs/monitoring/hub-alerts.yml`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::views::{QueueView, WindowStats};
use crate::project::{Project, ProjectStatus};
use crate::tasks::history::TimelineEntry;
use crate::tasks::model::{TaskRecord, duration_secs};

/// When an alert fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertThresholds {
    /// Share of finished tasks that failed, over [`Self::failure_window`], above which
    /// `failure_rate` fires (default 0.10).
    pub failure_rate: f64,
    /// The window of the failure rate (default 15 min).
    #[serde(with = "duration_secs")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub failure_window: Duration,
    /// Tasks waiting in one queue above which `queue_depth` fires (default 10).
    pub queue_depth: u64,
    /// A running task with no change for this long is possibly stuck (default 5 min).
    #[serde(with = "duration_secs")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub stalled_after: Duration,
    /// How long a task of a kind is expected to run at most (default 10 min)…
    #[serde(with = "duration_secs")]
    #[cfg_attr(feature = "openapi", schema(value_type = f64))]
    pub expected_runtime: Duration,
    /// …unless its kind has its own (seconds by kind).
    #[serde(with = "kind_durations")]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, f64>))]
    pub expected_runtime_by_kind: BTreeMap<String, Duration>,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            failure_rate: 0.10,
            failure_window: Duration::from_secs(15 * 60),
            queue_depth: 10,
            stalled_after: Duration::from_secs(5 * 60),
            expected_runtime: Duration::from_secs(10 * 60),
            expected_runtime_by_kind: BTreeMap::new(),
        }
    }
}

impl AlertThresholds {
    /// How long a task of `kind` is expected to run at most.
    pub fn expected_runtime(&self, kind: &str) -> Duration {
        self.expected_runtime_by_kind
            .get(kind)
            .copied()
            .unwrap_or(self.expected_runtime)
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AlertKind {
    /// No worker is online: queued tasks will not run.
    NoWorkerOnline,
    /// Too many tasks failed over the failure window.
    FailureRate,
    /// Too many tasks wait in a queue.
    QueueDepth,
    /// A task runs longer than its kind's expected time, or has not changed for the stall
    /// time: possibly stuck.
    TaskStuck,
    /// A project is in `error`.
    ProjectError,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 5] = [
        AlertKind::NoWorkerOnline,
        AlertKind::FailureRate,
        AlertKind::QueueDepth,
        AlertKind::TaskStuck,
        AlertKind::ProjectError,
    ];

    /// Its name in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::NoWorkerOnline => "no_worker_online",
            AlertKind::FailureRate => "failure_rate",
            AlertKind::QueueDepth => "queue_depth",
            AlertKind::TaskStuck => "task_stuck",
            AlertKind::ProjectError => "project_error",
        }
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Severity {
    /// Something to look at.
    Warning,
    /// Work is not getting done.
    Critical,
}

/// One firing alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// What it concerns: a queue name, a task id, a project name (none for hub-wide alerts).
    pub subject: Option<String>,
    /// For people.
    pub message: String,
    /// The measured value (a rate, a depth, seconds).
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// Since when the condition holds, when known.
    pub since: Option<DateTime<Utc>>,
}

/// A running task and its last change, as the stuck rule sees it.
#[derive(Debug, Clone)]
pub(crate) struct RunningTask<'a> {
    pub(crate) record: &'a TaskRecord,
    pub(crate) last_change: Option<&'a TimelineEntry>,
}

/// What the rules look at.
pub(crate) struct Snapshot<'a> {
    pub(crate) now: DateTime<Utc>,
    pub(crate) workers_online: usize,
    pub(crate) queues: &'a [QueueView],
    pub(crate) failures: &'a WindowStats,
    pub(crate) running: Vec<RunningTask<'a>>,
    pub(crate) projects: &'a [Project],
}

/// The alerts firing in `snapshot`, most urgent first.
pub(crate) fn evaluate(thresholds: &AlertThresholds, snapshot: &Snapshot<'_>) -> Vec<Alert> {
    let mut alerts = Vec::new();
    if snapshot.workers_online == 0 {
        alerts.push(Alert {
            kind: AlertKind::NoWorkerOnline,
            severity: Severity::Critical,
            subject: None,
            message: "no worker is online: queued tasks will wait until one starts \
                      (`hub worker`, or `hub serve` with its built-in worker)"
                .into(),
            value: 0.0,
            threshold: 1.0,
            since: None,
        });
    }
    let window = snapshot.failures;
    if window.finished > 0 && window.failure_rate > thresholds.failure_rate {
        alerts.push(Alert {
            kind: AlertKind::FailureRate,
            severity: Severity::Warning,
            subject: None,
            message: format!(
                "{} of {} tasks failed in the last {} minutes ({:.0} %, above {:.0} %)",
                window.failed,
                window.finished,
                thresholds.failure_window.as_secs() / 60,
                window.failure_rate * 100.0,
                thresholds.failure_rate * 100.0
            ),
            value: window.failure_rate,
            threshold: thresholds.failure_rate,
            since: Some(window.since),
        });
    }
    for queue in snapshot.queues {
        if queue.depth > thresholds.queue_depth {
            alerts.push(Alert {
                kind: AlertKind::QueueDepth,
                severity: Severity::Warning,
                subject: Some(queue.name.clone()),
                message: format!(
                    "{} tasks wait in queue '{}' (more than {}); the oldest for {:.0} s",
                    queue.depth,
                    queue.name,
                    thresholds.queue_depth,
                    queue.oldest_wait_seconds.unwrap_or(0.0)
                ),
                value: queue.depth as f64,
                threshold: thresholds.queue_depth as f64,
                since: queue.oldest_queued_at,
            });
        }
    }
    for task in &snapshot.running {
        if let Some(alert) = stuck(thresholds, snapshot.now, task) {
            alerts.push(alert);
        }
    }
    for project in snapshot.projects {
        if project.status == ProjectStatus::Error {
            alerts.push(Alert {
                kind: AlertKind::ProjectError,
                severity: Severity::Warning,
                subject: Some(project.name.clone()),
                message: format!(
                    "project '{}' is in error: {}",
                    project.name,
                    project
                        .last_error
                        .as_deref()
                        .unwrap_or("no detail recorded")
                ),
                value: 1.0,
                threshold: 0.0,
                since: Some(project.updated_at),
            });
        }
    }
    alerts.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.kind.cmp(&b.kind)));
    alerts
}

/// The stuck alert of one running task, if it runs too long or has not changed for too long.
fn stuck(
    thresholds: &AlertThresholds,
    now: DateTime<Utc>,
    task: &RunningTask<'_>,
) -> Option<Alert> {
    let record = task.record;
    let started = record.started_at?;
    let running = (now - started).to_std().unwrap_or_default();
    let expected = thresholds.expected_runtime(&record.kind);
    let last_change = task.last_change.map_or(started, |e| e.at.max(started));
    let quiet = (now - last_change).to_std().unwrap_or_default();
    let (value, threshold, why, since) = if running > expected {
        (
            running,
            expected,
            format!(
                "has run {:.0} s, longer than the {:.0} s expected of '{}'",
                running.as_secs_f64(),
                expected.as_secs_f64(),
                record.kind
            ),
            started,
        )
    } else if quiet > thresholds.stalled_after {
        (
            quiet,
            thresholds.stalled_after,
            format!(
                "has shown no progress for {:.0} s (at {} %: {})",
                quiet.as_secs_f64(),
                record.progress,
                record.status_line()
            ),
            last_change,
        )
    } else {
        return None;
    };
    Some(Alert {
        kind: AlertKind::TaskStuck,
        severity: Severity::Warning,
        subject: Some(record.id.to_string()),
        message: format!(
            "task {} ({}) is possibly stuck: it {why}",
            record.id, record.kind
        ),
        value: value.as_secs_f64(),
        threshold: threshold.as_secs_f64(),
        since: Some(since),
    })
}

/// Serialises per-kind durations as fractional seconds.
mod kind_durations {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, d)| (k, d.as_secs_f64())))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, f64>::deserialize(d)?
            .into_iter()
            .map(|(k, secs)| {
                Duration::try_from_secs_f64(secs)
                    .map(|d| (k, d))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::model::{TaskState, TimeLimits};

    fn running(kind: &str, started_secs_ago: i64) -> TaskRecord {
        let now = Utc::now();
        TaskRecord {
            id: uuid::Uuid::new_v4(),
            kind: kind.into(),
            queue: "default".into(),
            project_id: None,
            payload: serde_json::Value::Null,
            state: TaskState::Running,
            progress: 40,
            status: Some("Waiting for backend".into()),
            result: None,
            error: None,
            attempt: 1,
            worker: Some("w".into()),
            queued_at: now - chrono::Duration::seconds(started_secs_ago + 1),
            started_at: Some(now - chrono::Duration::seconds(started_secs_ago)),
            finished_at: None,
            limits: TimeLimits {
                soft: Duration::from_secs(3600),
                hard: Duration::from_secs(7200),
            },
        }
    }

    fn snapshot<'a>(
        queues: &'a [QueueView],
        failures: &'a WindowStats,
        running: Vec<RunningTask<'a>>,
    ) -> Snapshot<'a> {
        Snapshot {
            now: Utc::now(),
            workers_online: 1,
            queues,
            failures,
            running,
            projects: &[],
        }
    }

    #[test]
    fn quiet_and_overdue_tasks_are_possibly_stuck() {
        let thresholds = AlertThresholds {
            expected_runtime_by_kind: [("slow".to_owned(), Duration::from_secs(3600))].into(),
            ..AlertThresholds::default()
        };
        let stats = WindowStats::default();
        let fresh = running("start_project", 10);
        let overdue = running("start_project", 11 * 60);
        let slow_but_expected = running("slow", 11 * 60);
        let recent = TimelineEntry::of(&slow_but_expected, Utc::now());
        let quiet = running("slow", 20 * 60);
        let alerts = evaluate(
            &thresholds,
            &snapshot(
                &[],
                &stats,
                vec![
                    RunningTask {
                        record: &fresh,
                        last_change: None,
                    },
                    RunningTask {
                        record: &overdue,
                        last_change: None,
                    },
                    RunningTask {
                        record: &slow_but_expected,
                        last_change: Some(&recent),
                    },
                    RunningTask {
                        record: &quiet,
                        last_change: None,
                    },
                ],
            ),
        );
        let subjects: Vec<_> = alerts.iter().filter_map(|a| a.subject.clone()).collect();
        assert_eq!(subjects, [overdue.id.to_string(), quiet.id.to_string()]);
        assert!(
            alerts[0].message.contains("longer than the 600 s"),
            "{}",
            alerts[0].message
        );
        assert!(
            alerts[1].message.contains("no progress"),
            "{}",
            alerts[1].message
        );
    }

    #[test]
    fn failure_rate_and_queue_depth_fire_above_their_thresholds() {
        let thresholds = AlertThresholds::default();
        let mut stats = WindowStats {
            finished: 10,
            failed: 1,
            failure_rate: 0.1,
            ..WindowStats::default()
        };
        let queue = |depth| QueueView {
            name: "default".into(),
            depth,
            active: 0,
            oldest_queued_at: None,
            oldest_wait_seconds: None,
            consumers: 1,
        };
        let at_threshold = [queue(10)];
        assert!(evaluate(&thresholds, &snapshot(&at_threshold, &stats, vec![])).is_empty());
        stats.failed = 2;
        stats.failure_rate = 0.2;
        let above = [queue(11)];
        let kinds: Vec<_> = evaluate(&thresholds, &snapshot(&above, &stats, vec![]))
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, [AlertKind::FailureRate, AlertKind::QueueDepth]);
    }

    #[test]
    fn no_worker_online_is_critical_and_first() {
        let stats = WindowStats::default();
        let mut s = snapshot(&[], &stats, vec![]);
        s.workers_online = 0;
        let alerts = evaluate(&AlertThresholds::default(), &s);
        assert_eq!(alerts[0].kind, AlertKind::NoWorkerOnline);
        assert_eq!(alerts[0].severity, Severity::Critical);
    }
}
