//! The registry and the port allocator against real databases: every case in
//! `registry/cases.rs` runs on a SQLite file and on a PostgreSQL server, unchanged.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

mod postgres;

use std::path::Path;

use hub_core::{Hub, HubConfig};
use tempfile::TempDir;

/// The database a module of cases runs on.
#[derive(Debug, Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

mod on_sqlite {
    const DB: super::Db = super::Db::Sqlite;
    include!("registry/cases.rs");
}

mod on_postgres {
    const DB: super::Db = super::Db::Postgres;
    include!("registry/cases.rs");
}

// What only the SQLite file has.

#[tokio::test]
async fn database_file_and_its_folder_are_created_on_first_use() {
    let data = TempDir::new().unwrap();
    Hub::open(HubConfig::with_data_dir(data.path().join("state")))
        .await
        .unwrap();
    assert!(data.path().join("state").join("hub.db").is_file());
}

#[tokio::test]
async fn an_unusable_database_location_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let err = Hub::open(HubConfig::with_data_dir(Path::new(&blocker).join("state")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot create database folder"),
        "{err}"
    );

    let err = Hub::open(HubConfig::with_data_dir(dir.path()).database_url("mysql://x"))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("database_url"));
}

#[tokio::test]
async fn an_unreachable_postgres_server_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Hub::open(
        HubConfig::with_data_dir(dir.path())
            .database_url(format!("postgres://hub:secret@127.0.0.1:{port}/hub")),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("cannot open database"), "{message}");
    assert!(
        !message.contains("secret"),
        "the password leaked: {message}"
    );
}

/// A registry written before ports were kept per host (schema 0006) upgrades in place: each
/// lease takes its project's host, and the ports stay held.
#[tokio::test]
async fn a_registry_from_before_ports_per_host_keeps_its_leases() {
    use sqlx::Connection;

    let data = TempDir::new().unwrap();
    let projects = TempDir::new().unwrap();
    let folder = projects.path().join("old");
    std::fs::create_dir_all(&folder).unwrap();
    let state = data.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let url = hub_core::db::Database::sqlite_url(&state.join("hub.db"));
    {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mut migrator = sqlx::migrate::Migrator::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"),
        )
        .await
        .unwrap();
        let before: Vec<_> = migrator
            .migrations
            .iter()
            .filter(|m| m.version <= 6)
            .cloned()
            .collect();
        migrator.migrations = before.into();
        migrator.run(&mut conn).await.unwrap();
        sqlx::query(
            "INSERT INTO projects (id, name, slug, path, backend_port, frontend_port, \
             postgres_port, redis_port, created_at, updated_at, host) \
             VALUES (1, 'Old', 'old', $1, 8010, 3010, 5442, 6389, 0, 0, 'gpu-box')",
        )
        .bind(folder.canonicalize().unwrap().to_str().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
        for (port, role) in [
            (8010, "backend"),
            (3010, "frontend"),
            (5442, "postgres"),
            (6389, "redis"),
        ] {
            sqlx::query("INSERT INTO port_leases (port, project_id, role) VALUES ($1, 1, $2)")
                .bind(port)
                .bind(role)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    let hub = Hub::open(HubConfig {
        reconcile_on_open: false,
        ..HubConfig::with_data_dir(&state).project_roots([projects.path()])
    })
    .await
    .unwrap();
    let old = hub.project(1).await.unwrap();
    assert_eq!((old.host.as_str(), old.ports.backend), ("gpu-box", 8010));
    // Held on gpu-box: a new project there gets the next set, one on this host the first.
    let mut there = hub_core::NewProject::new("There", projects.path().join("there"));
    std::fs::create_dir_all(projects.path().join("there")).unwrap();
    there.host = Some("gpu-box".into());
    assert_eq!(hub.create_project(there).await.unwrap().ports.backend, 8020);
    std::fs::create_dir_all(projects.path().join("here")).unwrap();
    let here = hub_core::NewProject::new("Here", projects.path().join("here"));
    assert_eq!(hub.create_project(here).await.unwrap().ports.backend, 8010);
}
