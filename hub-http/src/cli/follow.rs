//! Following operations to their end: a live progress bar per project on a terminal, one line
//! per step elsewhere (CI, pipes), JSON lines on request.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{FuturesUnordered, select_all};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::client::{Client, SseEvent, encode};
use super::commands::confirm;
use super::{CliError, Exit};

/// How one followed task is shown.
enum View {
    Bar(ProgressBar),
    Lines { last: String },
    Json,
}

/// Follows `tasks` (project slug, task id) until each ends; exit 0 when all succeeded.
pub(super) async fn follow(
    client: &Client,
    tasks: &[(String, String)],
    as_json: bool,
) -> Result<Exit, CliError> {
    let terminal = std::io::stderr().is_terminal();
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(15));
    let width = tasks.iter().map(|(slug, _)| slug.len()).max().unwrap_or(0);
    let style = ProgressStyle::with_template(&format!(
        "{{prefix:>{width}.bold}} [{{bar:30.cyan/blue}}] {{pos:>3}}% {{msg}}"
    ))
    .map_err(|err| CliError::failed(format!("progress bar: {err}")))?
    .progress_chars("=> ");

    let mut streams = Vec::new();
    let mut views = Vec::new();
    for (index, (slug, task)) in tasks.iter().enumerate() {
        let events = client
            .events(&format!("/api/tasks/{}/events", encode(task)))
            .await?;
        streams.push(events.map(move |event| (index, event)).boxed());
        views.push(if as_json {
            View::Json
        } else if terminal {
            let bar = bars.add(ProgressBar::new(100));
            bar.set_style(style.clone());
            bar.set_prefix(slug.clone());
            bar.set_message("queued");
            bar.enable_steady_tick(Duration::from_millis(120));
            View::Bar(bar)
        } else {
            View::Lines {
                last: String::new(),
            }
        });
    }

    let mut finals: Vec<Option<Value>> = vec![None; tasks.len()];
    let mut events = select_all(streams);
    while finals.iter().any(Option::is_none) {
        let next = tokio::select! {
            next = events.next() => next,
            _ = tokio::signal::ctrl_c() => {
                return interrupted(client, tasks, &finals, &views).await;
            }
        };
        let Some((index, event)) = next else {
            return Err(CliError::failed(
                "the hub closed the event stream before the operation ended",
            ));
        };
        let event = event?;
        if let Some(status) = task_status(&event) {
            show(&tasks[index].0, &mut views[index], &status);
            if status["ready"].as_bool() == Some(true) {
                finals[index] = Some(status);
            }
        }
    }
    drop(events);

    let mut code = Exit::Ok;
    for ((slug, task), (status, view)) in tasks.iter().zip(finals.iter().zip(&views)) {
        let status = status.clone().unwrap_or(Value::Null);
        let state = status["state"].as_str().unwrap_or("?");
        if let View::Bar(bar) = view {
            let step = status["status"].as_str().unwrap_or(state).to_owned();
            if state == "SUCCESS" {
                bar.finish_with_message(format!("{} {step}", console::style("✔").green()));
            } else {
                bar.abandon_with_message(format!("{} {step}", console::style("✘").red()));
            }
        }
        if state != "SUCCESS" {
            code = Exit::Failed;
            if !as_json {
                let error = status["error"].as_str().unwrap_or("no reason given");
                let reason = status["error_code"].as_str().unwrap_or("failed");
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "hub: {slug}: task {task} ended {state}: {reason}: {error}"
                );
            }
        }
    }
    Ok(code)
}

/// The task status an event carries (`task` events; `end` carries no new state).
fn task_status(event: &SseEvent) -> Option<Value> {
    (event.event == "task")
        .then(|| serde_json::from_str(&event.data).ok())
        .flatten()
}

fn show(slug: &str, view: &mut View, status: &Value) {
    let state = status["state"].as_str().unwrap_or("?");
    let progress = status["progress"].as_u64().unwrap_or(0);
    let step = status["status"].as_str().unwrap_or(state);
    match view {
        View::Bar(bar) => {
            bar.set_position(progress);
            bar.set_message(step.to_owned());
        }
        View::Lines { last } => {
            // One line per step: the same step again (a retried event) is not news.
            let line = format!("{slug}: {state} {progress:>3}% {step}");
            if *last != line {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
                *last = line;
            }
        }
        View::Json => {
            let _ = writeln!(
                std::io::stdout().lock(),
                "{}",
                json!({"project": slug, "event": status})
            );
        }
    }
}

/// Ctrl-C while following: on a terminal, ask whether to cancel the operations still running;
/// elsewhere leave them running. Exit 130 either way, as an interrupted command does.
async fn interrupted(
    client: &Client,
    tasks: &[(String, String)],
    finals: &[Option<Value>],
    views: &[View],
) -> Result<Exit, CliError> {
    for view in views {
        if let View::Bar(bar) = view {
            bar.abandon();
        }
    }
    let open: Vec<&(String, String)> = tasks
        .iter()
        .zip(finals)
        .filter(|(_, done)| done.is_none())
        .map(|(task, _)| task)
        .collect();
    let cancel = std::io::stdin().is_terminal()
        && confirm("Cancel the operation (y), or leave it running (N)? ");
    let mut pending = FuturesUnordered::new();
    for (slug, task) in &open {
        if cancel {
            pending.push(async move {
                let revoked = client
                    .post(
                        &format!("/api/tasks/{}/revoke?terminate=true", encode(task)),
                        &json!({}),
                    )
                    .await;
                (slug, task, revoked)
            });
        } else {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{slug}: left running as task {task} (follow it with `hub tasks`)"
            );
        }
    }
    while let Some((slug, task, revoked)) = pending.next().await {
        let mut stderr = std::io::stderr().lock();
        let _ = match revoked {
            Ok(_) => writeln!(stderr, "{slug}: task {task} cancelled"),
            Err(err) => writeln!(
                stderr,
                "{slug}: cancelling task {task} failed: {}",
                err.message
            ),
        };
    }
    Err(CliError {
        code: Exit::Interrupted,
        message: "interrupted".into(),
        hint: None,
    })
}
