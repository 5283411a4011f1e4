//! Health reported from the background probe, against a real SQLite file.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::Duration;

use hub_core::health::ComponentState;
use hub_core::tasks::{Handlers, JobRequest, TaskContext, TaskError, TaskState};
use hub_core::{ErrorCode, Hub, HubConfig};
use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A store that refuses writes for a while (another process holds an exclusive lock): the
/// writer keeps every change and retries, `/health` says `degraded` meanwhile, a status read
/// answers with what is stored, and once the lock goes the task ends with every step it
/// reported, and health comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_is_reported_degraded_and_loses_nothing() {
    let dir = TempDir::new().unwrap();
    let mut config = HubConfig::with_data_dir(dir.path().join("state"));
    config.reconcile_on_open = false;
    let handlers = Handlers::new().register("steps", |ctx: TaskContext, _: Value| async move {
        for step in 1..=9u8 {
            ctx.progress(TaskState::Running, step * 10, format!("step {step}"))
                .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<_, TaskError>(json!({"steps": 9}))
    });
    let hub = Hub::builder(config.clone())
        .handlers(handlers)
        .open()
        .await
        .unwrap();
    assert_eq!(hub.health().status(), "healthy");
    let mut events = hub.subscribe(None).await.unwrap();
    let id = hub
        .submit(JobRequest::new("steps", json!({})))
        .await
        .unwrap();
    while hub.task(id).await.unwrap().progress < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another process takes the write lock and keeps it past the store's busy timeout, once
    // the task itself is stored: its admission is written behind the caller, and on a loaded
    // machine it was not yet stored when the lock came (the read below then found no task).
    let mut locker = sqlx::SqliteConnection::connect(&config.effective_database_url())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE id = ?")
            .bind(id.to_string())
            .fetch_one(&mut locker)
            .await
            .unwrap();
        if stored == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task was not stored within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    until("degraded", Duration::from_secs(15), || {
        matches!(hub.health().task_backend, ComponentState::Down(_))
    })
    .await;
    let report = hub.health();
    assert_eq!(report.status(), "degraded", "{report:?}");
    assert_eq!(report.database, ComponentState::Up, "reads still work");
    // The handler has returned by now (nine steps of 200 ms), but its end is not stored: a
    // read answers at once with what the store holds, never with the unstored end.
    let read = tokio::time::timeout(Duration::from_secs(5), hub.task(id))
        .await
        .expect("a status read does not wait for the locked store")
        .unwrap();
    assert!(
        !read.ready(),
        "an end reported before it was stored: {read:?}"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(locker);

    let mut progress = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap()
            .unwrap();
        if event.task.id != id {
            continue;
        }
        progress.push(event.task.progress);
        if event.task.ready() {
            assert_eq!(event.task.state, TaskState::Success);
            break;
        }
    }
    for step in 1..=9u8 {
        assert!(
            progress.contains(&(step * 10)),
            "step {step} lost: {progress:?}"
        );
    }
    until("healthy again", Duration::from_secs(15), || {
        hub.health().status() == "healthy"
    })
    .await;
    hub.close().await;
}

/// A task accepted and ended here while another process holds the store's write lock from
/// before its admission: its admission is written behind the caller, so the store has no row
/// for it yet. A status read says the store is unavailable (503 over HTTP), never that the task
/// is unknown (404: a caller would give up on a task that is about to be stored); once the lock
/// goes, the task is there with its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_not_yet_stored_behind_a_locked_store_is_unavailable_not_unknown() {
    let dir = TempDir::new().unwrap();
    let mut config = HubConfig::with_data_dir(dir.path().join("state"));
    config.reconcile_on_open = false;
    let handlers = Handlers::new().register("quick", |_: TaskContext, _: Value| async move {
        Ok::<_, TaskError>(json!({"done": true}))
    });
    let hub = Hub::builder(config.clone())
        .handlers(handlers)
        .open()
        .await
        .unwrap();
    let mut locker = sqlx::SqliteConnection::connect(&config.effective_database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();

    let id = hub
        .submit(JobRequest::new("quick", json!({})))
        .await
        .unwrap();
    // Reads answer from memory while the task runs; once it has ended here, with nothing
    // stored, they must say the store is unavailable.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let err = loop {
        let read = tokio::time::timeout(Duration::from_secs(5), hub.task(id))
            .await
            .expect("a status read does not wait for the locked store");
        match read {
            Ok(record) => {
                assert!(!record.ready(), "an end reported before it was stored");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the task did not end within 15 s: {record:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => break err,
        }
    };
    assert_eq!(err.code(), ErrorCode::BackendUnavailable, "{err}");
    assert!(err.to_string().contains(&id.to_string()), "{err}");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE id = ?")
        .bind(id.to_string())
        .fetch_one(&mut locker)
        .await
        .unwrap();
    assert_eq!(stored, 0, "the lock held the admission back");

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(locker);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let record = loop {
        match hub.task(id).await {
            Ok(record) if record.ready() => break record,
            Ok(_) | Err(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the task was not stored with its end within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(record.state, TaskState::Success);
    hub.close().await;
}
