//! Server-Sent Events: every state and progress change, pushed.
//!
//! Each event's `id` is its place in the store's one event log, the same on every process that
//! shares the store; a client that reconnects with `Last-Event-ID` (to this process or another)
//! gets what it missed, as long as the store keeps it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use futures_util::Stream;
use hub_core::tasks::{EventCursor, TaskEvent, TaskRecord, WatchItem};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use super::tasks::task_id;
use crate::dto::TaskStatusJson;
use crate::extract::Query;
use crate::{ApiError, AppState};

type EventStream = Sse<KeepAliveStream<ReceiverStream<Result<Event, Infallible>>>>;

fn last_event_id(headers: &HeaderMap) -> Option<EventCursor> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn task_event(seq: Option<u64>, task: &TaskRecord) -> Event {
    let event = Event::default()
        .event("task")
        .json_data(TaskStatusJson::from(task))
        .unwrap_or_else(|_| Event::default().event("task"));
    match seq {
        Some(seq) => event.id(seq.to_string()),
        None => event,
    }
}

fn end_event(task: &TaskRecord) -> Event {
    Event::default()
        .event("end")
        .data(json!({"task_id": task.id, "state": task.state}).to_string())
}

/// How often a quiet stream gets a comment line. Besides keeping proxies from timing it out,
/// the write is how a client that went away is noticed (a closed socket fails it), so its
/// subscription is released within about this long.
const KEEP_ALIVE: Duration = Duration::from_secs(3);

fn sse<S>(stream: S) -> Sse<KeepAliveStream<S>>
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// What `next` gives, or `None` once the response stream is gone (the client hung up): a
/// subscription is dropped then, not at the next event, which may be hours away.
async fn unless_gone<T>(
    next: impl Future<Output = Option<T>>,
    tx: &mpsc::Sender<Result<Event, Infallible>>,
) -> Option<T> {
    tokio::select! {
        item = next => item,
        () = tx.closed() => None,
    }
}

/// Changes of one task: its current state first (or what followed `Last-Event-ID`), then every
/// change, then an `end` event after the terminal one.
#[utoipa::path(get, path = "/api/tasks/{task_id}/events", tag = "tasks",
    params(("task_id" = String, Path), ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of `task` events, then `end`", content_type = "text/event-stream"),
        (status = 404, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn task_events(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    let id = task_id(&raw)?;
    let mut watch = state.hub.watch(id, last_event_id(&headers)).await?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(WatchItem { seq, task }) = unless_gone(watch.next(), &tx).await {
            if tx.send(Ok(task_event(seq, &task))).await.is_err() {
                return;
            }
            if task.ready() {
                let _ = tx.send(Ok(end_event(&task))).await;
                return;
            }
        }
    });
    Ok(sse(ReceiverStream::new(rx)))
}

/// Filters of `GET /api/events`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct EventsQuery {
    /// Only tasks about this project.
    project_id: Option<i64>,
}

/// Changes of every task, as they happen (resumable with `Last-Event-ID`).
#[utoipa::path(get, path = "/api/events", tag = "tasks",
    params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of `task` events", content_type = "text/event-stream")))]
pub(crate) async fn all_events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    let mut subscription = state.hub.subscribe(last_event_id(&headers)).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(TaskEvent { seq, task }) = unless_gone(subscription.recv(), &tx).await {
            if query.project_id.is_some() && task.project_id != query.project_id {
                continue;
            }
            if tx.send(Ok(task_event(Some(seq), &task))).await.is_err() {
                return;
            }
        }
    });
    Ok(sse(ReceiverStream::new(rx)))
}
