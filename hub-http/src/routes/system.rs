//! `/`, `/health`, `/openapi.json`, `/api/monitoring`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hub_core::tasks::BackendStats;

use crate::dto::{HealthJson, RootJson};
use crate::{ApiError, AppState};

/// The app's name, version and status; a browser asking for a page gets the dashboard.
#[utoipa::path(get, path = "/", tag = "system", responses((status = 200, body = RootJson)))]
pub(crate) async fn root(headers: HeaderMap) -> Response {
    if crate::ui::wants_page(&headers) {
        return crate::ui::page();
    }
    Json(RootJson {
        app: "CommandCenter Hub".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        status: "running".into(),
    })
    .into_response()
}

/// Health of the hub and its parts, as a background probe last found them (every 5 s, each
/// check under 2 s): `ok`, `unknown` (not checked yet) or what failed. `status` is `healthy`,
/// `degraded` (the task store does not answer; changes wait and are retried) or `unhealthy` (no
/// database: 503). Docker being down is reported but does not make the hub unhealthy.
#[utoipa::path(get, path = "/health", tag = "system", responses(
    (status = 200, body = HealthJson), (status = 503, body = HealthJson)))]
pub(crate) async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthJson>) {
    // From memory: a background probe keeps it current, so this never waits on a dependency.
    let report = state.hub.health();
    let healthy = report.healthy();
    let body = HealthJson {
        status: report.status().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        database: report.database.describe(),
        task_backend: report.task_backend.describe(),
        docker: report.docker.describe(),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Workers, queues, task history and rates (what Flower showed).
#[utoipa::path(get, path = "/api/monitoring", tag = "tasks", responses(
    (status = 200, body = BackendStats)))]
pub(crate) async fn monitoring(
    State(state): State<AppState>,
) -> Result<Json<BackendStats>, ApiError> {
    Ok(Json(state.hub.task_stats().await?))
}

/// The hub's figures in the Prometheus text format: tasks finished by kind and state, queue
/// depth, tasks running, workers online, projects by status.
#[utoipa::path(get, path = "/metrics", tag = "system", responses(
    (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.hub.metrics().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            hub_core::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}
