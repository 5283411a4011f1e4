//! The hub's figures in the Prometheus text format (version 0.0.4): one `hub_` prefix, base
//! units, `_total` for counters, no task ids among the labels. Frontends serve [`render`]'s text
//! as it is (`GET /metrics`).

use std::fmt::Write as _;

use std::collections::HashMap;

use crate::monitor::{Alert, AlertKind};
use crate::project::ProjectStats;
use crate::tasks::BackendStats;
use crate::tasks::history::{Latency, LatencyHistogram};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What [`render`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Figures<'a> {
    /// Workers, queues and finished counts.
    pub tasks: &'a BackendStats,
    /// Projects by status.
    pub projects: &'a ProjectStats,
    /// All-time task latency histograms.
    pub latency: &'a [LatencyHistogram],
    /// The alerts the hub's own rules raise now.
    pub alerts: &'a [Alert],
    /// Requests this process served.
    pub http: &'a HttpMetrics,
}

/// The figures as Prometheus text.
pub fn render(figures: &Figures<'_>) -> String {
    let Figures {
        tasks,
        projects,
        latency,
        alerts,
        http,
    } = *figures;
    let mut out = Exposition::default();
    out.family(
        "hub_tasks_finished_total",
        "counter",
        "Tasks finished, by job kind and final state (kept apart from the records, so they survive their expiry).",
    );
    for kind in &tasks.kinds {
        for (state, count) in [
            ("success", kind.succeeded),
            ("failure", kind.failed),
            ("revoked", kind.revoked),
        ] {
            out.sample(
                "hub_tasks_finished_total",
                &[("kind", &kind.kind), ("state", state)],
                count as f64,
            );
        }
    }
    for (which, name, help) in [
        (
            Latency::Runtime,
            "hub_task_runtime_seconds",
            "Time from a task's start to its end, by job kind.",
        ),
        (
            Latency::Wait,
            "hub_task_queue_wait_seconds",
            "Time a task waited in its queue before a worker started it, by job kind.",
        ),
    ] {
        out.family(name, "histogram", help);
        for histogram in latency.iter().filter(|h| h.latency == which) {
            out.histogram(
                name,
                &[("kind", &histogram.kind)],
                which.bounds(),
                &histogram.buckets,
                histogram.sum,
            );
        }
    }
    out.family(
        "hub_queue_depth",
        "gauge",
        "Tasks waiting in a queue for a worker.",
    );
    for queue in &tasks.queues {
        out.sample(
            "hub_queue_depth",
            &[("queue", &queue.name)],
            queue.pending as f64,
        );
    }
    out.family(
        "hub_queue_oldest_wait_seconds",
        "gauge",
        "How long the task waiting longest in a queue has waited (0 when none waits).",
    );
    let now = chrono::Utc::now();
    for queue in &tasks.queues {
        let waited = queue
            .oldest_queued_at
            .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        out.sample(
            "hub_queue_oldest_wait_seconds",
            &[("queue", &queue.name)],
            waited,
        );
    }
    out.family(
        "hub_tasks_running",
        "gauge",
        "Tasks taken by a worker and not finished, by queue.",
    );
    for queue in &tasks.queues {
        out.sample(
            "hub_tasks_running",
            &[("queue", &queue.name)],
            queue.active as f64,
        );
    }
    out.family(
        "hub_workers_online",
        "gauge",
        "Workers whose heartbeat is current.",
    );
    out.sample(
        "hub_workers_online",
        &[],
        tasks.workers.iter().filter(|w| w.online).count() as f64,
    );
    out.family(
        "hub_worker_slots",
        "gauge",
        "Tasks the online workers can run at once.",
    );
    out.sample("hub_worker_slots", &[], f64::from(tasks.concurrency));
    out.family(
        "hub_event_subscribers",
        "gauge",
        "Event subscriptions open in this process.",
    );
    out.sample("hub_event_subscribers", &[], tasks.subscribers as f64);
    out.family(
        "hub_projects",
        "gauge",
        "Registered projects, by status (starting and stopping count with neither).",
    );
    for (status, count) in [
        ("running", projects.running),
        ("stopped", projects.stopped),
        ("error", projects.errors),
    ] {
        out.sample("hub_projects", &[("status", status)], count as f64);
    }
    out.family(
        "hub_projects_registered",
        "gauge",
        "Registered projects, whatever their status.",
    );
    out.sample(
        "hub_projects_registered",
        &[],
        projects.total_projects as f64,
    );
    out.family(
        "hub_alerts_firing",
        "gauge",
        "Alerts the hub's own rules raise now, by kind (see /api/monitor/alerts for the detail).",
    );
    for kind in AlertKind::ALL {
        let firing = alerts.iter().filter(|a| a.kind == kind).count();
        out.sample(
            "hub_alerts_firing",
            &[("kind", kind.as_str())],
            firing as f64,
        );
    }
    http.render(&mut out);
    out.text
}

/// Upper bounds (seconds) of the HTTP latency histogram's buckets; `+Inf` is implied.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Requests a frontend served, by method, route template and status (this process's own:
/// each process that serves HTTP exposes its own, as Prometheus expects).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// By route template, then by method and status: a request's lookup allocates nothing.
    series: std::sync::Mutex<HashMap<String, Vec<HttpSeries>>>,
}

#[derive(Debug, Clone)]
struct HttpSeries {
    method: &'static str,
    status: u16,
    buckets: Vec<u64>,
    sum: f64,
}

impl HttpMetrics {
    /// Records one request: `route` is the route's template (`/api/tasks/{task_id}`), never
    /// the path itself, so ids do not become labels.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: std::time::Duration) {
        let method = standard_method(method);
        let seconds = elapsed.as_secs_f64();
        let bucket = crate::tasks::history::bucket_index(HTTP_BUCKETS, seconds);
        let mut series = crate::sync::lock(&self.series);
        if !series.contains_key(route) {
            series.insert(route.to_owned(), Vec::new());
        }
        let Some(by_route) = series.get_mut(route) else {
            return;
        };
        let index = match by_route
            .iter()
            .position(|s| s.method == method && s.status == status)
        {
            Some(index) => index,
            None => {
                by_route.push(HttpSeries {
                    method,
                    status,
                    buckets: vec![0; HTTP_BUCKETS.len() + 1],
                    sum: 0.0,
                });
                by_route.len() - 1
            }
        };
        let entry = &mut by_route[index];
        if let Some(slot) = entry.buckets.get_mut(bucket) {
            *slot += 1;
        }
        entry.sum += seconds;
    }

    fn render(&self, out: &mut Exposition) {
        let mut series: Vec<(String, HttpSeries)> = crate::sync::lock(&self.series)
            .iter()
            .flat_map(|(route, all)| all.iter().map(|s| (route.clone(), s.clone())))
            .collect();
        series.sort_by(|a, b| (&a.0, a.1.method, a.1.status).cmp(&(&b.0, b.1.method, b.1.status)));
        out.family(
            "hub_http_requests_total",
            "counter",
            "HTTP requests served by this process, by method, route and status.",
        );
        for (route, s) in &series {
            let status = s.status.to_string();
            out.sample(
                "hub_http_requests_total",
                &[("method", s.method), ("route", route), ("status", &status)],
                s.buckets.iter().sum::<u64>() as f64,
            );
        }
        out.family(
            "hub_http_request_duration_seconds",
            "histogram",
            "Time to answer an HTTP request (to its response head), by method, route and status.",
        );
        for (route, s) in &series {
            let status = s.status.to_string();
            out.histogram(
                "hub_http_request_duration_seconds",
                &[("method", s.method), ("route", route), ("status", &status)],
                HTTP_BUCKETS,
                &s.buckets,
                s.sum,
            );
        }
    }
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A histogram's `_bucket` (cumulative, with `le`), `_sum` and `_count` samples from
    /// per-bucket counts (`bounds.len() + 1` of them, the last for `+Inf`).
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        buckets: &[u64],
        sum: f64,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in buckets.iter().enumerate() {
            cumulative += count;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| format_value(*b));
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket_name, &with_le, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }
}

/// A method's name as a label: the standard ones, every other as `OTHER` (a client must not
/// be able to make up label values).
fn standard_method(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("OTHER")
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Help texts escape backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{KindCounts, QueueInfo};

    #[test]
    fn labels_are_escaped_and_counters_named_total() {
        let tasks = BackendStats {
            backend: "in_process".into(),
            concurrency: 2,
            workers: Vec::new(),
            queues: vec![QueueInfo {
                name: "default".into(),
                pending: 3,
                active: 1,
                oldest_queued_at: None,
            }],
            kinds: vec![KindCounts {
                kind: "odd\"kind\\\n".into(),
                succeeded: 2,
                failed: 1,
                revoked: 0,
                mean_runtime: 0.5,
            }],
            finished_last_minute: 0,
            rate_per_minute_15m: 0.0,
            subscribers: 0,
        };
        let projects = ProjectStats {
            total_projects: 4,
            running: 1,
            stopped: 2,
            errors: 1,
        };
        let mut runtime = LatencyHistogram::new("start_project", Latency::Runtime);
        runtime.buckets[0] = 2;
        runtime.buckets[3] = 1;
        runtime.sum = 0.3;
        let http = HttpMetrics::default();
        http.record(
            "GET",
            "/api/tasks/{task_id}",
            200,
            std::time::Duration::from_millis(2),
        );
        http.record(
            "GET",
            "/api/tasks/{task_id}",
            200,
            std::time::Duration::from_secs(60),
        );
        let text = render(&Figures {
            tasks: &tasks,
            projects: &projects,
            latency: &[runtime],
            alerts: &[],
            http: &http,
        });
        assert!(
            text.contains(
                "hub_tasks_finished_total{kind=\"odd\\\"kind\\\\\\n\",state=\"success\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("hub_queue_depth{queue=\"default\"} 3\n"));
        assert!(text.contains("hub_projects{status=\"error\"} 1\n"));
        assert!(text.contains("hub_alerts_firing{kind=\"task_stuck\"} 0\n"));
        assert!(text.contains("# TYPE hub_tasks_finished_total counter\n"));
        assert!(
            text.contains(
                "hub_task_runtime_seconds_bucket{kind=\"start_project\",le=\"0.01\"} 2\n"
            )
        );
        assert!(
            text.contains(
                "hub_task_runtime_seconds_bucket{kind=\"start_project\",le=\"0.25\"} 3\n"
            )
        );
        assert!(
            text.contains(
                "hub_task_runtime_seconds_bucket{kind=\"start_project\",le=\"+Inf\"} 3\n"
            )
        );
        assert!(text.contains("hub_task_runtime_seconds_count{kind=\"start_project\"} 3\n"));
        assert!(text.contains(
            "hub_http_requests_total{method=\"GET\",route=\"/api/tasks/{task_id}\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "hub_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/tasks/{task_id}\",status=\"200\",le=\"10\"} 1\n"
        ));
        assert!(
            text.lines()
                .filter(|l| l.starts_with("# TYPE") && l.ends_with("counter"))
                .all(|l| l.contains("_total ")),
            "every counter ends in _total"
        );
    }
}
