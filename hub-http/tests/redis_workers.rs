//! `hub serve` and `hub worker` processes on a real `redis-server`: many workers, a worker
//! killed mid-job, revokes across processes, Redis itself killed and started again, and queue
//! routing — against the real Docker engine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{
    FOUR_SERVICES, HubProcess, NEVER_HEALTHY, Process, RedisServer, SHORT_LEASE, Sse, follow,
    request, send_signal, spawn_redis_worker, start, stop, tag, wait_state,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A stack whose service turns healthy two seconds after it starts.
const HEALTHY_AFTER_2S: &str = r#"
[hub]
health_timeout = "2m"
stop_grace = "1s"
[services.slow]
image = "hubtest/busybox:latest"
command = ["/bin/sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 600"]
healthcheck = { test = ["CMD", "/bin/ls", "/tmp/ready"], interval = "200ms", retries = 1000 }
"#;

/// An empty stack: every operation succeeds at once, with no container.
const EMPTY: &str = "# no services\n";

/// Stops worker processes with SIGTERM (a graceful drain) and waits for them.
fn stop_workers(workers: &mut [Process]) {
    for worker in workers.iter_mut() {
        send_signal(worker, "TERM");
    }
    for worker in workers.iter_mut() {
        assert!(worker.wait().unwrap().success(), "a worker failed to drain");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_redis_run_1000_jobs_each_exactly_once() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    // With Redis, `hub serve` submits and serves; the workers run.
    let server = HubProcess::start(&data, &["--task-backend", &url]).await;
    let mut workers: Vec<Process> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| spawn_redis_worker(&data, &url, name, &[]))
        .collect();

    let mut projects = Vec::new();
    for i in 0..200 {
        let project = server
            .project(dir.path(), &format!("p{i}-{}", tag()), EMPTY)
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
    assert_eq!(tasks.len(), 1000);

    let (starts, ends) = follow(&mut events, &tasks).await;
    assert_eq!(starts.len(), 1000, "every task started");
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
        HashSet::from(["w1", "w2", "w3"]),
        "every worker ran tasks, the server none"
    );

    let (_, monitoring) = server.get("/api/monitoring").await;
    assert_eq!(monitoring["backend"], "redis");
    let online: Vec<&Value> = monitoring["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["online"] == true)
        .collect();
    assert_eq!(online.len(), 3, "{monitoring}");
    stop_workers(&mut workers);
    let (_, monitoring) = server.get("/api/monitoring").await;
    assert!(
        monitoring["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["online"] == false),
        "SIGTERM signs a worker off: {monitoring}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_has_its_job_finished_elsewhere() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let server = HubProcess::start(&data, &["--task-backend", &url]).await;
    let mut doomed = spawn_redis_worker(&data, &url, "doomed", &SHORT_LEASE);
    let project = server
        .project(dir.path(), &format!("slow-{}", tag()), HEALTHY_AFTER_2S)
        .await;
    let id = project["id"].as_i64().unwrap();
    let task = start(&server, id).await;
    let running = wait_state(&server, &task, &["RUNNING"], Duration::from_secs(60)).await;
    assert!(running["worker"].as_str().unwrap().starts_with("doomed@"));

    let mut rescuer = spawn_redis_worker(&data, &url, "rescuer", &SHORT_LEASE);
    send_signal(&doomed, "KILL");
    doomed.wait().unwrap();
    let killed = Instant::now();
    // The lease is 2 s: the job runs again elsewhere and completes within lease + 5 s.
    let done = wait_state(
        &server,
        &task,
        &["SUCCESS", "FAILURE"],
        Duration::from_secs(7),
    )
    .await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert!(done["worker"].as_str().unwrap().starts_with("rescuer@"));
    assert!(
        killed.elapsed() >= Duration::from_millis(1400),
        "taken back before the lease could expire"
    );
    assert_eq!(done["attempt"], 2, "{done}");
    let (_, project) = server.get(&format!("/api/projects/{id}")).await;
    assert_eq!(project["status"], "running", "{project}");

    stop(&server, id).await;
    stop_workers(std::slice::from_mut(&mut rescuer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revokes_reach_the_worker_that_holds_the_task() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let server = HubProcess::start(&data, &["--task-backend", &url]).await;
    let mut worker = spawn_redis_worker(&data, &url, "solo", &["--concurrency", "1"]);
    let busy = server
        .project(dir.path(), &format!("busy-{}", tag()), NEVER_HEALTHY)
        .await;
    let waiting = server
        .project(dir.path(), &format!("waiting-{}", tag()), EMPTY)
        .await;
    let mut events = Sse::open(server.port, "/api/events", None).await;
    let running = start(&server, busy["id"].as_i64().unwrap()).await;
    wait_state(&server, &running, &["RUNNING"], Duration::from_secs(60)).await;
    // The only slot is taken: this one waits in the queue.
    let queued = start(&server, waiting["id"].as_i64().unwrap()).await;

    // Revoked while queued: it never runs.
    let (status, body) = server
        .post(&format!("/api/tasks/{queued}/revoke"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, after) = server.get(&format!("/api/tasks/{queued}/status")).await;
    assert_eq!(after["state"], "REVOKED", "{after}");

    // Revoked with terminate while it runs on the worker: cancelled there, within a second.
    let asked = Instant::now();
    let (status, body) = server
        .post(
            &format!("/api/tasks/{running}/revoke?terminate=true"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_state(&server, &running, &["REVOKED"], Duration::from_secs(2)).await;
    assert!(asked.elapsed() < Duration::from_secs(2));

    let tasks = HashSet::from([running.clone(), queued.clone()]);
    let (starts, ends) = follow(&mut events, &tasks).await;
    assert!(!starts.contains_key(&queued), "the revoked queued task ran");
    assert_eq!(ends[&running], 1);
    // Neither held the project: it takes operations again.
    stop(&server, busy["id"].as_i64().unwrap()).await;
    stop_workers(std::slice::from_mut(&mut worker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_started_again_loses_no_job_and_runs_none_twice() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let mut redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let server = HubProcess::start(&data, &["--task-backend", &url]).await;
    let mut workers: Vec<Process> = ["r1", "r2"]
        .iter()
        .map(|name| spawn_redis_worker(&data, &url, name, &[]))
        .collect();
    let mut projects = Vec::new();
    for i in 0..300 {
        let project = server
            .project(dir.path(), &format!("r{i}-{}", tag()), EMPTY)
            .await;
        projects.push(project["id"].as_i64().unwrap());
    }
    let (first, rest) = projects.split_at(150);
    let mut tasks = HashSet::new();
    for id in first {
        tasks.insert(start(&server, *id).await);
    }
    // Killed while the workers drain the queue, then down for a while.
    redis.kill();
    let (status, body) = server
        .post(&format!("/api/orchestration/{}/start", rest[0]), json!({}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "backend_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", redis.port)),
        "the message names the address: {body}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, health) = server.get("/health").await;
    assert_ne!(health["task_backend"], "ok", "{health}");
    redis.start_again();

    // Back: the rest goes in, and everything ends, each task once.
    for id in rest {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = server
                .post(&format!("/api/orchestration/{id}/start"), json!({}))
                .await;
            if status == 202 {
                tasks.insert(body["task_id"].as_str().unwrap().to_owned());
                break;
            }
            // The server's connection comes back on its next command.
            assert_eq!(status, 503, "{body}");
            assert!(Instant::now() < deadline, "Redis never came back: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(tasks.len(), 300);
    let mut events = Sse::open(server.port, "/api/events", Some(0)).await;
    let (starts, ends) = follow(&mut events, &tasks).await;
    for task in &tasks {
        let (_, done) = server.get(&format!("/api/tasks/{task}/status")).await;
        assert_eq!(done["state"], "SUCCESS", "{done}");
    }
    assert!(
        starts.values().all(|w| w.len() == 1),
        "a task started twice"
    );
    assert!(ends.values().all(|n| *n == 1), "a task ended twice");
    stop_workers(&mut workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_e2e_flow_with_two_workers_on_redis() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let server = HubProcess::start(&data, &["--task-backend", &url]).await;
    let mut workers: Vec<Process> = ["e1", "e2"]
        .iter()
        .map(|name| spawn_redis_worker(&data, &url, name, &[]))
        .collect();
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["task_backend"], "ok", "{health}");

    let project = server
        .project(dir.path(), &format!("e2e-{}", tag()), FOUR_SERVICES)
        .await;
    let id = project["id"].as_i64().unwrap();
    let task = start(&server, id).await;
    let done = server.wait_task(&task).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["progress"], 100);
    let worker = done["worker"].as_str().unwrap();
    assert!(
        worker.starts_with("e1@") || worker.starts_with("e2@"),
        "{worker}"
    );
    let (_, running) = server.get(&format!("/api/projects/{id}")).await;
    assert_eq!(running["status"], "running");
    let backend = running["backend_port"].as_u64().unwrap() as u16;
    let (status, page) = request(backend, "GET", "/", None, &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("hubtest"));
    let (status, stack) = server.get(&format!("/api/orchestration/{id}/status")).await;
    assert_eq!(status, 200);
    assert_eq!(stack["services"].as_array().unwrap().len(), 4);

    stop(&server, id).await;
    let (_, stopped) = server.get(&format!("/api/projects/{id}")).await;
    assert_eq!(stopped["status"], "stopped");
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/api/projects/{id}?delete_data=true"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    stop_workers(&mut workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_go_to_their_hosts_queue_and_only_its_workers_run_them() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let server = HubProcess::start(&data, &["--task-backend", &url]).await;
    let mut workers = vec![
        spawn_redis_worker(&data, &url, "wa", &["--queues", "a"]),
        spawn_redis_worker(&data, &url, "wb", &["--queues", "b"]),
    ];
    let mut placed = HashMap::new();
    for host in ["a", "b", "c", "local"] {
        let project = server
            .project_with(
                dir.path(),
                &format!("on-{host}-{}", tag()),
                EMPTY,
                json!({"host": host}),
            )
            .await;
        assert_eq!(project["host"], host, "{project}");
        let task = start(&server, project["id"].as_i64().unwrap()).await;
        placed.insert(host, task);
    }
    for (host, worker) in [("a", "wa@"), ("b", "wb@")] {
        let done = server.wait_task(&placed[host]).await;
        assert_eq!(done["state"], "SUCCESS", "{done}");
        assert!(
            done["worker"].as_str().unwrap().starts_with(worker),
            "{host}: {done}"
        );
    }
    // No worker takes queue `c` or the default one: those wait, whatever the others do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for host in ["c", "local"] {
        let (_, waiting) = server
            .get(&format!("/api/tasks/{}/status", placed[host]))
            .await;
        assert_eq!(waiting["state"], "PENDING", "{host}: {waiting}");
    }
    let (_, monitoring) = server.get("/api/monitoring").await;
    let queues: HashMap<&str, &Value> = monitoring["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["name"].as_str().unwrap(), q))
        .collect();
    assert_eq!(queues["c"]["pending"], 1, "{monitoring}");
    assert_eq!(queues["default"]["pending"], 1, "{monitoring}");

    // A worker of every queue picks them up.
    workers.push(spawn_redis_worker(&data, &url, "any", &[]));
    for host in ["c", "local"] {
        let done = server.wait_task(&placed[host]).await;
        assert_eq!(done["state"], "SUCCESS", "{done}");
        assert!(done["worker"].as_str().unwrap().starts_with("any@"));
    }
    // A host name becomes a queue name, so it follows the same rules.
    let folder = dir.path().join("bad-host");
    std::fs::create_dir_all(&folder).unwrap();
    let (status, body) = server
        .post(
            "/api/projects",
            json!({"name": "bad-host", "path": folder, "host": "no spaces"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "host", "{body}");
    stop_workers(&mut workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_turns_offline_in_the_monitor_and_back_online_when_resumed() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let server = HubProcess::start(&data, &["--task-backend", &url]).await;
    let mut worker = spawn_redis_worker(&data, &url, "pausable", &SHORT_LEASE);
    let online = |want: u64| {
        let server = &server;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let (status, view) = server.get("/api/monitor/workers").await;
                assert_eq!(status, 200, "{view}");
                if view["online"] == want {
                    return (Instant::now(), view);
                }
                assert!(Instant::now() < deadline, "never {want} online: {view}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (_, view) = online(1).await;
    assert_eq!(view["expire_after_seconds"], 3600.0, "{view}");
    let (_, queues) = server.get("/api/monitor/queues").await;
    assert!(
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["consumers"] == 1),
        "{queues}"
    );

    send_signal(&worker, "STOP");
    let paused = Instant::now();
    let (offline_at, view) = online(0).await;
    assert!(
        offline_at - paused <= Duration::from_millis(3000),
        "offline within the 2 s lease after its last heartbeat"
    );
    let listed = &view["workers"][0];
    assert_eq!(listed["online"], false, "{view}");
    assert!(listed["name"] == "pausable", "{view}");
    let (_, alerts) = server.get("/api/monitor/alerts").await;
    assert_eq!(alerts["alerts"][0]["kind"], "no_worker_online", "{alerts}");

    send_signal(&worker, "CONT");
    online(1).await;
    let (_, alerts) = server.get("/api/monitor/alerts").await;
    assert_eq!(alerts["alerts"], json!([]), "{alerts}");
    stop_workers(std::slice::from_mut(&mut worker));
}
