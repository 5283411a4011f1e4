//! End to end: the real `hub` binary on a free loopback port with a temporary data folder,
//! driven over HTTP, against the real Docker engine with the local test images.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure by design

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{FOUR_SERVICES, HubProcess, NEVER_HEALTHY, Sse, request};
use serde_json::{Value, json};
use tempfile::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_e2e_flow_against_docker() {
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(&dir.path().join("state"), &[]).await;

    let (status, health) = hub.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["database"], "ok");
    assert_eq!(health["docker"], "ok", "{health}");

    let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let project = hub
        .project(dir.path(), &format!("e2e-{tag}"), FOUR_SERVICES)
        .await;
    let id = project["id"].as_i64().unwrap();
    for field in [
        "slug",
        "path",
        "backend_port",
        "frontend_port",
        "postgres_port",
        "redis_port",
        "status",
        "health",
        "last_error",
        "created_at",
        "updated_at",
        "last_started",
        "last_stopped",
    ] {
        assert!(project.get(field).is_some(), "missing {field}: {project}");
    }
    assert_eq!(project["status"], "stopped");

    let (status, accepted) = hub
        .post(&format!("/api/orchestration/{id}/start"), json!({}))
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "pending");
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();
    let (status, first) = hub.get(&format!("/api/task-status/{task_id}")).await;
    assert_eq!(status, 200);
    assert!(first["progress"].as_u64().unwrap() <= 100);

    let done = hub.wait_task(&task_id).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    assert_eq!(done["status"], "Completed successfully");
    assert_eq!(done["progress"], 100);

    let (_, running) = hub.get(&format!("/api/projects/{id}")).await;
    assert_eq!(running["status"], "running");
    let backend = running["backend_port"].as_u64().unwrap() as u16;
    let (status, page) = request(backend, "GET", "/", None, &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("hubtest"));

    let (status, stack) = hub.get(&format!("/api/orchestration/{id}/status")).await;
    assert_eq!(status, 200);
    assert_eq!(stack["services"].as_array().unwrap().len(), 4);
    let (status, logs) = hub
        .get(&format!("/api/orchestration/{id}/logs/cache?lines=20"))
        .await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["service"], "cache");
    assert!(logs["lines"].as_u64().unwrap() > 0);
    let (status, _) = hub
        .get(&format!("/api/v1/projects/{id}/logs/cache?tail=5"))
        .await;
    assert_eq!(status, 200);

    let (status, accepted) = hub
        .post(&format!("/api/orchestration/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    let done = hub.wait_task(accepted["task_id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    let (_, stopped) = hub.get(&format!("/api/projects/{id}")).await;
    assert_eq!(stopped["status"], "stopped");

    let (status, _) = hub
        .call(
            "DELETE",
            &format!("/api/projects/{id}?delete_data=true"),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_progress_in_order_and_resumes_with_last_event_id() {
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(&dir.path().join("state"), &[]).await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let project = hub.project(dir.path(), &format!("sse-{tag}"), "").await;
    let id = project["id"].as_i64().unwrap();

    let mut all = Sse::open(hub.port, "/api/events", None).await;
    let (_, accepted) = hub
        .post(&format!("/api/orchestration/{id}/start"), json!({}))
        .await;
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();

    let mut events = Vec::new();
    while let Some(event) = all.next().await {
        if event.data["task_id"] == task_id.as_str() {
            let done = event.data["ready"] == true;
            events.push(event);
            if done {
                break;
            }
        }
    }
    let states: Vec<&str> = events
        .iter()
        .map(|e| e.data["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"PENDING"), "{states:?}");
    assert_eq!(states.last(), Some(&"SUCCESS"), "{states:?}");
    assert!(states.len() >= 4, "{states:?}");
    let seqs: Vec<u64> = events.iter().map(|e| e.id.unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    let progress: Vec<u64> = events
        .iter()
        .map(|e| e.data["progress"].as_u64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[1] >= w[0]), "{progress:?}");

    // A client that saw the first two events resumes: it gets the rest, then `end`.
    let mut resumed = Sse::open(
        hub.port,
        &format!("/api/tasks/{task_id}/events"),
        Some(seqs[1]),
    )
    .await;
    let mut rest = Vec::new();
    while let Some(event) = resumed.next().await {
        if event.event == "end" {
            assert_eq!(event.data["state"], "SUCCESS");
            break;
        }
        rest.push(event.id.unwrap());
    }
    assert_eq!(rest, seqs[2..].to_vec());

    // A fresh subscriber to a finished task gets its final state and `end` at once.
    let mut late = Sse::open(hub.port, &format!("/api/tasks/{task_id}/events"), None).await;
    let first = late.next().await.unwrap();
    assert_eq!(first.data["state"], "SUCCESS");
    assert_eq!(late.next().await.unwrap().event, "end");
    assert!(late.next().await.is_none(), "the stream closes after `end`");

    let (_, accepted) = hub
        .post(&format!("/api/orchestration/{id}/stop"), json!({}))
        .await;
    hub.wait_task(accepted["task_id"].as_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_start_can_be_revoked() {
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(&dir.path().join("state"), &[]).await;
    let stack = NEVER_HEALTHY;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let project = hub
        .project(dir.path(), &format!("revoke-{tag}"), stack)
        .await;
    let id = project["id"].as_i64().unwrap();
    let (_, accepted) = hub
        .post(&format!("/api/orchestration/{id}/start"), json!({}))
        .await;
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();

    let mut task_events = Sse::open(hub.port, &format!("/api/tasks/{task_id}/events"), None).await;
    while let Some(event) = task_events.next().await {
        if event.data["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("Waiting"))
        {
            break;
        }
    }
    // A second operation meanwhile is a conflict.
    let (status, body) = hub
        .post(&format!("/api/orchestration/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    let (status, body) = hub
        .post(
            &format!("/api/tasks/{task_id}/revoke?terminate=true"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = hub.wait_task(&task_id).await;
    assert_eq!(done["state"], "REVOKED");
    let (_, project) = hub.get(&format!("/api/projects/{id}")).await;
    assert_eq!(project["status"], "stopped");
    // DELETE on a finished task leaves it as it is.
    let (status, body) = hub
        .call("DELETE", &format!("/api/tasks/{task_id}"), None)
        .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("REVOKED")));
}

/// A client that hangs up does not cut a delete short: a delete of a running four-service
/// project whose connection closes 100 ms in still removes every container and then the
/// project, and so it does when the server is told to stop right after the hang-up (the hub
/// waits for it before it closes). Dropped with its connection, the delete stopped wherever
/// it was: some containers gone, the project still registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_does_not_cut_a_change_short() {
    let dir = TempDir::new().unwrap();
    let mut hub = HubProcess::start(&dir.path().join("state"), &[]).await;

    let (id, slug) = delete_and_hang_up(&hub, dir.path(), "hangup").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while hub.get(&format!("/api/projects/{id}")).await.0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the project is still registered 60 s after its delete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_no_containers(&slug);

    // SIGTERM at once: the hub waits for the delete before it closes.
    let (id, slug) = delete_and_hang_up(&hub, dir.path(), "hangup-stop").await;
    hub.restart().await;
    assert_eq!(hub.get(&format!("/api/projects/{id}")).await.0, 404);
    assert_no_containers(&slug);
}

/// Registers and starts a four-service project, then sends `DELETE …?delete_data=true` and
/// closes the connection 100 ms later, long before the delete can end. Returns the project's
/// id and slug.
async fn delete_and_hang_up(hub: &HubProcess, root: &std::path::Path, name: &str) -> (i64, String) {
    use tokio::io::AsyncWriteExt;
    let project = hub
        .project(root, &format!("{name}-{}", common::tag()), FOUR_SERVICES)
        .await;
    let id = project["id"].as_i64().unwrap();
    let done = hub.wait_task(&common::start(hub, id).await).await;
    assert_eq!(done["state"], "SUCCESS", "{done}");
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", hub.port))
        .await
        .unwrap();
    let head = format!("DELETE /api/projects/{id}?delete_data=true HTTP/1.1\r\nHost: x\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);
    (id, project["slug"].as_str().unwrap().to_owned())
}

fn assert_no_containers(slug: &str) {
    let label = format!("label=com.docker.compose.project=hub-{slug}");
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &label])
        .output()
        .unwrap();
    assert!(left.status.success());
    assert!(
        left.stdout.is_empty(),
        "containers of {slug} left: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_and_json_body_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(
        &dir.path().join("state"),
        &["--docker-host", "unix:///nonexistent/docker.sock"],
    )
    .await;
    let folder = dir.path().join("alpha");
    std::fs::create_dir_all(&folder).unwrap();
    let (status, alpha) = hub
        .post("/api/projects", json!({"name": "Alpha", "path": folder}))
        .await;
    assert_eq!(status, 201);

    let expect = |status: u16, body: &Value, want: u16, code: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    };
    let (s, b) = hub.get("/api/projects/999").await;
    expect(s, &b, 404, "not_found");
    let (s, b) = hub.get("/api/projects/no-such-slug").await;
    expect(s, &b, 404, "not_found");
    for task in [uuid::Uuid::new_v4().to_string(), "not-a-task".to_string()] {
        let (s, b) = hub.get(&format!("/api/tasks/{task}/status")).await;
        expect(s, &b, 404, "not_found");
        let (s, b) = hub.get(&format!("/api/task-status/{task}")).await;
        expect(s, &b, 404, "not_found");
        let (s, b) = hub
            .post(&format!("/api/tasks/{task}/revoke"), json!({}))
            .await;
        expect(s, &b, 404, "not_found");
    }
    let (s, b) = hub.post("/api/projects", json!({"path": folder})).await;
    expect(s, &b, 422, "invalid_input");
    assert_eq!(b["error"]["field"], "name");
    let (s, b) = hub
        .post("/api/projects", json!({"name": 5, "path": folder}))
        .await;
    expect(s, &b, 422, "invalid_input");
    let (s, b) = hub
        .post(
            "/api/projects",
            json!({"name": "Rel", "path": "relative/dir"}),
        )
        .await;
    expect(s, &b, 422, "invalid_input");
    assert_eq!(b["error"]["field"], "path");
    let (s, b) = hub
        .post(
            "/api/projects",
            json!({"name": "Alpha", "path": dir.path()}),
        )
        .await;
    expect(s, &b, 409, "already_exists");
    assert_eq!(b["error"]["field"], "name");
    let (s, b) = hub
        .post(
            "/api/projects",
            json!({"name": "Clash", "path": dir.path(), "ports": {"backend": alpha["backend_port"]}}),
        )
        .await;
    expect(s, &b, 409, "port_conflict");
    let (s, b) = hub
        .call("PATCH", "/api/projects/1", Some(json!({"name": ""})))
        .await;
    expect(s, &b, 422, "invalid_input");
    let (s, b) = hub.get("/api/tasks?limit=-1").await;
    expect(s, &b, 422, "invalid_input");
    let (s, b) = hub.get("/api/tasks?state=DONE").await;
    expect(s, &b, 422, "invalid_input");

    let (s, text) = request(hub.port, "POST", "/api/projects", Some("{not json"), &[])
        .await
        .unwrap();
    let b: Value = serde_json::from_str(&text).unwrap();
    expect(s, &b, 400, "malformed_json");
    let huge = format!(
        "{{\"name\": \"{}\", \"path\": \"/\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let (s, text) = request(hub.port, "POST", "/api/projects", Some(&huge), &[])
        .await
        .unwrap();
    assert_eq!(s, 413, "{text}");

    // Docker unreachable: operations on the engine are 503, the registry still serves.
    let (s, b) = hub
        .get(&format!("/api/orchestration/{}/status", alpha["id"]))
        .await;
    expect(s, &b, 503, "runtime_unavailable");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/docker.sock")
    );
    let (s, health) = hub.get("/health").await;
    assert_eq!(s, 200);
    assert_eq!(health["status"], "healthy");
    assert!(
        health["docker"].as_str().unwrap().contains("nonexistent"),
        "{health}"
    );
    // A start is refused at submission, not accepted and failed: the project is untouched
    // and no task exists.
    for action in ["start", "restart", "stop"] {
        let (s, b) = hub
            .post(
                &format!("/api/orchestration/{}/{action}", alpha["id"]),
                json!({}),
            )
            .await;
        expect(s, &b, 503, "runtime_unavailable");
    }
    let (_, project) = hub.get(&format!("/api/projects/{}", alpha["id"])).await;
    assert_eq!(project["status"], "stopped", "{project}");
    let (_, tasks) = hub.get("/api/tasks").await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(0), "{tasks}");

    // Nothing above changed the registry.
    let (_, list) = hub.get("/api/projects").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, stats) = hub.get("/api/projects/stats").await;
    assert_eq!(stats["total_projects"], 1);
    // Trailing slashes work, unknown routes are JSON 404s.
    assert_eq!(hub.get("/api/projects/").await.0, 200);
    let (s, b) = hub.get("/api/nothing-here").await;
    expect(s, &b, 404, "not_found");
}

/// Raw HTTP/1.0 with a head written by hand (a path that is not UTF-8, another method, a
/// content type), the JSON body parsed; with the response headers.
async fn raw(port: u16, head: &str, body: &str) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, headers.to_ascii_lowercase(), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_names_its_field_and_carries_detail() {
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(&dir.path().join("state"), &[]).await;
    let folder = dir.path().join("alpha");
    std::fs::create_dir_all(&folder).unwrap();
    let port = hub.port;

    // A path parameter that is not UTF-8: 400 in the JSON shape.
    let (status, _, body) = raw(port, "GET /api/projects/%FF HTTP/1.0\r\nHost: x", "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    // A wrong method: 405 in the JSON shape, with Allow.
    for (method, path) in [
        ("PUT", "/api/projects"),
        ("GET", "/api/orchestration/1/start"),
    ] {
        let (status, headers, body) =
            raw(port, &format!("{method} {path} HTTP/1.0\r\nHost: x"), "").await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert!(headers.contains("\r\nallow: "), "{headers}");
    }
    // `field` names the field, never the value.
    let cases = [
        (json!({"name": 123, "path": folder}), "name"),
        (json!({"name": "A", "path": true}), "path"),
        (
            json!({"name": "A", "path": folder, "ports": {"backend": 70000}}),
            "ports.backend",
        ),
        (
            json!({"name": "A", "path": folder, "ports": {"backend_port": 9555}}),
            "ports.backend_port",
        ),
        (
            json!({"name": "A", "path": folder, "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = hub.post("/api/projects", body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    let (status, answer) = hub
        .call("DELETE", "/api/projects/1?delete_data=maybe", None)
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "delete_data");
    let (status, _, answer) = raw(
        port,
        "POST /api/projects HTTP/1.0\r\nHost: x\r\nContent-Type: text/plain",
        "{}",
    )
    .await;
    assert_eq!(status, 415);
    assert!(answer["error"].get("field").is_none(), "{answer}");
    // Every error carries `detail`, as the original's (FastAPI) clients read it.
    let (status, _) = hub
        .post("/api/projects", json!({"name": "Alpha", "path": folder}))
        .await;
    assert_eq!(status, 201);
    let (status, answer) = hub
        .post("/api/projects", json!({"name": "Alpha", "path": folder}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(answer["detail"], answer["error"]["message"]);
    assert!(
        answer["detail"].as_str().unwrap().contains("Alpha"),
        "{answer}"
    );
    let (_, answer) = hub.get("/api/nothing-here").await;
    assert_eq!(answer["detail"], "no such route");
    // None of it registered anything.
    let (_, list) = hub.get("/api/projects").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_browser_stays_inside_its_roots() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("projects");
    for sub in ["beta", "Alpha", ".hidden", "gamma/inner"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::write(root.join("notes.txt"), "x").unwrap();
    std::fs::create_dir_all(dir.path().join("secret")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
    let hub = HubProcess::start(
        &dir.path().join("state"),
        &["--browse-root", root.to_str().unwrap()],
    )
    .await;
    let root = std::fs::canonicalize(&root).unwrap();

    let (status, home) = hub.get("/api/filesystem/home").await;
    assert_eq!(status, 200);
    assert_eq!(home["path"], root.to_str().unwrap());
    let (status, listing) = hub.get("/api/filesystem/browse").await;
    assert_eq!(status, 200);
    assert_eq!(listing["currentPath"], root.to_str().unwrap());
    let names: Vec<&str> = listing["directories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Alpha", "beta", "gamma"]);
    let gamma = root.join("gamma");
    let (status, inner) = hub
        .get(&format!("/api/filesystem/browse?path={}", gamma.display()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(inner["parent"], root.to_str().unwrap());

    for outside in [
        dir.path().join("secret"),
        root.join("escape"),
        root.join(".."),
        PathBuf::from("/etc"),
    ] {
        let (status, body) = hub
            .get(&format!(
                "/api/filesystem/browse?path={}",
                outside.display()
            ))
            .await;
        assert_eq!(status, 403, "{} → {body}", outside.display());
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = hub
        .get(&format!(
            "/api/filesystem/browse?path={}",
            root.join("missing").display()
        ))
        .await;
    assert_eq!(status, 404);
    let (status, _) = hub
        .get(&format!(
            "/api/filesystem/browse?path={}",
            root.join("notes.txt").display()
        ))
        .await;
    assert_eq!(status, 400);
}

/// An engine at a Unix socket `socket` that accepts connections, reads, and never answers;
/// its address, and the task holding it (abort it to hang up).
fn hung_engine(socket: &std::path::Path) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (format!("unix://{}", socket.display()), silent)
}

/// An engine that accepts connections and never answers: `/health` still answers at once
/// (from the background probe's last findings), and soon names the engine as not answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_never_waits_on_a_hung_engine() {
    let dir = TempDir::new().unwrap();
    let (address, silent) = hung_engine(&dir.path().join("hung.sock"));
    let hub = HubProcess::start(&dir.path().join("state"), &["--docker-host", &address]).await;
    let mut slowest = std::time::Duration::ZERO;
    let mut docker = String::new();
    for _ in 0..20 {
        let began = std::time::Instant::now();
        let (status, health) = hub.get("/health").await;
        slowest = slowest.max(began.elapsed());
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["database"], "ok");
        docker = health["docker"].as_str().unwrap().to_owned();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The engine's own timeout is 5 s; an answer within one second cannot have waited on it.
    assert!(
        slowest < std::time::Duration::from_secs(1),
        "slowest /health: {slowest:?}"
    );
    assert!(
        docker.contains("did not answer") || docker.contains("no answer"),
        "{docker}"
    );
    silent.abort();
}

/// A signal that comes while the process is still opening, its workers already running (its
/// first health round waits seconds on an engine that accepts and never answers): `hub worker`
/// (SIGTERM) and `hub serve` (SIGINT) keep it and stop cleanly once open, exit code 0, instead
/// of dying by the signal's default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_opening_stops_the_process_cleanly() {
    let dir = TempDir::new().unwrap();
    let (address, silent) = hung_engine(&dir.path().join("hung.sock"));
    let state = dir.path().join("state");
    let port = common::free_port().to_string();
    for (command, extra, signal) in [
        ("worker", vec![], "TERM"),
        ("serve", vec!["--bind", &format!("127.0.0.1:{port}")], "INT"),
    ] {
        let log = dir.path().join(format!("{command}.log"));
        let mut child = common::Process::new(
            std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
                .arg(command)
                .args(["--data-dir", state.to_str().unwrap()])
                .args(["--docker-host", &address])
                .args(&extra)
                .env("HUB_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !read_log().contains("hub opened") {
            assert!(
                std::time::Instant::now() < deadline,
                "{command}: not opened within 30 s: {}",
                read_log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Its first health round is waiting on the engine now.
        common::send_signal(&child, signal);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{command}: still running 30 s after SIG{signal}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let log = read_log();
        assert!(
            status.success(),
            "{command}: SIG{signal} while opening gave {status}: {log}"
        );
        assert!(log.contains("shutting down"), "{command}: {log}");
    }
    silent.abort();
}

/// Slow clients: silent and half-sent connections are closed after the header timeout, a
/// stalled body after the idle timeout, and `/health` answers meanwhile; past the connection
/// cap, a new client gets an immediate 503 in the JSON error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_timed_out_and_connections_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(
        &dir.path().join("state"),
        &[
            "--header-timeout",
            "1",
            "--idle-timeout",
            "2",
            "--max-connections",
            "450",
        ],
    )
    .await;
    let mut attackers = Vec::new();
    for i in 0..400 {
        let mut stream = TcpStream::connect(("127.0.0.1", hub.port)).await.unwrap();
        if i % 2 == 1 {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        attackers.push(stream);
    }
    let mut stalled = TcpStream::connect(("127.0.0.1", hub.port)).await.unwrap();
    stalled
        .write_all(
            b"POST /api/projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let began = std::time::Instant::now();
    let (status, _) = hub.get("/health").await;
    assert_eq!(status, 200);
    assert!(
        began.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );

    // Every attacker is hung up on (EOF, or a reset) well before a minute.
    let closed = |mut stream: TcpStream| async move {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    };
    let results = futures_util::future::join_all(attackers.into_iter().map(closed)).await;
    assert!(
        results.iter().all(|c| *c),
        "{} left open",
        results.iter().filter(|c| !**c).count()
    );
    assert!(
        closed(stalled).await,
        "a stalled body is closed after the idle timeout"
    );

    // A quiet answer in progress is not idleness: an event stream outlives the idle timeout.
    let mut events = TcpStream::connect(("127.0.0.1", hub.port)).await.unwrap();
    events
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = events.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains(" 200 "));
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), events.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0, "the event stream was cut by the idle timeout");

    // The cap: with every permit taken, a new client hears 503 at once.
    let capped = HubProcess::start(&dir.path().join("capped"), &["--max-connections", "3"]).await;
    // Hold every permit. The readiness probe's own connection may still hold one for a moment,
    // so a held connection that was refused (it reads a 503 and EOF) is opened again until all
    // three are in.
    let mut held: Vec<TcpStream> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        while held.len() < 3 {
            held.push(
                TcpStream::connect(("127.0.0.1", capped.port))
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut probe = [0u8; 1];
        held.retain(|stream| {
            matches!(stream.try_read(&mut probe), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
        });
        if held.len() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "could not hold every permit"
        );
    }
    let (status, text) = request(capped.port, "GET", "/health", None, &[])
        .await
        .unwrap();
    assert_eq!(status, 503, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    drop(held);
}

/// Event streams whose clients hang up release their subscription within seconds, with no
/// task activity to notice it by: nothing is left behind, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_event_streams_are_released_without_waiting_for_an_event() {
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(&dir.path().join("state"), &[]).await;
    let subscribers = || async {
        let (status, stats) = hub.get("/api/monitoring").await;
        assert_eq!(status, 200, "{stats}");
        stats["subscribers"].as_u64().unwrap()
    };
    let baseline = subscribers().await;
    for round in 0..2 {
        let mut streams = Vec::new();
        for _ in 0..100 {
            streams.push(Sse::open(hub.port, "/api/events", None).await);
        }
        assert!(
            subscribers().await >= baseline + 100,
            "round {round}: streams not counted"
        );
        drop(streams);
        let mut now = u64::MAX;
        for _ in 0..150 {
            now = subscribers().await;
            if now <= baseline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            now <= baseline,
            "round {round}: {now} subscriptions left, baseline {baseline}"
        );
    }
}

/// Input that reaches the log cannot forge a line: control characters in logged values are
/// escaped, and with stderr not a terminal there is no colour code at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_input_cannot_forge_log_lines() {
    let dir = TempDir::new().unwrap();
    let log = dir.path().join("hub.log");
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", dir.path().join("state").to_str().unwrap()])
        .args(["--docker-host", "unix:///nonexistent/docker.sock"])
        .env("HUB_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if request(port, "GET", "/health", None, &[]).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let forged = "\nINFO hub: FORGED \u{1b}[31mred";
    let folder = dir.path().join("ok");
    std::fs::create_dir_all(&folder).unwrap();
    let bodies = [
        json!({"name": format!("n{forged}"), "path": format!("/p{forged}")}),
        json!({"name": format!("n{forged}"), "path": folder}),
        json!({"name": "fine", "path": format!("{}{forged}", folder.display())}),
    ];
    for body in bodies {
        let text = body.to_string();
        request(port, "POST", "/api/projects", Some(&text), &[])
            .await
            .unwrap();
    }
    for path in [
        "/api/projects/x%0AINFO%20hub:%20FORGED",
        "/api/filesystem/browse?path=/x%0AINFO%20hub:%20FORGED%1B[31m",
        "/api/orchestration/x%0AINFO%20hub:%20FORGED/start",
    ] {
        request(port, "GET", path, None, &[]).await.unwrap();
    }
    common::send_signal(&child, "TERM");
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("FORGED"),
        "the input reached the log (else this proves nothing)"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no escape code in a log that is not a terminal"
    );
    for line in text.lines() {
        let stamped = line.len() > 20 && line[..4].bytes().all(|b| b.is_ascii_digit());
        assert!(stamped, "a line that is not the hub's own: {line:?}");
    }
}

/// Hostile paths: outside the roots every answer is the same 403, existing or not; inside, a
/// bad path is a 4xx in the JSON error shape, never a 500. Projects must lie inside the roots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_get_4xx_and_reveal_nothing_outside_the_roots() {
    let dir = TempDir::new().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let root = base.join("projects");
    std::fs::create_dir_all(root.join("ok")).unwrap();
    std::fs::write(root.join("notes.txt"), "x").unwrap();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secretfile"), "x").unwrap();
    let hub = HubProcess::start(
        &base.join("state"),
        &["--browse-root", root.to_str().unwrap()],
    )
    .await;
    let browse = |path: String| {
        let hub = &hub;
        async move {
            hub.get(&format!("/api/filesystem/browse?path={path}"))
                .await
        }
    };
    let r = root.display();
    let o = outside.display();
    let mut forbidden = Vec::new();
    for path in [
        format!("{r}/../../../../../../etc/shadow"),
        format!("{r}/../../../../../../etc/shadowX"),
        format!("{o}/secretfile/x"),
        format!("{o}/nofile/x"),
        format!("{o}/secretfile"),
        format!("{o}/nofile"),
    ] {
        let (status, body) = browse(path.clone()).await;
        assert_eq!(status, 403, "{path} → {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{path}");
        forbidden.push(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .replace(&path, "P"),
        );
    }
    forbidden.dedup();
    assert_eq!(forbidden.len(), 1, "outside answers differ: {forbidden:?}");

    for path in [
        format!("{r}/loop-a"),
        format!("{r}/loop-a/x"),
        format!("{r}/notes.txt/x"),
        format!("{r}%00"),
        format!("{r}/{}", "a/".repeat(2500)),
        format!("{r}/{}", "a".repeat(300)),
    ] {
        let (status, body) = browse(path.clone()).await;
        assert!(
            (400..500).contains(&status),
            "{:.60} → {status} {body}",
            path
        );
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["detail"].is_string(), "{body}");
    }

    // Project folders: inside the roots only.
    for path in ["/", "/etc", outside.to_str().unwrap()] {
        let (status, body) = hub
            .post("/api/projects/", json!({"name": "Escape", "path": path}))
            .await;
        assert_eq!(status, 422, "{path} → {body}");
        assert_eq!(body["error"]["field"], "path");
    }
    let (status, body) = hub
        .post(
            "/api/projects/",
            json!({"name": "Inside", "path": root.join("ok")}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_health() {
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(&dir.path().join("state"), &["--token", "s3cret"]).await;
    let port = hub.port;
    assert_eq!(
        request(port, "GET", "/health", None, &[]).await.unwrap().0,
        200
    );
    for path in ["/", "/api/projects", "/openapi.json", "/api/tasks"] {
        let (status, body) = request(port, "GET", path, None, &[]).await.unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("unauthorized"));
        let (status, _) = request(
            port,
            "GET",
            path,
            None,
            &[("Authorization", "Bearer wrong")],
        )
        .await
        .unwrap();
        assert_eq!(status, 401);
        let (status, _) = request(
            port,
            "GET",
            path,
            None,
            &[("Authorization", "Bearer s3cret")],
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{path}");
    }
    // The scheme is case-insensitive.
    let (status, _) = request(
        port,
        "GET",
        "/api/projects",
        None,
        &[("Authorization", "bearer s3cret")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "a lower-case scheme");
    // A token in the URL only opens the event streams (an EventSource sends no headers), and
    // it is percent-decoded there.
    let (status, body) = request(port, "GET", "/api/projects?access_token=s3cret", None, &[])
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        Sse::open(port, "/api/events?access_token=s3cr%65t", None),
    )
    .await;
    assert!(stream.is_ok(), "the event stream takes ?access_token=");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_keeps_projects_and_task_history() {
    let dir = TempDir::new().unwrap();
    let mut hub = HubProcess::start(&dir.path().join("state"), &[]).await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let project = hub.project(dir.path(), &format!("keep-{tag}"), "").await;
    let id = project["id"].as_i64().unwrap();
    let (_, accepted) = hub
        .post(&format!("/api/orchestration/{id}/start"), json!({}))
        .await;
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();
    assert_eq!(hub.wait_task(&task_id).await["state"], "SUCCESS");

    hub.restart().await;

    let (status, again) = hub.get(&format!("/api/projects/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(again["slug"], project["slug"]);
    assert_eq!(again["backend_port"], project["backend_port"]);
    let (status, task) = hub.get(&format!("/api/tasks/{task_id}/status")).await;
    assert_eq!(status, 200);
    assert_eq!(task["state"], "SUCCESS");
    let (_, history) = hub
        .get(&format!("/api/tasks?project_id={id}&state=SUCCESS"))
        .await;
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_id"] == task_id.as_str())
    );
    let (_, accepted) = hub
        .post(&format!("/api/orchestration/{id}/stop"), json!({}))
        .await;
    hub.wait_task(accepted["task_id"].as_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_the_routes_and_cors_is_off_unless_allowed() {
    let dir = TempDir::new().unwrap();
    let hub = HubProcess::start(
        &dir.path().join("state"),
        &["--cors-origin", "http://dashboard.local"],
    )
    .await;
    let (status, spec) = hub.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/api/projects",
        "/api/projects/{id}",
        "/api/orchestration/{id}/start",
        "/api/tasks/{task_id}/status",
        "/api/task-status/{task_id}",
        "/api/tasks/{task_id}/events",
        "/api/events",
        "/api/filesystem/browse",
        "/health",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the spec"
        );
    }
    let allowed = request(
        hub.port,
        "OPTIONS",
        "/api/projects",
        None,
        &[
            ("Origin", "http://dashboard.local"),
            ("Access-Control-Request-Method", "GET"),
        ],
    );
    let (status, _) = allowed.await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_at_start_naming_what_is_wrong() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("state");
    // A hub that should refuse but starts is killed after 20 s: the test fails, never hangs.
    let run = |args: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
            .args(args)
            .env("HUB_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    };
    let port = common::free_port().to_string();
    let bind = format!("127.0.0.1:{port}");
    let data = data.to_str().unwrap();
    let missing = run(&[
        "serve",
        "--bind",
        &bind,
        "--data-dir",
        data,
        "--browse-root",
        "/does-not-exist",
    ]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/does-not-exist"),
        "{missing:?}"
    );
    let bogus = run(&[
        "serve",
        "--bind",
        &bind,
        "--data-dir",
        data,
        "--docker-host",
        "bogus://x",
    ]);
    assert!(!bogus.status.success());
    assert!(
        String::from_utf8_lossy(&bogus.stderr).contains("bogus://x"),
        "{bogus:?}"
    );
    let worker = run(&["worker", "--data-dir", data, "--docker-host", "bogus://x"]);
    assert!(!worker.status.success());
    // The help is written for the user, not about the crate.
    let help = run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("project stacks side by side"), "{text}");
    assert!(!text.contains("axum"), "{text}");
}
