//! The task engine (in-process backend, real SQLite file):
//!
//! - `tasks/enqueue`: latency of one enqueue, plus p50/p99 over 10,000 enqueues printed after
//!   the run (target p99 < 1 ms);
//! - `tasks/enqueue_exclusive`: the same with an exclusive key (one operation per project),
//!   which waits for its commit because the database decides whether the key is free;
//! - `tasks/10k_noop_jobs_2_workers`: 10,000 no-op jobs from enqueue to `SUCCESS` with two
//!   workers, submitted by 8 concurrent clients and counted on the event stream (target ≥ 7,000
//!   jobs/s).

#![allow(clippy::expect_used, clippy::print_stdout)] // a benchmark aborts on setup failure and reports figures

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hub_core::tasks::{
    Handlers, JobOptions, JobRequest, TaskConfig, TaskContext, TaskError, TaskState,
};
use hub_core::{Hub, HubConfig};
use serde_json::{Value, json};

const JOBS: u64 = 10_000;
const CLIENTS: u64 = 8;

async fn noop(_: TaskContext, _: Value) -> Result<Value, TaskError> {
    Ok(Value::Null)
}

async fn open_hub(dir: &std::path::Path) -> Hub {
    let config = HubConfig::with_data_dir(dir).tasks(TaskConfig {
        concurrency: 2,
        // The whole batch's events fit, so the counting subscriber never lags.
        event_buffer: 65_536,
        ..TaskConfig::default()
    });
    Hub::open_with(config, Handlers::new().register("noop", noop))
        .await
        .expect("open hub")
}

/// Submits `JOBS` no-op jobs from `CLIENTS` tasks and waits until all have succeeded, as a
/// client would: on the event stream.
async fn run_batch(hub: &Hub) -> Duration {
    let mut events = hub.subscribe(None).await.expect("subscribe");
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let hub = hub.clone();
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

/// Times `iters` enqueues one after another, then waits (untimed) for the jobs to finish.
async fn timed_enqueues(hub: &Hub, iters: u64, job: impl Fn() -> JobRequest) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let job = job();
        let start = Instant::now();
        hub.submit(job).await.expect("enqueue");
        total += start.elapsed();
    }
    drain(hub).await;
    total
}

/// Waits until no task is queued or running.
async fn drain(hub: &Hub) {
    loop {
        let stats = hub.task_stats().await.expect("stats");
        if stats.queues.iter().all(|q| q.pending == 0 && q.active == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A job holding a key of its own, as a project operation does.
fn exclusive_job() -> JobRequest {
    JobRequest::new("noop", json!({})).options(JobOptions {
        exclusive_key: Some(uuid::Uuid::new_v4().to_string()),
        ..JobOptions::default()
    })
}

fn print_percentiles(
    runtime: &tokio::runtime::Runtime,
    hub: &Hub,
    name: &str,
    job: impl Fn() -> JobRequest,
) {
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let mut latencies = Vec::with_capacity(JOBS as usize);
        for _ in 0..JOBS {
            let job = job();
            let start = Instant::now();
            hub.submit(job).await.expect("enqueue");
            latencies.push(start.elapsed());
        }
        drain(hub).await;
        latencies
    });
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{name} latency over {JOBS} enqueues: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}

fn tasks(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let scratch = tempfile::TempDir::new().expect("temp dir");
    let hub = runtime.block_on(open_hub(scratch.path()));

    let mut group = c.benchmark_group("tasks");
    // Each sample's jobs are drained outside the timed part, so no backlog builds up.
    group.bench_function("enqueue", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            timed_enqueues(&hub, iters, || JobRequest::new("noop", json!({})))
        });
    });
    group.bench_function("enqueue_exclusive", |b| {
        b.to_async(&runtime)
            .iter_custom(|iters| timed_enqueues(&hub, iters, exclusive_job));
    });
    group.sample_size(10);
    group.throughput(Throughput::Elements(JOBS));
    group.bench_function("10k_noop_jobs_2_workers", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let hub = hub.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_batch(&hub).await;
                }
                total
            }
        });
    });
    group.finish();

    // Percentiles criterion does not give: 10,000 single enqueues, one after another.
    print_percentiles(&runtime, &hub, "tasks/enqueue", || {
        JobRequest::new("noop", json!({}))
    });
    print_percentiles(&runtime, &hub, "tasks/enqueue_exclusive", exclusive_job);
    let elapsed = runtime.block_on(run_batch(&hub));
    println!(
        "tasks/10k_noop_jobs_2_workers: {JOBS} jobs enqueue→SUCCESS in {elapsed:?} = {:.0} jobs/s",
        JOBS as f64 / elapsed.as_secs_f64()
    );
    runtime.block_on(hub.close());
}

criterion_group!(benches, tasks);
criterion_main!(benches);
