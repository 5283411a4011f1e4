//! Processes that open a fresh data folder at the same moment. In a file of its own: it starts
//! a dozen processes, and the timing-sensitive tests of `processes.rs` run better without them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::time::Duration;

use common::{send_signal, spawn_worker};
use tempfile::TempDir;

/// Processes that open a fresh data folder at the same moment all come up: the schema is
/// created once, under the database's write lock, never by two of them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_a_fresh_store_at_once_all_come_up() {
    for round in 0..3 {
        let dir = TempDir::new().unwrap();
        let data = dir.path().join("state");
        let mut workers: Vec<_> = (0..4)
            .map(|i| {
                let log = dir.path().join(format!("w{i}.log"));
                spawn_worker(&data, &["--worker-name", &format!("w{i}")], &log)
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for (i, worker) in workers.iter_mut().enumerate() {
            let log = std::fs::read_to_string(dir.path().join(format!("w{i}.log"))).unwrap();
            assert!(
                worker.try_wait().unwrap().is_none(),
                "round {round}: worker {i} exited: {log}"
            );
            send_signal(worker, "TERM");
            assert!(worker.wait().unwrap().success(), "worker {i}: {log}");
        }
    }
}
