//! What the task benchmarks share, whichever backend they measure: the no-op job, the batch
//! counted on the event stream, enqueue latencies and their percentiles, and the drain.

use std::time::{Duration, Instant};

use hub_core::Hub;
use hub_core::tasks::{JobOptions, JobRequest, TaskContext, TaskError, TaskState};
use serde_json::{Value, json};

/// Jobs in a batch, and enqueues in a latency run.
pub(crate) const JOBS: u64 = 10_000;
/// Concurrent clients submitting a batch.
pub(crate) const CLIENTS: u64 = 8;

/// The job every benchmark runs: nothing, so what is measured is the engine.
pub(crate) async fn noop(_: TaskContext, _: Value) -> Result<Value, TaskError> {
    Ok(Value::Null)
}

/// A no-op job.
pub(crate) fn noop_job() -> JobRequest {
    JobRequest::new("noop", json!({}))
}

/// A no-op job holding a key of its own, as a project operation does.
pub(crate) fn exclusive_job() -> JobRequest {
    noop_job().options(JobOptions {
        exclusive_key: Some(uuid::Uuid::new_v4().to_string()),
        ..JobOptions::default()
    })
}

/// Submits `JOBS` no-op jobs from `CLIENTS` tasks through `hub` and waits until all have
/// succeeded, as a client would: on the event stream.
pub(crate) async fn run_batch(hub: &Hub) -> Duration {
    let mut events = hub.subscribe(None).await.expect("subscribe");
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let hub = hub.clone();
        clients.spawn(async move {
            for _ in 0..JOBS / CLIENTS {
                hub.submit(noop_job()).await.expect("enqueue");
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

/// The latencies of `JOBS` enqueues one after another, sorted.
pub(crate) async fn enqueue_latencies(hub: &Hub, job: impl Fn() -> JobRequest) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(JOBS as usize);
    for _ in 0..JOBS {
        let job = job();
        let start = Instant::now();
        hub.submit(job).await.expect("enqueue");
        latencies.push(start.elapsed());
    }
    latencies.sort();
    latencies
}

/// The `p` quantile (0–1) of `sorted`.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Prints p50, p99 and max of `sorted` under `name`.
pub(crate) fn print_latencies(name: &str, sorted: &[Duration]) {
    println!(
        "{name} latency over {} enqueues: p50 {:?}, p99 {:?}, max {:?}",
        sorted.len(),
        percentile(sorted, 0.50),
        percentile(sorted, 0.99),
        sorted[sorted.len() - 1]
    );
}

/// Waits until no task is queued or running.
pub(crate) async fn drain(hub: &Hub) {
    loop {
        let stats = hub.task_stats().await.expect("stats");
        if stats.queues.iter().all(|q| q.pending == 0 && q.active == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
