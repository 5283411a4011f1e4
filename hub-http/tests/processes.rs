//! Several real processes on one data folder: `hub serve`, `hub serve --no-worker` and `hub
//! worker`, killed (`SIGKILL`), paused (`SIGSTOP`) and resumed, against the real Docker engine.
//! One store, one truth: a task belongs to the worker that holds its lease, and to no one else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    HubProcess, NEVER_HEALTHY, SHORT_LEASE, Sse, follow, send_signal, spawn_worker, start, stop,
    tag, wait_state,
};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tempfile::TempDir;

/// A stack whose service turns healthy five seconds after it starts.
const SLOW_HEALTHY: &str = r#"
[hub]
health_timeout = "2m"
stop_grace = "1s"
[services.slow]
image = "hubtest/busybox:latest"
command = ["/bin/sh", "-c", "sleep 5; touch /tmp/ready; exec sleep 600"]
healthcheck = { test = ["CMD", "/bin/ls", "/tmp/ready"], interval = "300ms", retries = 1000 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_leaves_the_first_ones_operation_alone_until_its_owner_dies() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let first = HubProcess::start(&data, &SHORT_LEASE).await;
    let project = first
        .project(dir.path(), &format!("stuck-{}", tag()), NEVER_HEALTHY)
        .await;
    let id = project["id"].as_i64().unwrap();
    let task = start(&first, id).await;
    let running = wait_state(&first, &task, &["RUNNING"], Duration::from_secs(60)).await;
    assert_eq!(running["ready"], false);

    // A second server on the same folder sees the task running and refuses a second operation.
    let second = HubProcess::start(&data, &SHORT_LEASE).await;
    let seen = wait_state(&second, &task, &["RUNNING"], Duration::from_secs(5)).await;
    assert_eq!(seen["ready"], false);
    for op in ["start", "stop", "restart"] {
        let (status, body) = second
            .post(&format!("/api/orchestration/{id}/{op}"), json!({}))
            .await;
        assert_eq!(status, 409, "{op}: {body}");
        assert_eq!(body["error"]["code"], "conflict");
    }

    // A third one that opens the folder and then fails to bind its port changes nothing.
    let status = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["serve", "--bind", &format!("127.0.0.1:{}", first.port)])
        .args(["--data-dir", data.to_str().unwrap()])
        .env("HUB_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "a busy port must fail the third server");
    let (_, after) = first.get(&format!("/api/tasks/{task}/status")).await;
    assert_eq!(after["state"], "RUNNING", "{after}");
    let (status, _) = first
        .post(&format!("/api/orchestration/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 409, "the key is still held");

    // The owner dies: once its lease expires, the open second server ends the task.
    first.signal("KILL");
    let killed = Instant::now();
    let ended = wait_state(&second, &task, &["FAILURE"], Duration::from_secs(15)).await;
    assert_eq!(ended["error_code"], "interrupted", "{ended}");
    assert!(
        killed.elapsed() >= Duration::from_millis(1400),
        "ended before the lease could expire"
    );
    let mut status_now = Value::Null;
    for _ in 0..50 {
        let (_, project) = second.get(&format!("/api/projects/{id}")).await;
        status_now = project["status"].clone();
        if status_now != "starting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(status_now, "starting", "the project was left starting");
    // And the project takes operations again.
    stop(&second, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_beside_a_client_server_run_500_jobs_each_exactly_once() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let server = HubProcess::start(&data, &["--no-worker"]).await;
    let logs: Vec<_> = (1..=2)
        .map(|i| dir.path().join(format!("worker-{i}.log")))
        .collect();
    let mut workers: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let name = format!("w{}", i + 1);
            spawn_worker(&data, &["--worker-name", &name, "--concurrency", "2"], log)
        })
        .collect();

    // 100 projects with empty stacks: each operation succeeds at once, with no container.
    let mut projects = Vec::new();
    for i in 0..100 {
        let project = server
            .project(dir.path(), &format!("p{i}-{}", tag()), "# no services\n")
            .await;
        projects.push(project["id"].as_i64().unwrap());
    }
    let mut events = Sse::open(server.port, "/api/events", None).await;
    let mut tasks: HashSet<String> = HashSet::new();
    for op in ["start", "stop", "start", "stop", "start"] {
        let mut round = Vec::new();
        for id in &projects {
            let (status, body) = server
                .post(&format!("/api/orchestration/{id}/{op}"), json!({}))
                .await;
            assert_eq!(status, 202, "{body}");
            round.push(body["task_id"].as_str().unwrap().to_owned());
        }
        for task in &round {
            let done = server.wait_task(task).await;
            assert_eq!(done["state"], "SUCCESS", "{done}");
        }
        tasks.extend(round);
    }
    assert_eq!(tasks.len(), 500);

    // Every event reached the server's subscriber in order, with no gap or duplicate.
    let (starts, ends) = follow(&mut events, &tasks).await;
    assert_eq!(starts.len(), 500, "every task started");
    assert!(
        starts.values().all(|w| w.len() == 1),
        "a task started twice"
    );
    assert!(ends.values().all(|n| *n == 1), "a task ended twice");
    let by_worker: HashSet<&str> = starts
        .values()
        .flatten()
        .map(|w| w.split('@').next().unwrap())
        .collect();
    assert_eq!(
        by_worker,
        HashSet::from(["w1", "w2"]),
        "both workers ran tasks, the server none"
    );

    let (_, monitoring) = server.get("/api/monitoring").await;
    let online: Vec<&Value> = monitoring["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["online"] == true)
        .collect();
    assert_eq!(online.len(), 2, "{monitoring}");
    // SIGTERM drains a worker and signs it off.
    for worker in &mut workers {
        send_signal(worker, "TERM");
        assert!(worker.wait().unwrap().success());
    }
    let (_, monitoring) = server.get("/api/monitoring").await;
    assert!(
        monitoring["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["online"] == false),
        "{monitoring}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_cannot_overwrite_what_replaced_it() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let server = HubProcess::start(&data, &["--no-worker"]).await;
    let log = dir.path().join("paused.log");
    let mut paused = spawn_worker(
        &data,
        &[&SHORT_LEASE[..], &["--worker-name", "paused"]].concat(),
        &log,
    );
    let project = server
        .project(dir.path(), &format!("slow-{}", tag()), SLOW_HEALTHY)
        .await;
    let id = project["id"].as_i64().unwrap();
    let task = start(&server, id).await;
    let running = wait_state(&server, &task, &["RUNNING"], Duration::from_secs(60)).await;
    assert!(running["worker"].as_str().unwrap().starts_with("paused@"));

    // Pause it past its lease; another worker recovers the task meanwhile.
    pause_outside_a_write(&paused, &data.join("hub.db")).await;
    let rescuer_log = dir.path().join("rescuer.log");
    let mut rescuer = spawn_worker(
        &data,
        &[&SHORT_LEASE[..], &["--worker-name", "rescuer"]].concat(),
        &rescuer_log,
    );
    let ended = wait_state(&server, &task, &["FAILURE"], Duration::from_secs(15)).await;
    assert_eq!(ended["error_code"], "interrupted", "{ended}");

    // Resumed, the paused worker goes on where it stopped — its service turns healthy — but
    // what it writes of the replaced attempt is refused.
    send_signal(&paused, "CONT");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (_, after) = server.get(&format!("/api/tasks/{task}/status")).await;
    assert_eq!(
        after["state"], "FAILURE",
        "the paused worker overwrote the result: {after}"
    );
    assert_eq!(after["error_code"], "interrupted");
    assert_eq!(after["progress"], ended["progress"]);

    stop(&server, id).await;
    for worker in [&mut paused, &mut rescuer] {
        send_signal(worker, "TERM");
        worker.wait().unwrap();
    }
}

/// Stops `worker` (`SIGSTOP`) at a moment it holds no write transaction on the SQLite store
/// `db`. A process frozen inside one keeps SQLite's write lock, and every other process's
/// writes wait for it: that is SQLite's rule, not what this test is about.
async fn pause_outside_a_write(worker: &common::Process, db: &Path) {
    for _ in 0..100 {
        send_signal(worker, "STOP");
        let options = SqliteConnectOptions::new()
            .filename(db)
            .busy_timeout(Duration::from_millis(200));
        let mut probe = SqliteConnection::connect_with(&options).await.unwrap();
        let free = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut probe)
            .await
            .is_ok();
        if free {
            sqlx::query("ROLLBACK").execute(&mut probe).await.unwrap();
            return;
        }
        send_signal(worker, "CONT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the worker held the store's write lock at every try");
}
