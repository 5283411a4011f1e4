//! The Redis task backend, on a real `redis-server` (`HUB_TEST_REDIS_URL`, else one started
//! for the run on a free loopback port), printing figures:
//!
//! - enqueue latency: p50/p99 over 10,000 enqueues from a client hub, one after another
//!   (target p99 < 1 ms), with and without an exclusive key;
//! - throughput: 10,000 no-op jobs from enqueue to `SUCCESS` through Redis, submitted by 8
//!   concurrent clients, run by 2 worker hubs (each its own connections, as 2 `hub worker`
//!   processes would have) of concurrency 2, counted on the event stream (target ≥ 5,000
//!   jobs/s). Three batches.
//!
//! `cargo bench --bench redis_tasks`

#![allow(clippy::expect_used, clippy::print_stdout)] // a benchmark aborts on setup failure and reports figures

use std::time::Duration;

use hub_core::tasks::{Handlers, RedisBackendFactory, RedisSettings, TaskConfig};
use hub_core::{Hub, HubConfig, HubMode};

mod common;
use common::{
    JOBS, drain, enqueue_latencies, exclusive_job, noop, noop_job, print_latencies, run_batch,
};

/// The allocator of the `hub` binary, whose workers this stands for.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Redis for the run: the test one, or a server of our own (killed when dropped).
struct Redis {
    url: String,
    child: Option<std::process::Child>,
}

impl Redis {
    fn get() -> Redis {
        if let Ok(url) = std::env::var("HUB_TEST_REDIS_URL") {
            return Redis { url, child: None };
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis {
            url: format!("redis://127.0.0.1:{port}/0"),
            child: Some(child),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn open(dir: &std::path::Path, settings: &RedisSettings, mode: HubMode) -> Hub {
    let mut config = HubConfig::with_data_dir(dir)
        .tasks(TaskConfig {
            concurrency: 2,
            // The whole batch's events fit, so the counting subscriber never lags.
            event_buffer: 65_536,
            ..TaskConfig::default()
        })
        .mode(mode);
    config.reconcile_on_open = false;
    Hub::builder(config)
        .handlers(Handlers::new().register("noop", noop))
        .task_backend(RedisBackendFactory::new(settings.clone()))
        .open()
        .await
        .expect("open hub")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let redis = Redis::get();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let scratch = tempfile::TempDir::new().expect("temp dir");
    let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
    let settings = RedisSettings::new(redis.url.clone()).prefix(prefix);
    println!("redis task backend at {} ({})", redis.url, settings.prefix);
    runtime.block_on(async {
        let client = open(scratch.path(), &settings, HubMode::Client).await;
        // Latency first, with nobody draining the queue: the enqueue alone.
        print_latencies("enqueue", &enqueue_latencies(&client, noop_job).await);
        print_latencies(
            "enqueue_exclusive",
            &enqueue_latencies(&client, exclusive_job).await,
        );
        let workers = [
            open(scratch.path(), &settings, HubMode::Worker).await,
            open(scratch.path(), &settings, HubMode::Worker).await,
        ];
        drain(&client).await;
        let mut rates = Vec::new();
        for round in 1..=3 {
            let elapsed = run_batch(&client).await;
            let rate = JOBS as f64 / elapsed.as_secs_f64();
            println!(
                "{JOBS} no-op jobs, 2 workers x concurrency 2, batch {round}: {:.2} s, {rate:.0} jobs/s",
                elapsed.as_secs_f64()
            );
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!("median {:.0} jobs/s", rates[1]);
        for worker in workers {
            worker.close().await;
        }
        client.close().await;
    });
}
