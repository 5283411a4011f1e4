//! `/api/orchestration/{id}/…`: start, stop, restart, status, logs; and
//! `/api/projects/{id}/stack`, the stack a start would run.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hub_core::orchestration::{self, EffectiveStack, ReconcileChange, StackStatus};
use hub_core::tasks::TaskId;

use crate::dto::{LogsJson, LogsQuery, TaskAccepted};
use crate::extract::Query;
use crate::{ApiError, AppState};

fn accepted(task_id: TaskId, message: String) -> (StatusCode, Json<TaskAccepted>) {
    (
        StatusCode::ACCEPTED,
        Json(TaskAccepted {
            task_id,
            status: "pending".into(),
            message,
        }),
    )
}

/// Starts the project's stack in the background.
#[utoipa::path(post, path = "/api/orchestration/{id}/start", tag = "orchestration",
    params(("id" = String, Path, description = "Project id or slug")),
    responses((status = 202, body = TaskAccepted), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "an operation on this project is running", body = crate::error::ErrorEnvelope)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TaskAccepted>), ApiError> {
    let task = state.hub.start_project(id.as_str()).await?;
    Ok(accepted(task, format!("Starting project {id}")))
}

/// Stops the project's stack (volumes are kept).
#[utoipa::path(post, path = "/api/orchestration/{id}/stop", tag = "orchestration",
    params(("id" = String, Path, description = "Project id or slug")),
    responses((status = 202, body = TaskAccepted), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TaskAccepted>), ApiError> {
    let task = state.hub.stop_project(id.as_str()).await?;
    Ok(accepted(task, format!("Stopping project {id}")))
}

/// Stops, then starts the project's stack.
#[utoipa::path(post, path = "/api/orchestration/{id}/restart", tag = "orchestration",
    params(("id" = String, Path, description = "Project id or slug")),
    responses((status = 202, body = TaskAccepted), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn restart(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TaskAccepted>), ApiError> {
    let task = state.hub.restart_project(id.as_str()).await?;
    Ok(accepted(task, format!("Restarting project {id}")))
}

/// Recreates one service of the project's stack.
#[utoipa::path(post, path = "/api/orchestration/{id}/restart/{service}", tag = "orchestration",
    params(("id" = String, Path, description = "Project id or slug"), ("service" = String, Path)),
    responses((status = 202, body = TaskAccepted), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn restart_service(
    State(state): State<AppState>,
    Path((id, service)): Path<(String, String)>,
) -> Result<(StatusCode, Json<TaskAccepted>), ApiError> {
    let task = state.hub.restart_service(id.as_str(), &service).await?;
    Ok(accepted(
        task,
        format!("Restarting {service} of project {id}"),
    ))
}

/// The effective stack: the services a start would run, after interpolation and port
/// remapping (`container port → host port`). Extra ports a compose file publishes are leased
/// now if they were not yet. An invalid stack file is a 422 naming the file, key and line.
#[utoipa::path(get, path = "/api/projects/{id}/stack", tag = "orchestration",
    params(("id" = String, Path, description = "Project id or slug")),
    responses((status = 200, body = EffectiveStack), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 422, description = "the stack file is invalid", body = crate::error::ErrorEnvelope)))]
pub(crate) async fn stack(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EffectiveStack>, ApiError> {
    Ok(Json(state.hub.effective_stack(id).await?))
}

/// Per-service state, health and ports, read from the engine.
#[utoipa::path(get, path = "/api/orchestration/{id}/status", tag = "orchestration",
    params(("id" = String, Path, description = "Project id or slug")),
    responses((status = 200, body = StackStatus), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 503, description = "Docker unreachable", body = crate::error::ErrorEnvelope)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StackStatus>, ApiError> {
    Ok(Json(state.hub.project_status(id).await?))
}

/// The last lines of one service's output; with `follow=true`, a text stream of new lines (one
/// JSON object per line, `{"stream": "stdout"|"stderr", "text"}`, for
/// `Accept: application/x-ndjson`).
#[utoipa::path(get, path = "/api/orchestration/{id}/logs/{service}", tag = "orchestration",
    params(("id" = String, Path, description = "Project id or slug"), ("service" = String, Path), LogsQuery),
    responses((status = 200, body = LogsJson), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 503, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, service)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let lines = query
        .lines
        .or(query.tail)
        .unwrap_or(orchestration::DEFAULT_LOG_LINES);
    let project = state.hub.project(id.as_str()).await?;
    if query.follow.unwrap_or(false) {
        let stream = state.hub.follow_logs(project.id, &service, lines).await?;
        let tagged = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("application/x-ndjson"));
        if tagged {
            let body = Body::from_stream(stream.map(|line| {
                let object = match line {
                    Ok(line) => serde_json::json!({"stream": line.stream, "text": line.text}),
                    Err(err) => serde_json::json!({
                        "stream": "hub", "text": format!("log stream ended: {err}")
                    }),
                };
                Ok::<_, std::io::Error>(format!("{object}\n"))
            }));
            return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response());
        }
        let body = Body::from_stream(stream.map(|line| match line {
            Ok(line) => Ok::<_, std::io::Error>(format!("{}\n", line.text)),
            Err(err) => Ok(format!("[hub] log stream ended: {err}\n")),
        }));
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response());
    }
    let logs = state.hub.logs(project.id, &service, lines).await?;
    Ok(Json(LogsJson {
        project_id: project.id,
        service,
        lines: logs.len(),
        logs,
    })
    .into_response())
}

/// Corrects project statuses from what the engine runs; returns what changed.
#[utoipa::path(post, path = "/api/reconcile", tag = "orchestration", responses(
    (status = 200, body = Vec<ReconcileChange>), (status = 503, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn reconcile(
    State(state): State<AppState>,
) -> Result<Json<Vec<ReconcileChange>>, ApiError> {
    Ok(Json(state.hub.reconcile().await?))
}
