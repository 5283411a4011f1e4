//! The event log as this process sees it: one sequence for the whole store, published here in
//! order, whichever process wrote each event.
//!
//! The store numbers events as they commit (SQLite commits one writer at a time, so numbers
//! follow commit order). This process's own events come from its writer, already in memory;
//! other processes' are read from the store by polling (`poll_interval`). A gate between the
//! writer's commit and the pump's read makes sure no own event can be skipped: the pump either
//! sees a commit's events in memory or the commit has not happened yet.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};

use super::state::{Shared, lock};
use crate::db::Database;
use crate::error::Result;
use crate::tasks::backend::EventSubscription;
use crate::tasks::model::{EventCursor, TaskEvent};
use crate::tasks::store;

/// Foreign events read from the store per query.
const READ_BATCH: usize = 1000;
/// Events read back from the store at most for one resuming subscriber.
const MAX_REPLAY: usize = 100_000;

pub(super) struct EventLog {
    buffer: usize,
    /// Own events committed but not yet published. The writer holds this lock across its commit.
    pub(super) committed: tokio::sync::Mutex<Vec<TaskEvent>>,
    published: Mutex<Published>,
    sender: broadcast::Sender<TaskEvent>,
    /// Woken by the writer after a commit.
    pub(super) wake: Notify,
}

struct Published {
    /// The sequence number of the last event published.
    last: u64,
    /// Recent events, for subscribers that resume.
    recent: VecDeque<TaskEvent>,
}

impl EventLog {
    /// A log that publishes what comes after `last`.
    pub(super) fn new(last: u64, buffer: usize) -> Self {
        let (sender, _) = broadcast::channel(buffer.max(16));
        EventLog {
            buffer: buffer.max(16),
            committed: tokio::sync::Mutex::new(Vec::new()),
            published: Mutex::new(Published {
                last,
                recent: VecDeque::new(),
            }),
            sender,
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
        let last = lock(&self.published).last;
        let own = std::mem::take(&mut *committed);
        let follows_on = own.first().is_some_and(|e| e.seq == last + 1)
            && own.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        if follows_on && !read_store {
            drop(committed);
            self.publish(own.clone());
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
        self.publish(out);
        Ok(foreign)
    }

    fn publish(&self, events: Vec<TaskEvent>) {
        if events.is_empty() {
            return;
        }
        let mut published = lock(&self.published);
        for event in events {
            if event.seq <= published.last {
                continue;
            }
            published.last = event.seq;
            if published.recent.len() >= self.buffer {
                published.recent.pop_front();
            }
            published.recent.push_back(event.clone());
            // No subscriber is fine.
            let _ = self.sender.send(event);
        }
    }

    /// A subscription to every event after `after` (read back from the store when memory no
    /// longer has them), then live ones.
    /// Subscriptions open now.
    pub(super) fn subscribers(&self) -> u64 {
        u64::try_from(self.sender.receiver_count()).unwrap_or(u64::MAX)
    }

    pub(super) async fn subscribe(
        &self,
        db: &Database,
        after: Option<EventCursor>,
    ) -> Result<EventSubscription> {
        // Under the lock, so no event falls between the backlog and the live receiver.
        let (receiver, mut backlog, last, first_in_memory) = {
            let published = lock(&self.published);
            let receiver = self.sender.subscribe();
            let backlog: VecDeque<TaskEvent> = match after {
                Some(after) => published
                    .recent
                    .iter()
                    .filter(|e| e.seq > after.seq())
                    .cloned()
                    .collect(),
                None => VecDeque::new(),
            };
            let first = published
                .recent
                .front()
                .map_or(published.last + 1, |e| e.seq);
            (receiver, backlog, published.last, first)
        };
        let Some(after) = after else {
            return Ok(EventSubscription::new(backlog, receiver));
        };
        // A cursor from the future (another store, or made up) resumes from now.
        let after = after.seq().min(last);
        if after + 1 < first_in_memory {
            let limit = usize::try_from(first_in_memory - after - 1)
                .unwrap_or(MAX_REPLAY)
                .min(MAX_REPLAY);
            let older = store::events_after(db, after, limit).await?;
            for event in older.into_iter().rev() {
                if event.seq < first_in_memory {
                    backlog.push_front(event);
                }
            }
        }
        let mut subscription = EventSubscription::new(backlog, receiver);
        subscription.skip_through(EventCursor::after(after));
        Ok(subscription)
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
