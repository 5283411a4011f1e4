//! The monitoring views: what each `/api/monitor/...` route answers, computed from what the
//! backend reads out of its store.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::alerts::Alert;
use crate::tasks::history::{FinishedSample, MinuteCounts, TimelineEntry, WindowData};
use crate::tasks::model::{QueueInfo, TaskRecord, TaskState, TaskStatus, WorkerInfo};

/// The workers view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkersView {
    /// Workers online first, then offline ones not yet aged out.
    pub workers: Vec<WorkerView>,
    /// How many are online (a worker turns offline when its lease, `--task-lease`, passes
    /// without a heartbeat).
    pub online: usize,
    /// An offline worker leaves this view this many seconds after its last heartbeat.
    pub expire_after_seconds: f64,
}

/// One worker.
pub type WorkerView = WorkerInfo;

/// One queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueView {
    /// Queue name.
    pub name: String,
    /// Tasks waiting for a worker.
    pub depth: u64,
    /// Tasks taken by a worker and not finished.
    pub active: u64,
    /// When the task waiting longest was queued.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// How long it has waited, in seconds.
    pub oldest_wait_seconds: Option<f64>,
    /// Online workers that take tasks from this queue.
    pub consumers: usize,
}

/// One page of the task history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskHistoryPage {
    /// The page's tasks.
    pub tasks: Vec<TaskStatus>,
    /// Tasks matching the filters in all pages.
    pub total: u64,
    /// Page size asked for.
    pub limit: u32,
    /// Tasks skipped before this page.
    pub offset: u32,
}

/// One task in detail: its status, its timeline, its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDetail {
    /// The task's status (state, progress, result or error, times).
    #[serde(flatten)]
    pub task: TaskStatus,
    /// The job's input.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
    /// Seconds it waited in its queue before a worker started it.
    pub queue_wait: Option<f64>,
    /// Its soft and hard time limits, in seconds.
    pub soft_time_limit: f64,
    /// See `soft_time_limit`.
    pub hard_time_limit: f64,
    /// Every change the store kept, oldest first: state, progress and step, with times.
    pub timeline: Vec<TimelineEntry>,
}

impl TaskDetail {
    /// The detail of `record` with its `timeline`.
    pub(crate) fn new(record: &TaskRecord, timeline: Vec<TimelineEntry>) -> Self {
        TaskDetail {
            task: TaskStatus::from(record),
            payload: record.payload.clone(),
            queue_wait: record
                .started_at
                .map(|started| seconds_between(record.queued_at, started)),
            soft_time_limit: record.limits.soft.as_secs_f64(),
            hard_time_limit: record.limits.hard.as_secs_f64(),
            timeline,
        }
    }
}

/// Percentiles of a latency, in seconds (`None` without observations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatencySummary {
    /// Observations.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl LatencySummary {
    /// The summary of `values` (milliseconds), nearest-rank percentiles.
    fn of(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        let seconds = |v: Option<&u64>| v.map(|ms| *ms as f64 / 1000.0);
        LatencySummary {
            count: values.len() as u64,
            p50: seconds(percentile(&values, 50.0)),
            p95: seconds(percentile(&values, 95.0)),
            max: seconds(values.last()),
        }
    }
}

/// The nearest-rank percentile `p` of sorted `values`.
fn percentile(values: &[u64], p: f64) -> Option<&u64> {
    if values.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1)
}

/// One job kind's figures over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KindStats {
    /// Job kind.
    pub kind: String,
    /// Finished with `SUCCESS`.
    pub succeeded: u64,
    /// Finished with `FAILURE`.
    pub failed: u64,
    /// Finished with `REVOKED`.
    pub revoked: u64,
    /// Start to finish.
    pub runtime: LatencySummary,
    /// Queued to started.
    pub queue_wait: LatencySummary,
}

impl KindStats {
    /// The outcomes and latencies of `samples`, under the name `kind`.
    fn of(kind: &str, samples: &[&FinishedSample]) -> Self {
        let count = |state| samples.iter().filter(|s| s.state == state).count() as u64;
        KindStats {
            kind: kind.to_owned(),
            succeeded: count(TaskState::Success),
            failed: count(TaskState::Failure),
            revoked: count(TaskState::Revoked),
            runtime: LatencySummary::of(samples.iter().filter_map(|s| s.runtime_ms).collect()),
            queue_wait: LatencySummary::of(samples.iter().filter_map(|s| s.wait_ms).collect()),
        }
    }
}

/// What happened over a window: throughput, outcome rates, latency percentiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowStats {
    /// The window's length in seconds.
    pub window_seconds: f64,
    /// Its start.
    pub since: DateTime<Utc>,
    /// Its end (now).
    pub until: DateTime<Utc>,
    /// Tasks finished in it.
    pub finished: u64,
    /// Of which `SUCCESS`.
    pub succeeded: u64,
    /// Of which `FAILURE`.
    pub failed: u64,
    /// Of which `REVOKED`.
    pub revoked: u64,
    /// `succeeded / finished` (0 when nothing finished).
    pub success_rate: f64,
    /// `failed / finished` (0 when nothing finished).
    pub failure_rate: f64,
    /// Tasks finished per minute, on average over the window.
    pub throughput_per_minute: f64,
    /// Finished tasks per minute by outcome, oldest first, every minute of the window.
    pub minutes: Vec<MinuteCounts>,
    /// Start to finish, every kind.
    pub runtime: LatencySummary,
    /// Queued to started, every kind.
    pub queue_wait: LatencySummary,
    /// By job kind.
    pub kinds: Vec<KindStats>,
}

impl WindowStats {
    /// The figures of the `window` ending `now`, from `data` read for that window or a longer
    /// one.
    pub(crate) fn compute(data: WindowData, window: Duration, now: DateTime<Utc>) -> Self {
        let since = now - chrono::Duration::from_std(window).unwrap_or_default();
        let first_minute = since.timestamp().div_euclid(60) * 60;
        let minutes: Vec<MinuteCounts> = data
            .minutes
            .into_iter()
            .filter(|m| m.minute.timestamp() >= first_minute)
            .collect();
        let samples: Vec<&FinishedSample> = data
            .samples
            .iter()
            .filter(|s| s.finished_at >= since)
            .collect();
        let mut by_kind: BTreeMap<&str, Vec<&FinishedSample>> = BTreeMap::new();
        for sample in &samples {
            by_kind
                .entry(sample.kind.as_str())
                .or_default()
                .push(sample);
        }
        let kinds: Vec<KindStats> = by_kind
            .into_iter()
            .map(|(kind, of_kind)| KindStats::of(kind, &of_kind))
            .collect();
        let all = KindStats::of("", &samples);
        let finished = samples.len() as u64;
        let rate = |n: u64| {
            if finished == 0 {
                0.0
            } else {
                n as f64 / finished as f64
            }
        };
        WindowStats {
            window_seconds: window.as_secs_f64(),
            since,
            until: now,
            finished,
            succeeded: all.succeeded,
            failed: all.failed,
            revoked: all.revoked,
            success_rate: rate(all.succeeded),
            failure_rate: rate(all.failed),
            throughput_per_minute: finished as f64 / (window.as_secs_f64() / 60.0),
            minutes,
            runtime: all.runtime,
            queue_wait: all.queue_wait,
            kinds,
        }
    }
}

/// Everything the Monitor page shows at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MonitorOverview {
    /// `in_process` or `redis`.
    pub backend: String,
    /// The workers.
    pub workers: WorkersView,
    /// The queues.
    pub queues: Vec<QueueView>,
    /// The last hour.
    pub stats: WindowStats,
    /// Alerts firing now.
    pub alerts: Vec<Alert>,
}

/// The workers view of `workers`: offline ones whose last heartbeat is older than `expire`
/// are left out; online ones first, newest first.
pub(crate) fn workers_view(
    mut workers: Vec<WorkerInfo>,
    expire: Duration,
    now: DateTime<Utc>,
) -> WorkersView {
    workers.retain(|w| w.online || seconds_between(w.last_heartbeat, now) <= expire.as_secs_f64());
    workers.sort_by_key(|w| (!w.online, std::cmp::Reverse(w.started_at)));
    WorkersView {
        online: workers.iter().filter(|w| w.online).count(),
        workers,
        expire_after_seconds: expire.as_secs_f64(),
    }
}

/// The queues view: each queue's figures and its consumers among the online `workers` (a
/// worker with no queue list takes every queue).
pub(crate) fn queue_views(
    queues: Vec<QueueInfo>,
    workers: &[WorkerInfo],
    now: DateTime<Utc>,
) -> Vec<QueueView> {
    queues
        .into_iter()
        .map(|q| QueueView {
            consumers: workers
                .iter()
                .filter(|w| w.online && (w.queues.is_empty() || w.queues.contains(&q.name)))
                .count(),
            oldest_wait_seconds: q.oldest_queued_at.map(|t| seconds_between(t, now)),
            oldest_queued_at: q.oldest_queued_at,
            depth: q.pending,
            active: q.active,
            name: q.name,
        })
        .collect()
}

/// Seconds from `from` to `to` (0 when `to` is earlier).
fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: &str, state: TaskState, runtime_ms: Option<u64>, ago: i64) -> FinishedSample {
        FinishedSample {
            finished_at: Utc::now() - chrono::Duration::seconds(ago),
            kind: kind.into(),
            state,
            runtime_ms,
            wait_ms: runtime_ms.map(|r| r / 10),
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&values, 50.0), Some(&10));
        assert_eq!(percentile(&values, 95.0), Some(&19));
        assert_eq!(percentile(&[7], 95.0), Some(&7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn window_counts_rates_and_percentiles() {
        let data = WindowData {
            minutes: Vec::new(),
            samples: vec![
                sample("a", TaskState::Success, Some(1000), 10),
                sample("a", TaskState::Success, Some(2000), 20),
                sample("a", TaskState::Failure, Some(3000), 30),
                sample("b", TaskState::Revoked, None, 40),
                // Outside the 15-minute window.
                sample("a", TaskState::Failure, Some(9000), 16 * 60),
            ],
        };
        let stats = WindowStats::compute(data, Duration::from_secs(900), Utc::now());
        assert_eq!(
            (stats.finished, stats.succeeded, stats.failed, stats.revoked),
            (4, 2, 1, 1)
        );
        assert_eq!(stats.failure_rate, 0.25);
        assert_eq!(stats.success_rate, 0.5);
        assert_eq!(stats.runtime.count, 3);
        assert_eq!(stats.runtime.p50, Some(2.0));
        assert_eq!(stats.runtime.p95, Some(3.0));
        assert_eq!(stats.runtime.max, Some(3.0));
        assert_eq!(stats.queue_wait.p50, Some(0.2));
        assert_eq!(stats.kinds.len(), 2);
        assert_eq!(stats.kinds[1].revoked, 1);
        assert_eq!(stats.kinds[1].runtime.count, 0);
    }

    #[test]
    fn offline_workers_age_out() {
        let now = Utc::now();
        let worker = |id: &str, online: bool, heartbeat_secs_ago: i64| WorkerInfo {
            id: id.into(),
            name: "worker".into(),
            host: "h".into(),
            pid: 1,
            mode: "worker".into(),
            concurrency: 2,
            queues: vec!["a".into()],
            started_at: now - chrono::Duration::hours(3),
            last_heartbeat: now - chrono::Duration::seconds(heartbeat_secs_ago),
            online,
            active: 0,
            processed: 0,
            succeeded: 0,
            failed: 0,
        };
        let view = workers_view(
            vec![
                worker("gone", false, 7200),
                worker("recent", false, 60),
                worker("up", true, 1),
            ],
            Duration::from_secs(3600),
            now,
        );
        let ids: Vec<_> = view.workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["up", "recent"]);
        assert_eq!(view.online, 1);
        let queues = queue_views(
            vec![
                QueueInfo {
                    name: "a".into(),
                    pending: 2,
                    active: 0,
                    oldest_queued_at: Some(now - chrono::Duration::seconds(5)),
                },
                QueueInfo {
                    name: "b".into(),
                    pending: 0,
                    active: 0,
                    oldest_queued_at: None,
                },
            ],
            &view.workers,
            now,
        );
        assert_eq!((queues[0].consumers, queues[1].consumers), (1, 0));
        assert_eq!(queues[0].oldest_wait_seconds, Some(5.0));
    }
}
