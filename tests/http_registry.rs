//! Cross-crate: the HTTP service over a hub on a real SQLite file, through a real socket.

#![allow(clippy::unwrap_used)]

use hub_core::{Hub, HubConfig, NewProject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `hub`'s HTTP API on a free loopback port; returns its address.
async fn serve(hub: Hub) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hub_http::router(hub)).await });
    addr
}

/// A GET over a fresh connection: status, header lines (lowercase) and body, its chunks
/// joined when it came chunked.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<String>, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let (head, mut raw) = response.split_once("\r\n\r\n").unwrap();
    let headers: Vec<String> = head.lines().skip(1).map(str::to_ascii_lowercase).collect();
    if !headers.iter().any(|h| h == "transfer-encoding: chunked") {
        return (status, headers, raw.to_owned());
    }
    let mut body = String::new();
    loop {
        let (size, rest) = raw.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            return (status, headers, body);
        }
        body.push_str(&rest[..size]);
        raw = &rest[size + 2..];
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = fetch(addr, path).await;
    (status, serde_json::from_str(&body).unwrap())
}

/// The `X-Total-Count` header of a GET.
async fn total_count(addr: std::net::SocketAddr, path: &str) -> String {
    let (_, headers, _) = fetch(addr, path).await;
    headers
        .iter()
        .find_map(|h| h.strip_prefix("x-total-count: ").map(str::to_owned))
        .unwrap()
}

#[tokio::test]
async fn projects_registered_in_rust_are_served_over_http() {
    let dir = tempfile::TempDir::new().unwrap();
    let folder = dir.path().join("alpha");
    std::fs::create_dir_all(&folder).unwrap();
    let hub =
        Hub::open(HubConfig::with_data_dir(dir.path().join("state")).project_roots([dir.path()]))
            .await
            .unwrap();
    let alpha = hub
        .create_project(NewProject::new("Alpha", &folder))
        .await
        .unwrap();

    let addr = serve(hub).await;

    let (status, health) = get(addr, "/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));

    let (status, list) = get(addr, "/api/projects").await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["slug"], "alpha");
    assert_eq!(list[0]["backend_port"], alpha.ports.backend);

    let (status, err) = get(addr, "/api/projects/999").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
}

#[tokio::test]
async fn monitor_routes_answer_and_name_the_field_of_bad_input() {
    let dir = tempfile::TempDir::new().unwrap();
    let folder = dir.path().join("beta");
    std::fs::create_dir_all(&folder).unwrap();
    let mut config = HubConfig::with_data_dir(dir.path().join("state")).project_roots([dir.path()]);
    config.reconcile_on_open = false;
    let hub = Hub::open(config).await.unwrap();
    hub.create_project(NewProject::new("Beta", &folder))
        .await
        .unwrap();
    let addr = serve(hub).await;

    for path in [
        "/api/monitor",
        "/api/monitor/workers",
        "/api/monitor/queues",
        "/api/monitor/tasks?state=failure,SUCCESS&sort=started&order=asc&q=x&project=beta",
        "/api/monitor/stats?window=90",
        "/api/monitor/alerts",
    ] {
        let (status, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, page) = get(addr, "/api/monitor/tasks?project=beta").await;
    assert_eq!(
        (page["total"].as_u64(), page["limit"].as_u64()),
        (Some(0), Some(100))
    );
    let (_, stats) = get(addr, "/api/monitor/stats?window=15m").await;
    assert_eq!(stats["window_seconds"], 900.0);
    assert_eq!(stats["minutes"].as_array().unwrap().len(), 16);

    for (path, field) in [
        ("/api/monitor/tasks?sort=fastest", "sort"),
        ("/api/monitor/tasks?order=up", "order"),
        ("/api/monitor/tasks?state=DONE", "state"),
        ("/api/monitor/tasks?limit=0", "limit"),
        ("/api/monitor/stats?window=2d", "window"),
        ("/api/monitor/stats?window=soon", "window"),
    ] {
        let (status, body) = get(addr, path).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    let long = "x".repeat(201);
    let (status, body) = get(addr, &format!("/api/monitor/tasks?q={long}")).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("q")));
    let (status, body) = get(addr, "/api/monitor/tasks?project=nobody").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = get(
        addr,
        "/api/monitor/tasks/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_project_list_pages_with_a_total_and_stays_whole_without_paging() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = HubConfig::with_data_dir(dir.path().join("state")).project_roots([dir.path()]);
    config.reconcile_on_open = false;
    let hub = Hub::open(config).await.unwrap();
    for name in ["one", "two", "three"] {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        hub.create_project(NewProject::new(name, &folder))
            .await
            .unwrap();
    }
    let addr = serve(hub).await;

    let (status, all) = get(addr, "/api/projects").await;
    assert_eq!((status, all.as_array().unwrap().len()), (200, 3));
    assert_eq!(total_count(addr, "/api/projects").await, "3");
    let (_, page) = get(addr, "/api/projects?limit=2&offset=1").await;
    let names: Vec<_> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, ["two", "three"]);
    assert_eq!(
        total_count(addr, "/api/projects?limit=2&offset=1").await,
        "3"
    );
    let (_, past) = get(addr, "/api/projects?offset=5").await;
    assert_eq!(past, serde_json::json!([]));
    for bad in ["/api/projects?limit=0", "/api/projects?limit=1001"] {
        let (status, body) = get(addr, bad).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("limit")),
            "{bad}"
        );
    }
}

/// The whole list is streamed a registry chunk at a time: past a chunk it is still one JSON
/// array, every project once in id order, with its total; an empty registry is `[]`.
#[tokio::test]
async fn the_whole_list_streams_past_a_chunk_as_one_array() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = HubConfig::with_data_dir(dir.path().join("state")).project_roots([dir.path()]);
    config.reconcile_on_open = false;
    let hub = Hub::open(config).await.unwrap();
    let addr = serve(hub.clone()).await;
    assert_eq!(
        get(addr, "/api/projects").await,
        (200, serde_json::json!([]))
    );
    assert_eq!(total_count(addr, "/api/projects").await, "0");

    let count = hub_core::registry::LIST_CHUNK + 5;
    let mut created = Vec::new();
    for i in 0..count {
        let folder = dir.path().join(format!("p{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        let project = hub
            .create_project(NewProject::new(format!("p{i}"), &folder))
            .await
            .unwrap();
        created.push(project.id);
    }
    let (status, all) = get(addr, "/api/projects").await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, created);
    assert_eq!(total_count(addr, "/api/projects").await, count.to_string());
}
