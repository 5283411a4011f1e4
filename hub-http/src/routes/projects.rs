//! `/api/projects`: the registry.

use std::path::PathBuf;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt, stream};
use hub_core::{HubError, NewProject, Project, ProjectStats, ProjectUpdate};

use crate::dto::{CreateProject, DeleteQuery, PageQuery, ProjectJson, UpdateProject};
use crate::extract::{JsonBody, Query};
use crate::{ApiError, AppState};

/// Projects, ordered by id: every one (the original's answer), or one page with `limit` and
/// `offset`, its total in the `X-Total-Count` header.
#[utoipa::path(get, path = "/api/projects", tag = "projects", params(PageQuery), responses(
    (status = 200, body = Vec<ProjectJson>, headers(
        ("X-Total-Count" = u64, description = "projects registered in all"))),
    (status = 422, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    if page.limit.is_none() && page.offset.is_none() {
        return whole_list(&state).await;
    }
    let page = state
        .hub
        .projects_page(
            page.limit.unwrap_or(DEFAULT_PROJECT_PAGE),
            page.offset.unwrap_or(0),
        )
        .await?;
    let body: Vec<ProjectJson> = page.projects.into_iter().map(ProjectJson::from).collect();
    Ok(([(TOTAL_COUNT, page.total.to_string())], Json(body)).into_response())
}

/// Every project, as one JSON array streamed a chunk of the registry at a time: thousands of
/// projects never sit in memory at once as rows, records and JSON. The first chunk is read
/// before answering, so a store that fails fails the request with its error; one that fails
/// later cuts the answer short (the client sees an incomplete body, never a shorter list).
/// With more than one chunk the total is counted apart, and a project created or deleted
/// meanwhile may make it differ from the array by one.
async fn whole_list(state: &AppState) -> Result<Response, ApiError> {
    let mut chunks = state.hub.project_chunks();
    let first = chunks.try_next().await?.unwrap_or_default();
    let total = if hub_core::registry::next_chunk_after(&first).is_none() {
        first.len() as u64
    } else {
        state.hub.project_count().await?
    };
    let mut separator: &[u8] = b"[";
    let mut encode = move |chunk: Vec<Project>| -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(chunk.len() * 512);
        for project in chunk {
            bytes.extend_from_slice(separator);
            separator = b",";
            serde_json::to_writer(&mut bytes, &ProjectJson::from(project))?;
        }
        Ok(bytes)
    };
    let head = encode(first)
        .map_err(|err| HubError::Internal(format!("encoding the project list: {err}")))?;
    let open = head.is_empty().then(|| b"[".to_vec());
    let rest = chunks.map(move |chunk| match chunk {
        Ok(chunk) => encode(chunk),
        Err(err) => {
            tracing::warn!(error = %err, "the project list was cut short");
            Err(std::io::Error::other(err.to_string()))
        }
    });
    let body = stream::iter(open.into_iter().chain([head]).map(Ok))
        .chain(rest)
        .chain(stream::once(async { Ok(b"]".to_vec()) }));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static(TOTAL_COUNT),
                HeaderValue::from(total),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The header that carries a paged list's total.
const TOTAL_COUNT: &str = "x-total-count";

/// A page's size when `offset` is given without `limit`.
const DEFAULT_PROJECT_PAGE: u32 = 100;

/// Registers a project and allocates its ports.
#[utoipa::path(post, path = "/api/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = ProjectJson),
        (status = 409, description = "name, slug or path taken, or a requested port held", body = crate::error::ErrorEnvelope),
        (status = 422, description = "invalid input", body = crate::error::ErrorEnvelope)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateProject>,
) -> Result<(StatusCode, Json<ProjectJson>), ApiError> {
    let new = NewProject {
        name: body.name,
        path: PathBuf::from(body.path),
        ports: body.ports.unwrap_or_default(),
        host: body.host,
    };
    let project = state.hub.create_project(new).await?;
    Ok((StatusCode::CREATED, Json(project.into())))
}

/// Counts of projects by status.
#[utoipa::path(get, path = "/api/projects/stats", tag = "projects", responses(
    (status = 200, body = ProjectStats)))]
pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<ProjectStats>, ApiError> {
    Ok(Json(state.hub.stats().await?))
}

/// One project, by id or slug.
#[utoipa::path(get, path = "/api/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "Project id or slug")),
    responses((status = 200, body = ProjectJson), (status = 404, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ProjectJson>, ApiError> {
    Ok(Json(state.hub.project(id).await?.into()))
}

/// Renames (new slug), moves or re-ports a project.
#[utoipa::path(patch, path = "/api/projects/{id}", tag = "projects", request_body = UpdateProject,
    params(("id" = String, Path, description = "Project id or slug")),
    responses((status = 200, body = ProjectJson), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, body = crate::error::ErrorEnvelope), (status = 422, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateProject>,
) -> Result<Json<ProjectJson>, ApiError> {
    let update = ProjectUpdate {
        name: body.name,
        path: body.path.map(PathBuf::from),
        ports: body.ports.unwrap_or_default(),
        host: body.host,
    };
    Ok(Json(state.hub.update_project(id, update).await?.into()))
}

/// Removes a project (its containers and network; its volumes too with `delete_data=true`).
#[utoipa::path(delete, path = "/api/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "Project id or slug"), DeleteQuery),
    responses((status = 200, body = ProjectJson), (status = 404, body = crate::error::ErrorEnvelope),
        (status = 409, description = "an operation on it is running", body = crate::error::ErrorEnvelope)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<Json<ProjectJson>, ApiError> {
    let removed = state
        .hub
        .delete_project(id, query.delete_data.unwrap_or(false))
        .await?;
    Ok(Json(removed.into()))
}
