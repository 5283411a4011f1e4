//! What every backend does with task events once it has them in order: keep the recent ones
//! for subscribers that resume, broadcast them live, and serve a subscription that reads older
//! ones back from the store.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::broadcast;

use super::backend::EventSubscription;
use super::model::{EventCursor, TaskEvent};
use super::recent::FinishedRecords;
use crate::error::Result;
use crate::sync::lock;

/// Events read back from the store at most for one resuming subscriber.
pub(crate) const MAX_REPLAY: usize = 100_000;

/// Published events: the recent ones in memory, and the live broadcast; the finished records
/// they carry are kept for status reads.
pub(crate) struct EventFeed {
    buffer: usize,
    published: Mutex<Published>,
    sender: broadcast::Sender<TaskEvent>,
    finished: FinishedRecords,
}

struct Published {
    /// The sequence number of the last event published.
    last: u64,
    /// Recent events, for subscribers that resume.
    recent: VecDeque<TaskEvent>,
}

impl EventFeed {
    /// A feed that publishes what comes after `last`, keeping `buffer` recent events, and
    /// finished records until they expire (`result_expires`).
    pub(crate) fn new(last: u64, buffer: usize, result_expires: Duration) -> Self {
        let (sender, _) = broadcast::channel(buffer.max(16));
        EventFeed {
            buffer: buffer.max(16),
            published: Mutex::new(Published {
                last,
                recent: VecDeque::new(),
            }),
            sender,
            finished: FinishedRecords::new(result_expires),
        }
    }

    /// Finished records seen: in published events, or offered by the backend.
    pub(crate) fn finished(&self) -> &FinishedRecords {
        &self.finished
    }

    /// The sequence number of the last event published.
    pub(crate) fn last(&self) -> u64 {
        lock(&self.published).last
    }

    /// Moves on to `last` without publishing what lies before it (a feed that starts following
    /// its store late: subscribers resuming from earlier read those events from the store).
    // Used by the Redis backend.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn skip_to(&self, last: u64) {
        let mut published = lock(&self.published);
        if last > published.last {
            published.last = last;
            published.recent.clear();
        }
    }

    /// Publishes `events`, in order; any at or before the last published are skipped.
    pub(crate) fn publish(&self, events: Vec<TaskEvent>) {
        if events.is_empty() {
            return;
        }
        let mut published = lock(&self.published);
        for event in events {
            if event.seq <= published.last {
                continue;
            }
            published.last = event.seq;
            self.finished.offer_shared(&event.task);
            if published.recent.len() >= self.buffer {
                published.recent.pop_front();
            }
            published.recent.push_back(event.clone());
            // No subscriber is fine.
            let _ = self.sender.send(event);
        }
    }

    /// Subscriptions open now.
    pub(crate) fn subscribers(&self) -> u64 {
        u64::try_from(self.sender.receiver_count()).unwrap_or(u64::MAX)
    }

    /// A subscription to every event after `after`, then live ones. Events memory no longer
    /// has come from `read_older(after, limit)`: at most `limit` events after `after`, in order.
    pub(crate) async fn subscribe<F, Fut>(
        &self,
        after: Option<EventCursor>,
        read_older: F,
    ) -> Result<EventSubscription>
    where
        F: FnOnce(u64, usize) -> Fut,
        Fut: Future<Output = Result<Vec<TaskEvent>>>,
    {
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
            let older = read_older(after, limit).await?;
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
