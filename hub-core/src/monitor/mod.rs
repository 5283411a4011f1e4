//! Monitoring: what Celery's Flower showed, read from the task store itself, so it survives
//! restarts, shows queued tasks at once and works with either backend.
//!
//! - [`views`] — workers, queues, task history and detail, window stats;
//! - [`alerts`] — the alert rules and their thresholds;
//! - [`MonitorConfig`] — how long offline workers stay listed, and the thresholds.
//!
//! Frontends call the [`crate::Hub`]'s `monitor_*` methods and translate; every figure and
//! rule is computed here once.

pub mod alerts;
pub mod views;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{HubError, Result};
use crate::tasks::model::duration_secs;

pub use alerts::{Alert, AlertKind, AlertThresholds, Severity};
pub use views::{
    KindStats, LatencySummary, MonitorOverview, QueueView, TaskDetail, TaskHistoryPage,
    WindowStats, WorkerView, WorkersView,
};

/// Monitoring settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorConfig {
    /// Offline workers stay in the workers view this long after their last heartbeat
    /// (default 1 h); the store forgets them with the task records.
    #[serde(with = "duration_secs")]
    pub worker_expiry: Duration,
    /// Alert thresholds.
    pub alerts: AlertThresholds,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            worker_expiry: Duration::from_secs(3600),
            alerts: AlertThresholds::default(),
        }
    }
}

impl MonitorConfig {
    /// Checks the settings: a failure rate from 0 to 1, a failure window of 1 minute to
    /// [`MAX_WINDOW`].
    pub fn validate(&self) -> Result<()> {
        let alerts = &self.alerts;
        if !(0.0..=1.0).contains(&alerts.failure_rate) {
            return Err(HubError::invalid(
                "alert_failure_rate",
                format!("must be 0 to 1, not {}", alerts.failure_rate),
            ));
        }
        if alerts.failure_window < Duration::from_secs(60) || alerts.failure_window > MAX_WINDOW {
            return Err(HubError::invalid(
                "alert_failure_window",
                "must be 1 minute to 24 hours",
            ));
        }
        Ok(())
    }
}

/// Longest stats window: what the store keeps samples for.
pub const MAX_WINDOW: Duration = crate::tasks::history::SAMPLE_RETENTION;

/// Stats window when a query names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// Parses a window or a duration: seconds (`900`), or a number with `s`, `m`, `h` or `d`
/// (`15m`, `1h`, `1d`). `field` names it in the error.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => f64::NAN,
    };
    let value = number.parse::<f64>().ok().map(|n| n * scale);
    match value {
        Some(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e12 => {
            Ok(Duration::from_secs_f64(seconds))
        }
        _ => Err(HubError::invalid(
            field,
            format!(
                "'{}' is not a duration: use seconds or a number with s, m, h or d (15m, 1h)",
                text.escape_debug()
            ),
        )),
    }
}

/// A stats window from a query: [`DEFAULT_WINDOW`] when absent, at most [`MAX_WINDOW`].
pub fn window(text: Option<&str>) -> Result<Duration> {
    let Some(text) = text else {
        return Ok(DEFAULT_WINDOW);
    };
    let window = parse_duration("window", text)?;
    if window < Duration::from_secs(60) || window > MAX_WINDOW {
        return Err(HubError::invalid(
            "window",
            format!(
                "must be 1 minute to {} hours, not {}",
                MAX_WINDOW.as_secs() / 3600,
                text.escape_debug()
            ),
        ));
    }
    Ok(window)
}

/// Parses `KIND=DURATION` pairs (the per-kind expected runtimes of a command line).
pub fn parse_kind_durations(field: &str, pairs: &[String]) -> Result<BTreeMap<String, Duration>> {
    pairs
        .iter()
        .map(|pair| {
            let (kind, duration) = pair.split_once('=').ok_or_else(|| {
                HubError::invalid(field, format!("'{pair}' is not KIND=DURATION"))
            })?;
            Ok((kind.trim().to_owned(), parse_duration(field, duration)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("w", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("w", "15m").unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            parse_duration("w", "1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            parse_duration("w", "0.5s").unwrap(),
            Duration::from_millis(500)
        );
        for bad in ["", "h", "-1", "1w", "0", "1e400"] {
            assert!(parse_duration("w", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_are_bounded() {
        assert_eq!(window(None).unwrap(), DEFAULT_WINDOW);
        assert!(window(Some("30s")).is_err());
        assert!(window(Some("2d")).is_err());
        assert_eq!(window(Some("24h")).unwrap(), MAX_WINDOW);
    }
}
