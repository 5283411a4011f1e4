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
