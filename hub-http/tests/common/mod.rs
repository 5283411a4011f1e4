//! Helpers of the tests that run the real `hub` binary: processes, HTTP/1.0 requests and
//! Server-Sent Events over plain sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)] // test helpers panic on setup failure by design

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The 4-service test stack (`tests/fixtures/four-services.toml`).
pub const FOUR_SERVICES: &str = include_str!("../../../tests/fixtures/four-services.toml");

/// A stack whose start waits on a health check that never passes: the task stays running.
pub const NEVER_HEALTHY: &str = r#"
[hub]
health_timeout = "5m"
stop_grace = "1s"
[services.stuck]
image = "hubtest/busybox:latest"
command = ["/bin/sleep", "600"]
healthcheck = { test = ["CMD", "/bin/false"], interval = "1s", retries = 1000 }
"#;

/// Leases short enough for a test: a lost worker is noticed within about three seconds.
pub const SHORT_LEASE: [&str; 4] = ["--task-lease", "2", "--task-heartbeat", "0.5"];

/// A short random tag, so names never clash between tests.
pub fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_owned()
}

/// Polls until the task's state (as `hub` answers it) is one of `states`.
pub async fn wait_state(
    hub: &HubProcess,
    task_id: &str,
    states: &[&str],
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = hub.get(&format!("/api/tasks/{task_id}/status")).await;
        assert_eq!(status, 200, "{body}");
        if states.iter().any(|s| body["state"] == *s) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "task {task_id} never reached {states:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the project through `hub`; returns the task id.
pub async fn start(hub: &HubProcess, project: i64) -> String {
    let (status, body) = hub
        .post(&format!("/api/orchestration/{project}/start"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    body["task_id"].as_str().unwrap().to_owned()
}

/// Stops the project through `hub` (removing its containers) and waits for it.
pub async fn stop(hub: &HubProcess, project: i64) {
    let (status, body) = hub
        .post(&format!("/api/orchestration/{project}/stop"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let done = hub.wait_task(body["task_id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
}

/// A running `hub serve`.
pub struct HubProcess {
    pub child: Child,
    pub port: u16,
    data: PathBuf,
    args: Vec<String>,
    token: Option<String>,
}

impl HubProcess {
    /// `hub serve` on a free port with `data` as its data folder, once it answers.
    pub async fn start(data: &Path, extra: &[&str]) -> HubProcess {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let token = args
            .iter()
            .position(|a| a == "--token")
            .map(|i| args[i + 1].clone());
        let port = free_port();
        let hub = HubProcess {
            child: spawn(data, port, &args),
            port,
            data: data.to_path_buf(),
            args,
            token,
        };
        hub.wait_ready().await;
        hub
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = request(self.port, "GET", "/health", None, &[]).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("hub did not answer /health");
    }

    /// Stops the hub with SIGTERM (graceful) and starts it again on the same data folder.
    pub async fn restart(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let code = self.child.wait().unwrap();
        assert!(code.success(), "hub exited with {code}");
        self.child = spawn(&self.data, self.port, &self.args);
        self.wait_ready().await;
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let body = body.map(|b| b.to_string());
        let (status, text) = request(self.port, method, path, body.as_deref(), &headers)
            .await
            .unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// Polls a task's status until it is ready.
    pub async fn wait_task(&self, task_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let (status, body) = self.get(&format!("/api/tasks/{task_id}/status")).await;
            assert_eq!(status, 200, "{body}");
            if body["ready"] == true {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("task {task_id} did not finish");
    }

    /// Registers a project whose folder holds `stack` as `hub.toml`.
    pub async fn project(&self, root: &Path, name: &str, stack: &str) -> Value {
        self.project_with(root, name, stack, json!({})).await
    }

    /// Registers a project like [`HubProcess::project`], with `extra` fields in the body
    /// (`{"host": "b"}`).
    pub async fn project_with(&self, root: &Path, name: &str, stack: &str, extra: Value) -> Value {
        let folder = root.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("hub.toml"), stack).unwrap();
        let mut body = json!({"name": name, "path": folder});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, body) = self.post("/api/projects", body).await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Projects live beside the data folder, so its parent is the project root unless a test says
/// otherwise.
fn spawn(data: &Path, port: u16, extra: &[String]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hub"));
    command
        .arg("serve")
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", data.to_str().unwrap()]);
    if !extra
        .iter()
        .any(|arg| arg == "--project-root" || arg == "--browse-root")
    {
        command.args(["--project-root", data.parent().unwrap().to_str().unwrap()]);
    }
    command
        .args(extra)
        .env("HUB_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hub")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 exchange (the server closes the connection, so no chunking to undo).
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if let Some(body) = body {
        stream.write_all(body.as_bytes()).await?;
    }
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// An open Server-Sent Events stream.
pub struct Sse {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

/// One SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

impl Sse {
    pub async fn open(port: u16, path: &str, last_event_id: Option<u64>) -> Sse {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut head =
            format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        while !lines.next_line().await.unwrap().unwrap().is_empty() {}
        Sse { lines }
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<SseEvent> {
        let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
                .await
                .expect("event in time")
                .ok()??;
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Some(SseEvent {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                });
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }
}

/// Sends `signal` to a child process.
pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

/// A child process that is killed when dropped, so a failing test leaves none behind; as a
/// `Child` otherwise (signal it, wait for it).
pub struct Process(Child);

impl Process {
    /// Takes charge of a spawned child.
    pub fn new(child: Child) -> Self {
        Process(child)
    }
}

impl std::ops::Deref for Process {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Already waited for: killing a reaped child only fails, harmlessly.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `hub worker` on `data`, with `extra` flags; its log goes to `log`.
pub fn spawn_worker(data: &Path, extra: &[&str], log: &Path) -> Process {
    Process::new(
        Command::new(env!("CARGO_BIN_EXE_hub"))
            .arg("worker")
            .args(["--data-dir", data.to_str().unwrap()])
            .args(extra)
            .env("HUB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start hub worker"),
    )
}

/// A real `redis-server` on a free loopback port, its data in a folder of its own, every
/// write appended to its AOF and synced (`appendfsync always`): killed and started again, it
/// comes back with everything it acknowledged.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server keeping its files in `dir` (created), once it answers.
    pub fn start(dir: &Path) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let child = Self::spawn(dir, port);
        let server = RedisServer {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        server.wait_ready();
        server
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", dir.to_str().unwrap()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) on PATH")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut answer = [0u8; 64];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream
                        .read(&mut answer)
                        .is_ok_and(|n| answer[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (`SIGKILL`): nothing is flushed but what `appendfsync always` wrote.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and files.
    pub fn start_again(&mut self) {
        self.child = Self::spawn(&self.dir, self.port);
        self.wait_ready();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `hub worker` on Redis at `redis` and the registry in `data`, named `name`, with `extra`
/// flags; its log goes to `<data>/../<name>.log`.
pub fn spawn_redis_worker(data: &Path, redis: &str, name: &str, extra: &[&str]) -> Process {
    let log = data.parent().unwrap().join(format!("{name}.log"));
    spawn_worker(
        data,
        &[&["--task-backend", redis, "--worker-name", name], extra].concat(),
        &log,
    )
}

/// Follows the server's event stream until every task in `tasks` has ended, checking that
/// sequence numbers follow on with no gap or duplicate; returns, per task, the workers that
/// started it (one entry per start) and how many times it ended. An event of a task not in
/// `tasks` fails the test.
pub async fn follow(
    events: &mut Sse,
    tasks: &HashSet<String>,
) -> (HashMap<String, Vec<String>>, HashMap<String, usize>) {
    let mut last: Option<u64> = None;
    let mut starts: HashMap<String, Vec<String>> = HashMap::new();
    let mut ends: HashMap<String, usize> = HashMap::new();
    while ends.len() < tasks.len() {
        let event = tokio::time::timeout(Duration::from_secs(120), events.next())
            .await
            .expect("events keep coming")
            .expect("stream open");
        let seq = event.id.expect("every event has an id");
        if let Some(last) = last {
            assert_eq!(seq, last + 1, "gap or duplicate after {last}");
        }
        last = Some(seq);
        let task = event.data["task_id"].as_str().unwrap().to_owned();
        assert!(tasks.contains(&task), "an event of an unknown task");
        match event.data["state"].as_str().unwrap() {
            "STARTED" => starts
                .entry(task)
                .or_default()
                .push(event.data["worker"].as_str().unwrap_or("").to_owned()),
            "SUCCESS" | "FAILURE" | "REVOKED" => *ends.entry(task).or_default() += 1,
            _ => {}
        }
    }
    (starts, ends)
}
