//! `/api/tasks`: status, history, revoke.

use axum::Json;
use axum::extract::{Path, State};
use hub_core::tasks::{DEFAULT_LIST_LIMIT, TaskId, TaskQuery, TaskState};
use hub_core::{Entity, HubError};

use crate::dto::{RevokeQuery, TaskListQuery, TaskStatusJson};
use crate::extract::Query;
use crate::{ApiError, AppState};

/// A task id from the path; anything that is not a known task's id is `404`, never `PENDING`.
pub(crate) fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::from(HubError::not_found(Entity::Task, raw)))
}

/// A task's state, progress and outcome. An unknown id is a 404; a task accepted here whose
/// record the store has not taken yet (its write lock held by another process) a 503.
#[utoipa::path(get, path = "/api/tasks/{task_id}/status", tag = "tasks",
    params(("task_id" = String, Path)),
    responses((status = 200, body = TaskStatusJson), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 503, description = "The task was accepted but the store has not taken it yet (another process holds its write lock)", body = crate::error::ErrorEnvelope)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TaskStatusJson>, ApiError> {
    let record = state.hub.task(task_id(&raw)?).await?;
    Ok(Json(TaskStatusJson::from(&record)))
}

/// The original's path for the same thing.
#[utoipa::path(get, path = "/api/task-status/{task_id}", tag = "tasks",
    params(("task_id" = String, Path)),
    responses((status = 200, body = TaskStatusJson), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 503, description = "The task was accepted but the store has not taken it yet (another process holds its write lock)", body = crate::error::ErrorEnvelope)))]
pub(crate) async fn status_alias(
    state: State<AppState>,
    raw: Path<String>,
) -> Result<Json<TaskStatusJson>, ApiError> {
    status(state, raw).await
}

/// Task history, newest first.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(TaskListQuery),
    responses((status = 200, body = Vec<TaskStatusJson>), (status = 422, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<TaskListQuery>,
) -> Result<Json<Vec<TaskStatusJson>>, ApiError> {
    let states = match &query.state {
        Some(text) => TaskState::parse_list(text)?,
        None => Vec::new(),
    };
    // The limit's bounds are the core's rule (`TaskQuery::validate`).
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    let tasks = state
        .hub
        .tasks(&TaskQuery {
            states,
            kind: query.kind,
            project_id: query.project_id,
            limit,
            offset: query.offset.unwrap_or(0),
            ..TaskQuery::default()
        })
        .await?;
    Ok(Json(tasks.iter().map(TaskStatusJson::from).collect()))
}

/// Revokes a task: a pending one never runs; a running one is cancelled with `terminate=true`.
#[utoipa::path(post, path = "/api/tasks/{task_id}/revoke", tag = "tasks",
    params(("task_id" = String, Path), RevokeQuery),
    responses((status = 200, body = TaskStatusJson), (status = 404, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(query): Query<RevokeQuery>,
) -> Result<Json<TaskStatusJson>, ApiError> {
    let record = state
        .hub
        .revoke(task_id(&raw)?, query.terminate.unwrap_or(false))
        .await?;
    Ok(Json(TaskStatusJson::from(&record)))
}

/// Revokes a task, cancelling it even while it runs.
#[utoipa::path(delete, path = "/api/tasks/{task_id}", tag = "tasks",
    params(("task_id" = String, Path)),
    responses((status = 200, body = TaskStatusJson), (status = 404, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TaskStatusJson>, ApiError> {
    let record = state.hub.revoke(task_id(&raw)?, true).await?;
    Ok(Json(TaskStatusJson::from(&record)))
}
