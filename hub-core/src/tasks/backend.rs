//! The [`TaskBackend`] trait the rest of the hub depends on, and the event subscription type
//! every backend hands out.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::model::{BackendStats, JobRequest, TaskEvent, TaskId, TaskQuery, TaskRecord};
use crate::error::Result;

/// Where tasks are queued, run, recorded and watched. The in-process backend is the default; a
/// Redis backend serves workers on many hosts behind the same trait.
#[async_trait]
pub trait TaskBackend: Send + Sync + 'static {
    /// A short name for monitoring (`in_process`, `redis`).
    fn name(&self) -> &'static str;

    /// Queues a job and returns its id as soon as the job is durably recorded.
    async fn enqueue(&self, job: JobRequest) -> Result<TaskId>;

    /// The task's record; `None` for an id the backend never saw (or whose record expired).
    async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>>;

    /// Records matching `query`, newest first.
    async fn list(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>>;

    /// Revokes a task: a pending one never runs; a running one is cancelled when `terminate` is
    /// set (and otherwise left to finish, as Celery does). A finished task is left as it is.
    /// Returns the record after the call.
    async fn revoke(&self, id: TaskId, terminate: bool) -> Result<TaskRecord>;

    /// Events after sequence number `since` (those still buffered), then live ones.
    fn subscribe(&self, since: Option<u64>) -> EventSubscription;

    /// Workers, queues, history and rates.
    async fn stats(&self) -> Result<BackendStats>;

    /// Stops taking work, lets running tasks finish within `grace`, then interrupts the rest.
    async fn shutdown(&self, grace: Duration) -> Result<()>;
}

/// A subscriber's view of the event stream: buffered events first, then live ones.
///
/// Sequence numbers increase by one per event; when a subscriber falls too far behind, older
/// events are dropped and [`EventSubscription::missed`] counts them.
#[derive(Debug)]
pub struct EventSubscription {
    backlog: VecDeque<TaskEvent>,
    live: broadcast::Receiver<TaskEvent>,
    last_seq: u64,
    missed: u64,
}

impl EventSubscription {
    /// A subscription that yields `backlog`, then whatever `live` receives after it.
    pub fn new(backlog: VecDeque<TaskEvent>, live: broadcast::Receiver<TaskEvent>) -> Self {
        EventSubscription {
            backlog,
            live,
            last_seq: 0,
            missed: 0,
        }
    }

    /// The next event, or `None` when the backend is gone.
    pub async fn recv(&mut self) -> Option<TaskEvent> {
        while let Some(event) = self.backlog.pop_front() {
            if event.seq > self.last_seq {
                self.last_seq = event.seq;
                return Some(event);
            }
        }
        loop {
            match self.live.recv().await {
                // The backlog and the live channel overlap by design; skip what was delivered.
                Ok(event) if event.seq <= self.last_seq => continue,
                Ok(event) => {
                    self.last_seq = event.seq;
                    return Some(event);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event subscriber lagged");
                    self.missed += n;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is already here (buffered or received), without waiting.
    pub fn try_recv(&mut self) -> Option<TaskEvent> {
        while let Some(event) = self.backlog.pop_front() {
            if event.seq > self.last_seq {
                self.last_seq = event.seq;
                return Some(event);
            }
        }
        loop {
            match self.live.try_recv() {
                Ok(event) if event.seq <= self.last_seq => continue,
                Ok(event) => {
                    self.last_seq = event.seq;
                    return Some(event);
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.missed += n,
                Err(_) => return None,
            }
        }
    }

    /// Skips live events up to and including `seq` (the subscriber has seen them).
    pub fn skip_through(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// How many events were dropped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}
