//! Finished task records kept in memory: a terminal record never changes again, so every
//! process may answer for it from memory — no store round trip per status poll — until it
//! expires with its record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hashlink::LruCache;

use super::model::{TaskId, TaskRecord};
use crate::sync::lock;

/// Finished records kept (least recently asked for go first).
const CAPACITY: usize = 1024;

/// The most recently finished or asked-for finished records.
pub(crate) struct FinishedRecords {
    records: Mutex<LruCache<TaskId, Arc<TaskRecord>>>,
    /// Records are purged this long after they finish (zero: never).
    expires: Duration,
}

impl FinishedRecords {
    pub(crate) fn new(expires: Duration) -> Self {
        FinishedRecords {
            records: Mutex::new(LruCache::new(CAPACITY)),
            expires,
        }
    }

    /// The finished record of `id`, unless it is not held here or has expired (then the
    /// store decides: it may already be purged).
    pub(crate) fn get(&self, id: TaskId) -> Option<TaskRecord> {
        let mut records = lock(&self.records);
        let record = records.get(&id)?;
        let expired = !self.expires.is_zero()
            && record.finished_at.is_some_and(|finished| {
                (Utc::now() - finished).to_std().unwrap_or_default() >= self.expires
            });
        if expired {
            records.remove(&id);
            return None;
        }
        Some(TaskRecord::clone(record))
    }

    /// Keeps a copy of `record` if it is finished.
    pub(crate) fn offer(&self, record: &TaskRecord) {
        if record.state.is_terminal() {
            lock(&self.records).insert(record.id, Arc::new(record.clone()));
        }
    }

    /// Keeps `record` if it is finished, shared with whoever else holds it (its event).
    pub(crate) fn offer_shared(&self, record: &Arc<TaskRecord>) {
        if record.state.is_terminal() {
            lock(&self.records).insert(record.id, Arc::clone(record));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::model::{TaskState, TimeLimits};

    fn record(state: TaskState, finished_secs_ago: i64) -> TaskRecord {
        let now = Utc::now();
        TaskRecord {
            id: uuid::Uuid::new_v4(),
            kind: "k".into(),
            queue: "default".into(),
            project_id: None,
            payload: serde_json::Value::Null,
            state,
            progress: 100,
            status: None,
            result: None,
            error: None,
            attempt: 1,
            worker: None,
            queued_at: now,
            started_at: Some(now),
            finished_at: state
                .is_terminal()
                .then(|| now - chrono::Duration::seconds(finished_secs_ago)),
            limits: TimeLimits {
                soft: Duration::from_secs(1),
                hard: Duration::from_secs(2),
            },
        }
    }

    #[test]
    fn only_finished_unexpired_records_are_answered() {
        let recent = FinishedRecords::new(Duration::from_secs(60));
        let running = record(TaskState::Running, 0);
        let done = record(TaskState::Success, 1);
        let old = record(TaskState::Failure, 120);
        for r in [&running, &done, &old] {
            recent.offer(r);
        }
        assert_eq!(
            recent.get(running.id),
            None,
            "an unfinished record still changes"
        );
        assert_eq!(recent.get(done.id), Some(done.clone()));
        assert_eq!(recent.get(old.id), None, "expired: the store decides");
        let forever = FinishedRecords::new(Duration::ZERO);
        forever.offer(&old);
        assert_eq!(forever.get(old.id), Some(old));
    }
}
