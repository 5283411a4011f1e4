//! `/api/monitor/...`: Flower's views (workers, queues, task history and detail, window stats)
//! and the alerts, as the core computes them.

use axum::Json;
use axum::extract::{Path, State};
use hub_core::HubError;
use hub_core::monitor::{
    self, Alert, MonitorOverview, QueueView, TaskDetail, TaskHistoryPage, WindowStats, WorkersView,
};
use hub_core::tasks::{DEFAULT_LIST_LIMIT, TaskQuery, TaskSort, TaskState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::tasks::task_id;
use crate::extract::Query;
use crate::{ApiError, AppState};

/// Workers, queues, the last hour's stats and the alerts in one answer (the Monitor page's).
#[utoipa::path(get, path = "/api/monitor", tag = "monitor",
    responses((status = 200, body = MonitorOverview)))]
pub(crate) async fn overview(
    State(state): State<AppState>,
) -> Result<Json<MonitorOverview>, ApiError> {
    Ok(Json(state.hub.monitor_overview().await?))
}

/// Workers: online from their heartbeats; offline ones until they age out.
#[utoipa::path(get, path = "/api/monitor/workers", tag = "monitor",
    responses((status = 200, body = WorkersView)))]
pub(crate) async fn workers(State(state): State<AppState>) -> Result<Json<WorkersView>, ApiError> {
    Ok(Json(state.hub.monitor_workers().await?))
}

/// `GET /api/monitor/queues`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct QueuesJson {
    /// Every queue used, by name.
    pub queues: Vec<QueueView>,
}

/// Queues: depth, running tasks, oldest waiting task, consumers.
#[utoipa::path(get, path = "/api/monitor/queues", tag = "monitor",
    responses((status = 200, body = QueuesJson)))]
pub(crate) async fn queues(State(state): State<AppState>) -> Result<Json<QueuesJson>, ApiError> {
    Ok(Json(QueuesJson {
        queues: state.hub.monitor_queues().await?,
    }))
}

/// Filters, search, order and page of `GET /api/monitor/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct MonitorTasksQuery {
    /// One state or several, comma-separated (`FAILURE,REVOKED`).
    pub state: Option<String>,
    /// Job kind.
    pub kind: Option<String>,
    /// Project id or name.
    pub project: Option<String>,
    /// Worker id (as task records name it).
    pub worker: Option<String>,
    /// Text searched in the id, kind, queue, worker, step line and error (case-insensitive).
    pub q: Option<String>,
    /// `received` (default), `started` or `runtime`.
    pub sort: Option<String>,
    /// `desc` (default: newest, longest first) or `asc`.
    pub order: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Tasks skipped before the page.
    pub offset: Option<u32>,
}

/// Task history: filtered, searched, sorted and paged, with the total.
#[utoipa::path(get, path = "/api/monitor/tasks", tag = "monitor", params(MonitorTasksQuery),
    responses((status = 200, body = TaskHistoryPage), (status = 422, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn tasks(
    State(state): State<AppState>,
    Query(query): Query<MonitorTasksQuery>,
) -> Result<Json<TaskHistoryPage>, ApiError> {
    let project_id = match query.project.as_deref().map(str::trim) {
        Some(key) if !key.is_empty() => Some(state.hub.project(key).await?.id),
        _ => None,
    };
    let ascending = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(HubError::invalid(
                "order",
                format!(
                    "'{}' is not an order: use asc or desc",
                    other.escape_debug()
                ),
            )
            .into());
        }
    };
    let query = TaskQuery {
        states: match &query.state {
            Some(text) => TaskState::parse_list(text)?,
            None => Vec::new(),
        },
        kind: query.kind.filter(|k| !k.is_empty()),
        project_id,
        worker: query.worker.filter(|w| !w.is_empty()),
        search: query.q.filter(|q| !q.is_empty()),
        sort: match &query.sort {
            Some(sort) => sort.parse::<TaskSort>()?,
            None => TaskSort::Received,
        },
        ascending,
        limit: query.limit.unwrap_or(DEFAULT_LIST_LIMIT),
        offset: query.offset.unwrap_or(0),
        ..TaskQuery::default()
    };
    Ok(Json(state.hub.monitor_tasks(&query).await?))
}

/// One task: its status, result or error, and the timeline of its changes.
#[utoipa::path(get, path = "/api/monitor/tasks/{task_id}", tag = "monitor",
    params(("task_id" = String, Path)),
    responses((status = 200, body = TaskDetail), (status = 404, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn task(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TaskDetail>, ApiError> {
    Ok(Json(state.hub.monitor_task(task_id(&raw)?).await?))
}

/// `?window=` of the stats.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct WindowQuery {
    /// Seconds, or a number with s, m, h or d (`15m`, `1h`); default 1 h, at most 24 h.
    pub window: Option<String>,
}

/// Throughput per minute, outcome rates, runtime and queue-wait percentiles over a window.
#[utoipa::path(get, path = "/api/monitor/stats", tag = "monitor", params(WindowQuery),
    responses((status = 200, body = WindowStats), (status = 422, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    Query(query): Query<WindowQuery>,
) -> Result<Json<WindowStats>, ApiError> {
    let window = monitor::window(query.window.as_deref())?;
    Ok(Json(state.hub.monitor_stats(window).await?))
}

/// `GET /api/monitor/alerts`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AlertsJson {
    /// Alerts firing now, most urgent first.
    pub alerts: Vec<Alert>,
    /// The thresholds in force.
    pub thresholds: monitor::AlertThresholds,
}

/// The alerts firing now, with the thresholds in force.
#[utoipa::path(get, path = "/api/monitor/alerts", tag = "monitor",
    responses((status = 200, body = AlertsJson)))]
pub(crate) async fn alerts(State(state): State<AppState>) -> Result<Json<AlertsJson>, ApiError> {
    Ok(Json(AlertsJson {
        alerts: state.hub.monitor_alerts().await?,
        thresholds: state.hub.config().monitor.alerts.clone(),
    }))
}
