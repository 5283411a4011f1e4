//! Route handlers. Each one parses, calls the hub, and serialises.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use hub_core::{Project, ProjectStats};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/api/projects", get(list_projects))
        .route("/api/projects/", get(list_projects))
        .route("/api/projects/stats", get(stats))
        .route("/api/projects/{id}", get(get_project))
}

async fn root() -> Json<Value> {
    Json(json!({
        "app": "CommandCenter Hub",
        "version": env!("CARGO_PKG_VERSION"),
        "status": "running",
    }))
}

async fn health(State(state): State<AppState>) -> (axum::http::StatusCode, Json<Value>) {
    match state.hub.registry().database().ping().await {
        Ok(()) => (
            axum::http::StatusCode::OK,
            Json(json!({"status": "healthy", "database": "ok"})),
        ),
        Err(err) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "database": err.to_string()})),
        ),
    }
}

async fn list_projects(State(state): State<AppState>) -> Result<Json<Vec<Project>>, ApiError> {
    Ok(Json(state.hub.projects().await?))
}

async fn get_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Project>, ApiError> {
    Ok(Json(state.hub.project(id).await?))
}

async fn stats(State(state): State<AppState>) -> Result<Json<ProjectStats>, ApiError> {
    Ok(Json(state.hub.stats().await?))
}
