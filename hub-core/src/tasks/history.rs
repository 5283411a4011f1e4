//! What the task store keeps for monitoring besides the records themselves: each task's
//! timeline, a sample per finished task (runtime and queue wait, for a window's percentiles),
//! per-minute counts (throughput) and all-time latency histograms (Prometheus). Both backends
//! write the same figures from [`Finished::of`], so every figure means the same on either.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::{TaskRecord, TaskState};

/// Upper bounds (seconds) of the task runtime histogram's buckets; `+Inf` is implied.
pub const RUNTIME_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Upper bounds (seconds) of the queue-wait histogram's buckets; `+Inf` is implied.
pub const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How long finished-task samples are kept: the longest stats window.
pub const SAMPLE_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Entries kept in one task's timeline (a chatty handler's progress steps beyond this drop
/// the oldest).
pub const TIMELINE_CAP: usize = 500;

/// The index of the bucket `seconds` falls in: the first bound at or above it, or
/// `bounds.len()` (the `+Inf` bucket).
pub fn bucket_index(bounds: &[f64], seconds: f64) -> usize {
    bounds.partition_point(|bound| *bound < seconds)
}

/// Which latency a histogram measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// From start to finish.
    Runtime,
    /// From queued to started.
    Wait,
}

impl Latency {
    /// `runtime` or `wait`: how stores name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Latency::Runtime => "runtime",
            Latency::Wait => "wait",
        }
    }

    /// The histogram's bucket bounds.
    pub fn bounds(self) -> &'static [f64] {
        match self {
            Latency::Runtime => RUNTIME_BUCKETS,
            Latency::Wait => WAIT_BUCKETS,
        }
    }
}

/// All-time observations of one latency of one job kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Job kind.
    pub kind: String,
    /// What it measures.
    pub latency: Latency,
    /// Observations per bucket (not cumulative): one per bound of [`Latency::bounds`], then
    /// the `+Inf` bucket.
    pub buckets: Vec<u64>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new(kind: impl Into<String>, latency: Latency) -> Self {
        LatencyHistogram {
            kind: kind.into(),
            latency,
            buckets: vec![0; latency.bounds().len() + 1],
            sum: 0.0,
        }
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One finished task's figures, kept for [`SAMPLE_RETENTION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedSample {
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Job kind.
    pub kind: String,
    /// Final state.
    pub state: TaskState,
    /// Milliseconds from start to finish; `None` when it never started.
    pub runtime_ms: Option<u64>,
    /// Milliseconds from queued to started; `None` when it never started.
    pub wait_ms: Option<u64>,
}

/// Tasks finished in one minute, by final state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MinuteCounts {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    /// Finished with `SUCCESS`.
    pub succeeded: u64,
    /// Finished with `FAILURE`.
    pub failed: u64,
    /// Finished with `REVOKED`.
    pub revoked: u64,
}

impl MinuteCounts {
    /// Adds `count` tasks that ended in `state`.
    pub(crate) fn add(&mut self, state: TaskState, count: u64) {
        match state {
            TaskState::Success => self.succeeded += count,
            TaskState::Failure => self.failed += count,
            _ => self.revoked += count,
        }
    }
}

/// What a backend reads for a stats window: per-minute counts (every minute of the window,
/// oldest first, zeros included) and the samples of the tasks finished in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowData {
    /// One entry per minute.
    pub minutes: Vec<MinuteCounts>,
    /// The tasks finished in the window.
    pub samples: Vec<FinishedSample>,
}

/// One change in a task's life, as its timeline shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    /// When the store took the change.
    pub at: DateTime<Utc>,
    /// State after the change.
    pub state: TaskState,
    /// Progress after the change (0–100).
    pub progress: u8,
    /// The step line after the change.
    pub status: Option<String>,
    /// The attempt it belongs to.
    pub attempt: u32,
    /// The worker holding the task then.
    pub worker: Option<String>,
}

impl TimelineEntry {
    /// The entry for `record` as it is now.
    // Used by the Redis backend.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn of(record: &TaskRecord, at: DateTime<Utc>) -> Self {
        TimelineEntry {
            at,
            state: record.state,
            progress: record.progress,
            status: record.status.clone(),
            attempt: record.attempt,
            worker: record.worker.clone(),
        }
    }
}

/// What one finished task adds to the history figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finished {
    /// Unix minute it finished in.
    pub(crate) minute: i64,
    pub(crate) kind: String,
    pub(crate) state: TaskState,
    pub(crate) finished_ms: i64,
    /// Start to finish; `None` when it never started.
    pub(crate) runtime_ms: Option<i64>,
    /// Queued to started; `None` when it never started.
    pub(crate) wait_ms: Option<i64>,
    /// The worker that ran it.
    pub(crate) worker: Option<String>,
}

impl Finished {
    /// The figures of `record`, if it is finished.
    pub(crate) fn of(record: &TaskRecord) -> Option<Finished> {
        let finished = record.finished_at.filter(|_| record.state.is_terminal())?;
        let runtime_ms = record
            .started_at
            .map(|started| (finished - started).num_milliseconds().max(0));
        let wait_ms = record
            .started_at
            .map(|started| (started - record.queued_at).num_milliseconds().max(0));
        Some(Finished {
            minute: finished.timestamp().div_euclid(60),
            kind: record.kind.clone(),
            state: record.state,
            finished_ms: finished.timestamp_millis(),
            runtime_ms,
            wait_ms,
            worker: record.worker.clone(),
        })
    }

    /// The worker that ran it and the tally the task adds to there: `succeeded` or `failed`
    /// (a revoked task, or one no worker ran, adds to none). The names are the stores' own.
    pub(crate) fn worker_tally(&self) -> Option<(&str, &'static str)> {
        let tally = match self.state {
            TaskState::Success => "succeeded",
            TaskState::Failure => "failed",
            _ => return None,
        };
        Some((self.worker.as_deref()?, tally))
    }

    /// The histogram bucket of its runtime and of its wait (when it started).
    pub(crate) fn buckets(&self) -> Option<(usize, usize)> {
        Some((
            bucket_index(RUNTIME_BUCKETS, self.runtime_ms? as f64 / 1000.0),
            bucket_index(WAIT_BUCKETS, self.wait_ms? as f64 / 1000.0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket() {
        assert_eq!(bucket_index(&[1.0, 2.0], 0.5), 0);
        assert_eq!(bucket_index(&[1.0, 2.0], 1.0), 0);
        assert_eq!(bucket_index(&[1.0, 2.0], 1.5), 1);
        assert_eq!(bucket_index(&[1.0, 2.0], 9.0), 2);
    }

    #[test]
    fn bounds_increase() {
        for bounds in [RUNTIME_BUCKETS, WAIT_BUCKETS] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
