//! Following one task: the rule every frontend shares (HTTP's event stream, Python's
//! `TaskHandle` iteration), so they behave the same.
//!
//! A watch yields the task's current state first, then each later version, and ends after the
//! terminal one. Resumed after an event cursor, it yields what followed the cursor instead of
//! the current state.

use std::sync::Arc;

use super::backend::EventSubscription;
use super::model::{TaskId, TaskRecord};

/// One version of the watched task; `seq` is its event number when it came from the event log
/// (the current state read at the start has none).
#[derive(Debug, Clone, PartialEq)]
pub struct WatchItem {
    /// The event's number in the store's log, to resume after.
    pub seq: Option<u64>,
    /// The task as it was then.
    pub task: TaskRecord,
}

#[derive(Debug)]
enum Phase {
    /// The current state is due first.
    Current(TaskRecord),
    /// Resumed on a finished task: what the log holds after the cursor, then the final state
    /// unless the log already gave it.
    Replay {
        last: TaskRecord,
        saw_end: bool,
    },
    /// Live changes later than `last` (anything, when resumed and none seen yet).
    Live {
        last: Option<TaskRecord>,
    },
    Ended,
}

/// One task's changes, as [`crate::Hub::watch`] gives them. Cancel-safe: dropping a pending
/// [`TaskWatch::next`] loses nothing.
#[derive(Debug)]
pub struct TaskWatch {
    id: TaskId,
    subscription: EventSubscription,
    phase: Phase,
}

impl TaskWatch {
    /// A watch of task `current.id`, on a subscription opened *before* `current` was read (so
    /// no change in between is missed); `resumed` when the subscription starts after a cursor.
    pub fn new(current: TaskRecord, subscription: EventSubscription, resumed: bool) -> Self {
        let phase = match (resumed, current.ready()) {
            (false, _) => Phase::Current(current.clone()),
            (true, true) => Phase::Replay {
                last: current.clone(),
                saw_end: false,
            },
            (true, false) => Phase::Live { last: None },
        };
        TaskWatch {
            id: current.id,
            subscription,
            phase,
        }
    }

    /// The next version, or `None` once the terminal one was given (or the backend is gone).
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            match &mut self.phase {
                Phase::Ended => return None,
                Phase::Current(current) => {
                    let task = current.clone();
                    self.phase = if task.ready() {
                        Phase::Ended
                    } else {
                        Phase::Live {
                            last: Some(task.clone()),
                        }
                    };
                    return Some(WatchItem { seq: None, task });
                }
                Phase::Replay { last, saw_end } => {
                    // Whatever a client missed of a finished task is already buffered.
                    while let Some(event) = self.subscription.try_recv() {
                        if event.task.id == self.id {
                            *saw_end |= event.task.ready();
                            return Some(WatchItem {
                                seq: Some(event.seq),
                                task: Arc::unwrap_or_clone(event.task),
                            });
                        }
                    }
                    let item = (!*saw_end).then(|| WatchItem {
                        seq: None,
                        task: last.clone(),
                    });
                    self.phase = Phase::Ended;
                    return item;
                }
                Phase::Live { last } => {
                    let event = self.subscription.recv().await?;
                    // The current record may be ahead of events still on their way: only later
                    // versions count.
                    if event.task.id != self.id
                        || last.as_ref().is_some_and(|l| !event.task.is_after(l))
                    {
                        continue;
                    }
                    self.phase = if event.task.ready() {
                        Phase::Ended
                    } else {
                        Phase::Live {
                            last: Some(TaskRecord::clone(&event.task)),
                        }
                    };
                    return Some(WatchItem {
                        seq: Some(event.seq),
                        task: Arc::unwrap_or_clone(event.task),
                    });
                }
            }
        }
    }
}
