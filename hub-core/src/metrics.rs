//! The hub's figures in the Prometheus text format (version 0.0.4): one `hub_` prefix, base
//! units, `_total` for counters, no task ids among the labels. Frontends serve [`render`]'s text
//! as it is (`GET /metrics`).

use std::fmt::Write as _;

use crate::project::ProjectStats;
use crate::tasks::BackendStats;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The figures of `tasks` and `projects` as Prometheus text.
pub fn render(tasks: &BackendStats, projects: &ProjectStats) -> String {
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
    out.family(
        "hub_task_mean_runtime_seconds",
        "gauge",
        "Mean runtime of the finished tasks of a job kind.",
    );
    for kind in &tasks.kinds {
        out.sample(
            "hub_task_mean_runtime_seconds",
            &[("kind", &kind.kind)],
            kind.mean_runtime,
        );
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
    out.text
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
        let text = render(&tasks, &projects);
        assert!(
            text.contains(
                "hub_tasks_finished_total{kind=\"odd\\\"kind\\\\\\n\",state=\"success\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("hub_queue_depth{queue=\"default\"} 3\n"));
        assert!(text.contains("hub_projects{status=\"error\"} 1\n"));
        assert!(text.contains("# TYPE hub_tasks_finished_total counter\n"));
        assert!(
            text.lines()
                .filter(|l| l.starts_with("# TYPE") && l.ends_with("counter"))
                .all(|l| l.contains("_total ")),
            "every counter ends in _total"
        );
    }
}
