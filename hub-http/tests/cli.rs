//! The `hub` client commands, run as the real binary against a real `hub serve` on the real
//! Docker engine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure by design

mod common;

use std::process::Output;

use common::{FOUR_SERVICES, HubProcess, NEVER_HEALTHY};
use tempfile::TempDir;

/// Runs `hub ARGS` against the hub at `port` (no terminal: plain output).
async fn hub(port: u16, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(args)
        .env("HUB_URL", format!("http://127.0.0.1:{port}"))
        .env_remove("HUB_API_TOKEN")
        .output()
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// add → ls → start (a line per step) → status → logs → stop → rm, then a start that fails on
/// a busy port, then the live bar in a pseudo-terminal. One test: the stacks share the engine's
/// default ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_drives_a_stack_from_add_to_rm() {
    let dir = TempDir::new().unwrap();
    let server = HubProcess::start(&dir.path().join("state"), &[]).await;
    let port = server.port;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let name = format!("cli-{tag}");
    let folder = dir.path().join(&name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("hub.toml"), FOUR_SERVICES).unwrap();

    let added = hub(port, &["add", folder.to_str().unwrap()]).await;
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(stdout(&added).contains("backend"), "{}", stdout(&added));

    let listed = hub(port, &["ls"]).await;
    assert!(listed.status.success());
    let table = stdout(&listed);
    assert!(table.contains("NAME") && table.contains(&name), "{table}");
    assert!(table.contains("stopped"), "{table}");
    assert!(
        !table.contains('\u{1b}'),
        "no colour off a terminal: {table:?}"
    );
    let json = hub(port, &["ls", "--json"]).await;
    let projects: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(projects[0]["name"], name.as_str());

    let started = hub(port, &["start", &name]).await;
    let lines = stdout(&started);
    assert_eq!(
        started.status.code(),
        Some(0),
        "{lines}\n{}",
        stderr(&started)
    );
    let steps: Vec<&str> = lines.lines().collect();
    assert!(steps.len() >= 5, "a line per step: {lines}");
    assert!(
        steps.iter().any(|l| l.contains("Creating network")),
        "{lines}"
    );
    assert!(steps.last().unwrap().contains("SUCCESS 100%"), "{lines}");

    let status = hub(port, &["status", &name]).await;
    let text = stdout(&status);
    assert!(status.status.success(), "{}", stderr(&status));
    for service in ["backend", "frontend", "cache", "db"] {
        assert!(text.contains(service), "{text}");
    }
    assert!(text.contains("→ 127.0.0.1:"), "{text}");
    assert!(text.contains("running"), "{text}");

    let logs = hub(port, &["logs", &name, "cache", "-n", "5"]).await;
    assert!(logs.status.success(), "{}", stderr(&logs));
    let printed = stdout(&logs);
    let count = printed.lines().count();
    assert!((1..=5).contains(&count), "{printed}");
    assert!(
        printed.contains("Ready to accept connections") || count == 5,
        "{printed}"
    );

    let missing = hub(port, &["logs", &name, "nope"]).await;
    assert_eq!(missing.status.code(), Some(4), "{}", stderr(&missing));

    let stopped = hub(port, &["stop", &name]).await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stderr(&stopped));

    // A busy port: the start fails, exit 1, with the task's error code in the message.
    let project: serde_json::Value = projects[0].clone();
    let backend = project["backend_port"].as_u64().unwrap() as u16;
    let squatter = std::net::TcpListener::bind(("0.0.0.0", backend)).unwrap();
    let failed = hub(port, &["start", &name]).await;
    assert_eq!(failed.status.code(), Some(1), "{}", stdout(&failed));
    assert!(
        stderr(&failed).contains("port_in_use"),
        "{}",
        stderr(&failed)
    );
    drop(squatter);

    // In a pseudo-terminal: one bar, redrawn in place, that ends at 100 %.
    let typescript = dir.path().join("typescript");
    let command = format!(
        "{} --url http://127.0.0.1:{port} start {name}",
        env!("CARGO_BIN_EXE_hub")
    );
    let pty = tokio::process::Command::new("script")
        .args(["-qfec", &command, typescript.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(pty.status.success(), "{}", stderr(&pty));
    let screen = std::fs::read_to_string(&typescript).unwrap();
    assert!(
        screen.contains("\r\u{1b}[2K"),
        "redrawn in place: {screen:?}"
    );
    assert!(screen.matches('%').count() > 3, "{screen:?}");
    let last = screen.rsplit('\r').find(|s| s.contains('%')).unwrap();
    assert!(last.contains("100%"), "ends at 100 %: {last:?}");
    assert!(!screen.contains("\n2%"), "no line per step on a terminal");

    let removed = hub(port, &["rm", &name, "--data", "--yes"]).await;
    assert!(removed.status.success(), "{}", stderr(&removed));
    let listed = hub(port, &["ls", "--json"]).await;
    assert_eq!(stdout(&listed).trim(), "[]");
}

/// Without a hub: exit 3 and how to start one. Unknown names: exit 4. Usage: exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_what_went_wrong() {
    let nobody = common::free_port();
    let output = hub(nobody, &["ls"]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("hub serve"), "{}", stderr(&output));

    let dir = TempDir::new().unwrap();
    let server = HubProcess::start(&dir.path().join("state"), &[]).await;
    let output = hub(server.port, &["status", "no-such-project"]).await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let output = hub(server.port, &["rm", "whatever"]).await;
    assert_eq!(output.status.code(), Some(4));
    let output = hub(server.port, &["start"]).await;
    assert_eq!(output.status.code(), Some(2), "NAME is required");

    // A name with spaces is found by its display name.
    let folder = dir.path().join("spaced");
    std::fs::create_dir_all(&folder).unwrap();
    let added = hub(
        server.port,
        &["add", folder.to_str().unwrap(), "--name", "My Spaced App"],
    )
    .await;
    assert!(added.status.success(), "{}", stderr(&added));
    let status = hub(server.port, &["status", "my spaced app", "--json"]).await;
    assert!(status.status.success(), "{}", stderr(&status));
    let open = hub(server.port, &["open", "My Spaced App"]).await;
    assert!(
        stdout(&open).starts_with("http://127.0.0.1:"),
        "{}",
        stdout(&open)
    );
    let tasks = hub(server.port, &["tasks", "--project", "my-spaced-app"]).await;
    assert!(tasks.status.success(), "{}", stderr(&tasks));
    assert!(stdout(&tasks).contains("TASK"), "{}", stdout(&tasks));
    let cancel = hub(server.port, &["cancel", &uuid::Uuid::new_v4().to_string()]).await;
    assert_eq!(cancel.status.code(), Some(4), "{}", stderr(&cancel));
    let rm = hub(server.port, &["rm", "My Spaced App"]).await;
    assert_eq!(rm.status.code(), Some(2), "no terminal, no --yes: refused");

    let completions = hub(server.port, &["completions", "bash"]).await;
    assert!(completions.status.success());
    assert!(stdout(&completions).contains("_hub"));
}

/// Ctrl-C in a real terminal (tmux): `logs -f` ends cleanly; while following a start, the
/// command asks, and `y` cancels the operation — the task ends REVOKED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_asks_whether_to_cancel_the_operation() {
    let dir = TempDir::new().unwrap();
    let server = HubProcess::start(&dir.path().join("state"), &[]).await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let project = server
        .project(dir.path(), &format!("stuck-{tag}"), NEVER_HEALTHY)
        .await;
    let slug = project["slug"].as_str().unwrap().to_owned();
    let session = format!("hub-cli-{tag}");
    let tmux = |args: &[&str]| {
        let status = std::process::Command::new("tmux")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "tmux {args:?}");
    };
    let screen = |session: &str| {
        let out = std::process::Command::new("tmux")
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wait_on = |session: &str, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let shown = screen(session);
            if shown.contains(what) {
                return shown;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what:?} on screen:\n{shown}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let command = format!(
        "{} --url http://127.0.0.1:{} start {slug}; echo EXIT=$?; sleep 600",
        env!("CARGO_BIN_EXE_hub"),
        server.port
    );
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "160",
        "-y",
        "20",
        "-s",
        &session,
        &command,
    ]);
    let wait_for = |what: &str| wait_on(&session, what);
    wait_for("Waiting for stuck");

    // Meanwhile `logs -f` follows the waiting service; Ctrl-C ends it cleanly, exit 0.
    let logs_session = format!("{session}-logs");
    let follow = format!(
        "{} --url http://127.0.0.1:{} logs {slug} stuck -f; echo EXIT=$?; sleep 600",
        env!("CARGO_BIN_EXE_hub"),
        server.port
    );
    tmux(&["new-session", "-d", "-s", &logs_session, &follow]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !screen(&logs_session).contains("EXIT="),
        "logs -f keeps following"
    );
    tmux(&["send-keys", "-t", &logs_session, "C-c"]);
    let shown = wait_on(&logs_session, "EXIT=");
    assert!(shown.contains("EXIT=0"), "{shown}");
    tmux(&["kill-session", "-t", &logs_session]);

    tmux(&["send-keys", "-t", &session, "C-c"]);
    wait_for("Cancel the operation");
    tmux(&["send-keys", "-t", &session, "y", "Enter"]);
    let shown = wait_for("EXIT=");
    assert!(shown.contains("cancelled"), "{shown}");
    assert!(shown.contains("EXIT=130"), "{shown}");
    tmux(&["kill-session", "-t", &session]);

    let (_, tasks) = server.get("/api/tasks?limit=1").await;
    let task = &tasks[0];
    let id = task["task_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, status) = server.get(&format!("/api/tasks/{id}/status")).await;
        if status["state"] == "REVOKED" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, removed) = server
        .call(
            "DELETE",
            &format!("/api/projects/{}?delete_data=true", project["id"]),
            None,
        )
        .await;
    assert!(removed.is_object(), "{removed}");
}

/// `hub stack NAME` prints what a start would run: a compose project's services with the
/// hub's ports in place of the file's, as text and as JSON (the same as
/// `GET /api/projects/{id}/stack`); a broken compose file is a 422 naming the key and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_stack_prints_the_effective_compose_stack() {
    let dir = TempDir::new().unwrap();
    let server = HubProcess::start(&dir.path().join("state"), &[]).await;
    let folder = dir.path().join("shop");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("compose.yaml"),
        "services:\n  api:\n    image: example/api\n    ports: [\"8000:8000\"]\n    \
         environment:\n      MAIL: http://localhost:${MAILHOG_PORT}\n  \
         mailhog:\n    image: example/mailhog\n    ports: [\"8025:8025\"]\n",
    )
    .unwrap();
    let added = hub(server.port, &["add", folder.to_str().unwrap(), "--json"]).await;
    assert!(added.status.success(), "{}", stderr(&added));
    let project: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    let backend = project["backend_port"].as_u64().unwrap();

    let printed = hub(server.port, &["stack", "shop"]).await;
    assert!(printed.status.success(), "{}", stderr(&printed));
    let text = stdout(&printed);
    assert!(
        text.contains(&format!("8000/tcp → 127.0.0.1:{backend} (backend port)")),
        "{text}"
    );
    assert!(text.contains("(extra port)"), "{text}");

    let json = hub(server.port, &["stack", "shop", "--json"]).await;
    let stack: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let (status, api) = server
        .get(&format!("/api/projects/{}/stack", project["id"]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(api, stack);
    assert_eq!(stack["format"], "compose");
    let mail = stack["services"][1]["ports"][0]["host_port"]
        .as_u64()
        .unwrap();
    assert_ne!(mail, 8025, "the file's host port is replaced");
    assert_eq!(
        stack["services"][0]["environment"]["MAIL"],
        format!("http://localhost:{mail}")
    );
    assert!(
        text.contains(&format!("MAIL=http://localhost:{mail}")),
        "{text}"
    );

    // A mistake in the file: 422 naming the key and its line, and the CLI says so.
    std::fs::write(
        folder.join("compose.yaml"),
        "services:\n  api:\n    image: example/api\n    privileged: true\n",
    )
    .unwrap();
    let (status, body) = server
        .get(&format!("/api/projects/{}/stack", project["id"]))
        .await;
    assert_eq!(status, 422, "{body}");
    let field = body["error"]["field"].as_str().unwrap_or_default();
    assert!(
        field.ends_with("compose.yaml: services.api.privileged"),
        "{body}"
    );
    let refused = hub(server.port, &["stack", "shop"]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("line 4"), "{}", stderr(&refused));
}

/// `hub health`: 0 while the hub answers with its database up, 3 when nothing answers; with
/// `--worker`, 0 only while a worker of that name heartbeats (what container health checks run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_the_hub_and_a_named_worker() {
    let dir = TempDir::new().unwrap();
    let server = HubProcess::start(&dir.path().join("state"), &["--worker-name", "w-main"]).await;
    let healthy = hub(server.port, &["health"]).await;
    assert!(healthy.status.success(), "{}", stderr(&healthy));
    assert_eq!(stdout(&healthy).trim(), "healthy");

    let worker = hub(server.port, &["health", "--worker", "w-main"]).await;
    assert!(worker.status.success(), "{}", stderr(&worker));
    let missing = hub(server.port, &["health", "--worker", "w-other"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("w-other"), "{}", stderr(&missing));

    let nobody = hub(common::free_port(), &["health"]).await;
    assert_eq!(nobody.status.code(), Some(3), "{}", stderr(&nobody));
}
