//! Where the backend keeps what in Redis: every key starts with the configured prefix, so
//! several hubs can share one Redis.

use crate::tasks::model::TaskId;

/// The consumer group every worker reads a queue stream in.
pub(super) const GROUP: &str = "workers";

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// A task's record and fence fields (hash; expires once the task is finished).
    pub(super) fn task(&self, id: TaskId) -> String {
        format!("{}task:{id}", self.prefix)
    }

    /// What every task key starts with (the enqueue script looks up a key's holder by id).
    pub(super) fn task_prefix(&self) -> String {
        format!("{}task:", self.prefix)
    }

    /// A queue: a stream of deliveries read by the `workers` consumer group.
    pub(super) fn queue(&self, name: &str) -> String {
        format!("{}queue:{name}", self.prefix)
    }

    /// The names of every queue ever used (set).
    pub(super) fn queues(&self) -> String {
        format!("{}queues", self.prefix)
    }

    /// The event stream; entry ids are `<seq>-0`.
    pub(super) fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// The last event sequence number handed out.
    pub(super) fn event_seq(&self) -> String {
        format!("{}events:seq", self.prefix)
    }

    /// Every task id by queue time in µs (sorted set), for history queries.
    pub(super) fn index(&self) -> String {
        format!("{}tasks", self.prefix)
    }

    /// Which task holds an exclusive key.
    pub(super) fn exclusive(&self, key: &str) -> String {
        format!("{}lock:{key}", self.prefix)
    }

    /// Revoke requests for running tasks (hash id → 1), read by whichever worker holds them.
    pub(super) fn revokes(&self) -> String {
        format!("{}revokes", self.prefix)
    }

    /// Ids of every registered worker (set).
    pub(super) fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }

    /// A worker's registration (hash).
    pub(super) fn worker(&self, id: &str) -> String {
        format!("{}worker:{id}", self.prefix)
    }

    /// Present while a worker heartbeats: its lease.
    pub(super) fn alive(&self, id: &str) -> String {
        format!("{}alive:{id}", self.prefix)
    }

    /// All-time figures by kind, kept apart from the records so totals outlive the records'
    /// expiry (hash): `kind|STATE` → finished count, `kind|runtime_ms` and `kind|wait_ms` →
    /// sums, `kind|run:<bucket>` and `kind|wait:<bucket>` → histogram buckets.
    pub(super) fn kind_counts(&self) -> String {
        format!("{}stats:kinds", self.prefix)
    }

    /// Tasks finished in one minute (Unix minutes) by final state (hash `STATE` → n), for
    /// rates and throughput; kept a little over a day.
    pub(super) fn minute(&self, minute: i64) -> String {
        format!("{}stats:minute:{minute}", self.prefix)
    }

    /// One sample per finished task (sorted set by finish time in ms, members
    /// `id|STATE|runtime_ms|wait_ms|kind`), kept for the longest stats window.
    pub(super) fn samples(&self) -> String {
        format!("{}stats:samples", self.prefix)
    }

    /// A task's timeline: its changes as JSON entries (list; expires with the record).
    pub(super) fn timeline(&self, id: TaskId) -> String {
        format!("{}timeline:{id}", self.prefix)
    }
}
