//! Who this process is, as a worker: the id that owns the tasks it runs.

use std::sync::atomic::{AtomicI64, Ordering};

use uuid::Uuid;

use super::config::TaskConfig;
use crate::config::HubMode;
use crate::db::now_millis;

/// A worker process as registered in the store.
#[derive(Debug, Clone)]
pub(crate) struct WorkerRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) mode: String,
    pub(crate) concurrency: u32,
    pub(crate) queues: Vec<String>,
    pub(crate) started_at: i64,
}

impl WorkerRow {
    /// This process in `mode`: `name@host:pid/instance`, unique even when one process opens
    /// several hubs.
    pub(crate) fn this_process(config: &TaskConfig, mode: HubMode) -> WorkerRow {
        let host = hostname();
        let pid = std::process::id();
        let name = config
            .worker_name
            .clone()
            .unwrap_or_else(|| mode.as_str().to_owned());
        let instance = Uuid::new_v4().simple().to_string();
        WorkerRow {
            id: format!("{name}@{host}:{pid}/{}", &instance[..8]),
            name,
            host,
            pid,
            mode: mode.as_str().to_owned(),
            concurrency: config.concurrency,
            queues: config.queues.clone(),
            started_at: now_millis(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Microsecond stamps that never repeat or go back in this process: FIFO tie-breaks and
/// history order for tasks queued within the same microsecond.
#[derive(Debug, Default)]
pub(crate) struct MonotonicMicros(AtomicI64);

impl MonotonicMicros {
    /// `now` (µs), or one past the last stamp handed out when that is later.
    pub(crate) fn next_after(&self, now: i64) -> i64 {
        let mut previous = self.0.load(Ordering::Acquire);
        loop {
            let next = now.max(previous + 1);
            match self
                .0
                .compare_exchange_weak(previous, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(actual) => previous = actual,
            }
        }
    }
}
