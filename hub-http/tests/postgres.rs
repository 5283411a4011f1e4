//! Several `hub serve` processes on one PostgreSQL database, each with a data folder of its own:
//! the database alone decides who gets which port and which operation goes through.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;
#[path = "../../hub-core/tests/postgres/mod.rs"]
mod postgres;

use std::collections::HashSet;

use common::{HubProcess, request};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Two servers on one fresh database, each with its own data folder, both taking projects
/// from `root`; `extra` flags for both.
async fn two_servers(dir: &TempDir, extra: &[&str]) -> (HubProcess, HubProcess) {
    let url = postgres::database(dir.path()).await;
    let root = dir.path().join("projects");
    std::fs::create_dir_all(&root).unwrap();
    let mut args = vec![
        "--database-url",
        url.as_str(),
        "--project-root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let a = HubProcess::start(&dir.path().join("a"), &args).await;
    let b = HubProcess::start(&dir.path().join("b"), &args).await;
    (a, b)
}

async fn post(port: u16, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = request(port, "POST", path, Some(&body.to_string()), &[])
        .await
        .unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racing_creates_from_two_servers_share_no_port() {
    let dir = TempDir::new().unwrap();
    let (a, b) = two_servers(&dir, &["--no-worker"]).await;
    let mut creates = Vec::new();
    for i in 0..50 {
        let folder = dir.path().join("projects").join(format!("p{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        let port = if i % 2 == 0 { a.port } else { b.port };
        creates.push(tokio::spawn(async move {
            post(
                port,
                "/api/projects",
                json!({"name": format!("Project {i}"), "path": folder}),
            )
            .await
        }));
    }
    let mut ports = HashSet::new();
    for create in creates {
        let (status, project) = create.await.unwrap();
        assert_eq!(status, 201, "{project}");
        for role in [
            "backend_port",
            "frontend_port",
            "postgres_port",
            "redis_port",
        ] {
            let port = project[role].as_u64().unwrap();
            assert!(ports.insert(port), "port {port} handed out twice");
        }
    }
    assert_eq!(ports.len(), 200);
    // Both servers read the one registry.
    for server in [&a, &b] {
        let (status, list) = server.get("/api/projects").await;
        assert_eq!(status, 200);
        assert_eq!(list.as_array().unwrap().len(), 50);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_racing_an_operation_on_one_project_accept_exactly_one() {
    let dir = TempDir::new().unwrap();
    // No worker anywhere: the accepted operation stays queued, holding the project.
    let (a, b) = two_servers(&dir, &["--no-worker"]).await;
    let folder = dir.path().join("projects").join("alpha");
    std::fs::create_dir_all(&folder).unwrap();
    let (status, project) = a
        .post("/api/projects", json!({"name": "Alpha", "path": folder}))
        .await;
    assert_eq!(status, 201, "{project}");
    let id = project["id"].as_i64().unwrap();
    let mut racers = Vec::new();
    for i in 0..20 {
        let port = if i % 2 == 0 { a.port } else { b.port };
        let op = ["start", "stop", "restart"][i % 3];
        racers.push(tokio::spawn(async move {
            post(port, &format!("/api/orchestration/{id}/{op}"), json!({})).await
        }));
    }
    let mut accepted = Vec::new();
    for racer in racers {
        let (status, body) = racer.await.unwrap();
        match status {
            202 => accepted.push(body),
            409 => assert_eq!(body["error"]["code"], "conflict", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    // Both servers see the one operation, queued.
    let task = accepted[0]["task_id"].as_str().unwrap().to_owned();
    for server in [&a, &b] {
        let (status, body) = server.get(&format!("/api/tasks/{task}/status")).await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("PENDING")),
            "{body}"
        );
    }
}
