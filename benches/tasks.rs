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
use hub_core::tasks::{Handlers, JobRequest, TaskConfig};
use hub_core::{Hub, HubConfig};

mod common;
use common::{
    JOBS, drain, enqueue_latencies, exclusive_job, noop, noop_job, print_latencies, run_batch,
};

/// The allocator of the `hub` binary, whose engine this measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn tasks(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let scratch = tempfile::TempDir::new().expect("temp dir");
    let hub = runtime.block_on(open_hub(scratch.path()));

    let mut group = c.benchmark_group("tasks");
    // Each sample's jobs are drained outside the timed part, so no backlog builds up.
    group.bench_function("enqueue", |b| {
        b.to_async(&runtime)
            .iter_custom(|iters| timed_enqueues(&hub, iters, noop_job));
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
    for (name, job) in [
        ("tasks/enqueue", noop_job as fn() -> JobRequest),
        ("tasks/enqueue_exclusive", exclusive_job),
    ] {
        let latencies = runtime.block_on(async {
            let latencies = enqueue_latencies(&hub, job).await;
            drain(&hub).await;
            latencies
        });
        print_latencies(name, &latencies);
    }
    let elapsed = runtime.block_on(run_batch(&hub));
    println!(
        "tasks/10k_noop_jobs_2_workers: {JOBS} jobs enqueue→SUCCESS in {elapsed:?} = {:.0} jobs/s",
        JOBS as f64 / elapsed.as_secs_f64()
    );
    runtime.block_on(hub.close());
}

criterion_group!(benches, tasks);
criterion_main!(benches);
