//! Following the event stream: every process reads it in order (`XREAD BLOCK`) and publishes
//! what it reads to its subscribers; an event about a task held here that shows it ended,
//! retried or run elsewhere means this process lost the task.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use super::{BLOCK, Shared, decode};
use crate::error::Result;
use crate::sync::lock;
use crate::tasks::model::{CancelReason, TaskEvent, TaskState};

/// Events read per round.
const READ_BATCH: usize = 1000;
/// A read that returns fewer events than this is followed by a pause of [`GATHER`].
const GATHER_BELOW: usize = 32;
/// How long events gather between two small reads (the most it delays an event).
const GATHER: Duration = Duration::from_millis(1);

fn event(entry: &StreamId) -> Option<TaskEvent> {
    let seq = entry.id.split_once('-')?.0.parse().ok()?;
    let json: String = entry.get("task")?;
    match decode(&json) {
        Ok(task) => Some(TaskEvent {
            seq,
            task: Arc::new(task),
        }),
        Err(err) => {
            tracing::warn!(seq, error = %err, "unreadable task event skipped");
            None
        }
    }
}

/// At most `limit` events after `after`, in order, from the stream.
pub(super) async fn read_after(
    shared: &Shared,
    after: u64,
    limit: usize,
) -> Result<Vec<TaskEvent>> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(shared.keys.events())
        .arg(format!("({after}-0"))
        .arg("+")
        .arg("COUNT")
        .arg(limit)
        .query_async(&mut shared.conn.clone())
        .await
        .map_err(|err| shared.error(err))?;
    Ok(reply.ids.iter().filter_map(event).collect())
}

/// Publishes the stream's events as they come, on a connection of its own (a blocking read
/// would hold up every other command on a shared one).
pub(super) async fn pump_loop(shared: Arc<Shared>) {
    let mut conn = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if conn.is_none() {
            match shared.dedicated_connection().await {
                Ok(fresh) => conn = Some(fresh),
                Err(err) => {
                    tracing::warn!(error = %err, "event stream unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(connection) = conn.as_mut() else {
            continue;
        };
        let last = shared.feed.last();
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(shared.keys.events())
            .arg(format!("{last}-0"))
            .query_async(connection)
            .await;
        match read {
            Ok(reply) => {
                backoff = Duration::from_millis(100);
                let events: Vec<TaskEvent> = reply
                    .into_iter()
                    .flat_map(|reply| reply.keys)
                    .flat_map(|key| key.ids)
                    .filter_map(|entry| event(&entry))
                    .collect();
                for event in &events {
                    notice(&shared, event);
                }
                let few = events.len() < GATHER_BELOW;
                shared.feed.publish(events);
                // Under load, events come one by one: a short pause lets them gather, so each
                // process reads them in batches rather than one read per event.
                if few {
                    tokio::time::sleep(GATHER).await;
                }
            }
            Err(err) => {
                tracing::warn!(error = %shared.error(err), "reading task events failed; retrying");
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// An event about a task held here: if it shows the task ended, queued again or run by
/// someone else, this process lost it. (Its own writes show the task as it holds it.)
fn notice(shared: &Shared, event: &TaskEvent) {
    let theirs = &event.task;
    let lost = {
        let held = lock(&shared.held);
        let Some(mine) = held.get(&theirs.id) else {
            return;
        };
        !mine.record.state.is_terminal()
            && (theirs.state.is_terminal()
                || theirs.attempt > mine.record.attempt
                || (theirs.state.is_active() && theirs.worker.as_deref() != Some(shared.id())))
    };
    if lost {
        let reason = if theirs.state == TaskState::Revoked {
            CancelReason::Revoked
        } else {
            CancelReason::LeaseLost
        };
        shared.lose(theirs.id, reason);
    }
}
