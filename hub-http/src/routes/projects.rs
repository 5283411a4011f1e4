//! `/api/projects`: the registry.

use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hub_core::{NewProject, ProjectStats, ProjectUpdate};

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
    let (projects, total) = match (page.limit, page.offset) {
        (None, None) => {
            let projects = state.hub.projects().await?;
            let total = projects.len() as u64;
            (projects, total)
        }
        (limit, offset) => {
            let page = state
                .hub
                .projects_page(limit.unwrap_or(DEFAULT_PROJECT_PAGE), offset.unwrap_or(0))
                .await?;
            (page.projects, page.total)
        }
    };
    let body: Vec<ProjectJson> = projects.into_iter().map(ProjectJson::from).collect();
    Ok(([(TOTAL_COUNT, total.to_string())], Json(body)).into_response())
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
