//! The route table. Every path answers with and without a trailing slash.

pub(crate) mod events;
pub(crate) mod filesystem;
pub(crate) mod monitor;
pub(crate) mod orchestration;
pub(crate) mod projects;
pub(crate) mod system;
pub(crate) mod tasks;

use axum::Router;
use axum::routing::{MethodRouter, delete, get, post};

use crate::AppState;

/// Adds `route` at `path` and at `path/`.
fn both(router: Router<AppState>, path: &str, route: MethodRouter<AppState>) -> Router<AppState> {
    if path == "/" {
        return router.route(path, route);
    }
    router
        .route(path, route.clone())
        .route(&format!("{path}/"), route)
}

pub(crate) fn routes() -> Router<AppState> {
    let table: Vec<(&str, MethodRouter<AppState>)> = vec![
        ("/", get(system::root)),
        ("/ui/app.js", get(crate::ui::script)),
        ("/ui/app.css", get(crate::ui::styles)),
        ("/ui/icon.svg", get(crate::ui::icon)),
        ("/health", get(system::health)),
        ("/metrics", get(system::metrics)),
        ("/openapi.json", get(crate::openapi::serve)),
        ("/api/monitoring", get(system::monitoring)),
        ("/api/monitor", get(monitor::overview)),
        ("/api/monitor/workers", get(monitor::workers)),
        ("/api/monitor/queues", get(monitor::queues)),
        ("/api/monitor/tasks", get(monitor::tasks)),
        ("/api/monitor/tasks/{task_id}", get(monitor::task)),
        ("/api/monitor/stats", get(monitor::stats)),
        ("/api/monitor/alerts", get(monitor::alerts)),
        ("/api/projects", get(projects::list).post(projects::create)),
        ("/api/projects/stats", get(projects::stats)),
        (
            "/api/projects/{id}",
            get(projects::get)
                .patch(projects::update)
                .delete(projects::delete),
        ),
        ("/api/projects/{id}/stack", get(orchestration::stack)),
        ("/api/orchestration/{id}/start", post(orchestration::start)),
        ("/api/orchestration/{id}/stop", post(orchestration::stop)),
        (
            "/api/orchestration/{id}/restart",
            post(orchestration::restart),
        ),
        (
            "/api/orchestration/{id}/restart/{service}",
            post(orchestration::restart_service),
        ),
        ("/api/orchestration/{id}/status", get(orchestration::status)),
        (
            "/api/orchestration/{id}/logs/{service}",
            get(orchestration::logs),
        ),
        (
            "/api/v1/projects/{id}/logs/{service}",
            get(orchestration::logs),
        ),
        ("/api/reconcile", post(orchestration::reconcile)),
        ("/api/tasks", get(tasks::list)),
        (
            "/api/tasks/{task_id}",
            delete(tasks::cancel).get(tasks::status),
        ),
        ("/api/tasks/{task_id}/status", get(tasks::status)),
        ("/api/task-status/{task_id}", get(tasks::status_alias)),
        ("/api/tasks/{task_id}/revoke", post(tasks::revoke)),
        ("/api/tasks/{task_id}/events", get(events::task_events)),
        ("/api/events", get(events::all_events)),
        ("/api/filesystem/home", get(filesystem::home)),
        ("/api/filesystem/browse", get(filesystem::browse)),
    ];
    table
        .into_iter()
        .fold(Router::new(), |router, (path, route)| {
            both(router, path, route)
        })
}
