//! `/`, `/health`, `/openapi.json`, `/api/monitoring`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hub_core::tasks::BackendStats;

use crate::dto::{HealthJson, RootJson};
use crate::{ApiError, AppState};

/// The app's name, version and status.
#[utoipa::path(get, path = "/", tag = "system", responses((status = 200, body = RootJson)))]
pub(crate) async fn root() -> Json<RootJson> {
    Json(RootJson {
        app: "CommandCenter Hub".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        status: "running".into(),
    })
}

/// Health of the hub and its parts. 200 while the hub can serve, 503 when its database is
/// unreachable; Docker being down is reported but does not make the hub unhealthy.
#[utoipa::path(get, path = "/health", tag = "system", responses(
    (status = 200, body = HealthJson), (status = 503, body = HealthJson)))]
pub(crate) async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthJson>) {
    let hub = &state.hub;
    let database = hub.registry().database().ping().await;
    let task_backend = hub.task_stats().await.map(|_| ());
    let docker = hub.runtime().ping().await.map(|_| ());
    let text = |r: &hub_core::Result<()>| match r {
        Ok(()) => "ok".to_owned(),
        Err(err) => err.to_string(),
    };
    let healthy = database.is_ok();
    let body = HealthJson {
        status: if healthy { "healthy" } else { "unhealthy" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        database: text(&database),
        task_backend: text(&task_backend),
        docker: text(&docker),
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
