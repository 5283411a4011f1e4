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

use std::time::{Duration, Instant};

use hub_core::tasks::{
    Handlers, JobOptions, JobRequest, RedisBackendFactory, RedisSettings, TaskConfig, TaskContext,
    TaskError, TaskState,
};
use hub_core::{Hub, HubConfig, HubMode};
use serde_json::{Value, json};

/// The allocator of the `hub` binary, whose workers this stands for.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const JOBS: u64 = 10_000;
const CLIENTS: u64 = 8;

async fn noop(_: TaskContext, _: Value) -> Result<Value, TaskError> {
    Ok(Value::Null)
}

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

async fn enqueue_latencies(client: &Hub, job: impl Fn() -> JobRequest) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(JOBS as usize);
    for _ in 0..JOBS {
        let job = job();
        let start = Instant::now();
        client.submit(job).await.expect("enqueue");
        latencies.push(start.elapsed());
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Waits until every queue is empty and nothing runs.
async fn drain(hub: &Hub) {
    loop {
        let stats = hub.task_stats().await.expect("stats");
        if stats.queues.iter().all(|q| q.pending == 0 && q.active == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn batch(client: &Hub) -> Duration {
    let mut events = client.subscribe(None).await.expect("subscribe");
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let hub = client.clone();
        clients.spawn(async move {
            for _ in 0..JOBS / CLIENTS {
                hub.submit(JobRequest::new("noop", json!({})))
                    .await
                    .expect("enqueue");
            }
        });
    }
    let mut succeeded = 0;
    while succeeded < JOBS {
        let event = events.recv().await.expect("event stream open");
        if event.task.state == TaskState::Success {
            succeeded += 1;
        }
    }
    let elapsed = start.elapsed();
    clients.join_all().await;
    assert_eq!(events.missed(), 0, "the subscriber fell behind");
    elapsed
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
        let plain = enqueue_latencies(&client, || JobRequest::new("noop", json!({}))).await;
        let exclusive = enqueue_latencies(&client, || {
            JobRequest::new("noop", json!({})).options(JobOptions {
                exclusive_key: Some(uuid::Uuid::new_v4().to_string()),
                ..JobOptions::default()
            })
        })
        .await;
        for (name, latencies) in [("enqueue", &plain), ("enqueue_exclusive", &exclusive)] {
            println!(
                "{name}: p50 {:?}, p99 {:?}, max {:?} over {JOBS}",
                percentile(latencies, 0.50),
                percentile(latencies, 0.99),
                latencies[latencies.len() - 1]
            );
        }
        let workers = [
            open(scratch.path(), &settings, HubMode::Worker).await,
            open(scratch.path(), &settings, HubMode::Worker).await,
        ];
        drain(&client).await;
        let mut rates = Vec::new();
        for round in 1..=3 {
            let elapsed = batch(&client).await;
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
