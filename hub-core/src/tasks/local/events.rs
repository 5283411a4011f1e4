//! The event log as this process sees it: one sequence for the whole store, published here in
//! order, whichever process wrote each event.
//!
//! The store numbers events as they commit (SQLite commits one writer at a time, so numbers
//! follow commit order). This process's own events come from its writer, already in memory;
//! other processes' are read from the store by polling (`poll_interval`). A gate between the
//! writer's commit and the pump's read makes sure no own event can be skipped: the pump either
//! sees a commit's events in memory or the commit has not happened yet.

use std::sync::Arc;

use tokio::sync::Notify;

use super::state::Shared;
use crate::db::Database;
use crate::error::Result;
use crate::tasks::backend::EventSubscription;
use crate::tasks::events::EventFeed;
use crate::tasks::model::{EventCursor, TaskEvent};
use crate::tasks::store;

/// Foreign events read from the store per query.
const READ_BATCH: usize = 1000;

pub(super) struct EventLog {
    /// What is published, and to whom.
    pub(super) feed: EventFeed,
    /// Own events committed but not yet published. The writer holds this lock across its commit.
    pub(super) committed: tokio::sync::Mutex<Vec<TaskEvent>>,
    /// Woken by the writer after a commit.
    pub(super) wake: Notify,
}

impl EventLog {
    /// A log that publishes what comes after `last`.
    pub(super) fn new(last: u64, buffer: usize, result_expires: std::time::Duration) -> Self {
        EventLog {
            feed: EventFeed::new(last, buffer, result_expires),
            committed: tokio::sync::Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// Publishes, in sequence order, every event stored since the last call: this process's
    /// own (from memory) and, when `read_store` is set or own events do not follow on, other
    /// processes' (from the store). Returns the foreign events published.
    pub(super) async fn publish_new(
        &self,
        db: &Database,
        origin: &str,
        read_store: bool,
    ) -> Result<Vec<TaskEvent>> {
        let mut committed = self.committed.lock().await;
        let last = self.feed.last();
        let own = std::mem::take(&mut *committed);
        let follows_on = own.first().is_some_and(|e| e.seq == last + 1)
            && own.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        if follows_on && !read_store {
            drop(committed);
            self.feed.publish(own.clone());
            return Ok(Vec::new());
        }
        let foreign = match store::foreign_events_after(db, last, origin, READ_BATCH).await {
            Ok(rows) => rows,
            Err(err) => {
                // Keep our own events for the next round rather than lose them.
                *committed = own;
                return Err(err);
            }
        };
        let complete = foreign.len() < READ_BATCH;
        let upto = foreign.last().map_or(u64::MAX, |e| e.seq);
        // Own and foreign events interleave by sequence number; with the gate held, every own
        // event the store has is in memory.
        let mut own = own.into_iter().peekable();
        let mut out = Vec::with_capacity(foreign.len());
        for event in &foreign {
            while let Some(mine) = own.next_if(|e| e.seq < event.seq) {
                out.push(mine);
            }
            out.push(event.clone());
        }
        // Own events past what the store returned: publish them now only if the read saw
        // everything (no other process's event can lie between).
        let rest: Vec<TaskEvent> = own.collect();
        if complete {
            out.extend(rest);
        } else {
            let (now, later): (Vec<TaskEvent>, Vec<TaskEvent>) =
                rest.into_iter().partition(|e| e.seq < upto);
            out.extend(now);
            *committed = later;
        }
        drop(committed);
        self.feed.publish(out);
        Ok(foreign)
    }

    /// Subscriptions open now.
    pub(super) fn subscribers(&self) -> u64 {
        self.feed.subscribers()
    }

    /// A subscription to every event after `after` (read back from the store when memory no
    /// longer has them), then live ones.
    pub(super) async fn subscribe(
        &self,
        db: &Database,
        after: Option<EventCursor>,
    ) -> Result<EventSubscription> {
        self.feed
            .subscribe(after, |after, limit| store::events_after(db, after, limit))
            .await
    }
}

/// Publishes events as they are stored: at once after this process's commits, and every
/// `poll_interval` from the store, for other processes'. An event about a task held here that
/// another process wrote means this process lost the task.
pub(super) async fn pump_loop(shared: Arc<Shared>) {
    let every = shared.config.poll_interval;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let read_store = tokio::select! {
            () = shared.log.wake.notified() => false,
            _ = tick.tick() => true,
        };
        match shared
            .log
            .publish_new(&shared.db, shared.id(), read_store)
            .await
        {
            Ok(foreign) => {
                for event in &foreign {
                    shared.foreign_event(event);
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading task events failed"),
        }
    }
}
