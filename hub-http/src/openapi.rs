//! `/openapi.json`, generated from the handlers and types.

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes::{events, filesystem, monitor, orchestration, projects, system, tasks};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "CommandCenter Hub", description = "Run many local multi-container project stacks side by side."),
    paths(
        system::root, system::health, system::metrics, system::monitoring,
        projects::list, projects::create, projects::stats, projects::get, projects::update, projects::delete,
        orchestration::start, orchestration::stop, orchestration::restart, orchestration::restart_service,
        orchestration::status, orchestration::logs, orchestration::reconcile, orchestration::stack,
        tasks::list, tasks::status, tasks::status_alias, tasks::revoke, tasks::cancel,
        events::task_events, events::all_events,
        filesystem::home, filesystem::browse,
        monitor::overview, monitor::workers, monitor::queues, monitor::tasks, monitor::task,
        monitor::stats, monitor::alerts,
    ),
    components(schemas(crate::error::ErrorEnvelope, crate::error::ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "system"), (name = "projects", description = "The registry"),
        (name = "orchestration", description = "Stacks on the container engine"),
        (name = "tasks", description = "Background tasks, history and push events"),
        (name = "filesystem", description = "Folder browser for adding projects"),
        (name = "monitor", description = "Workers, queues, task history, stats and alerts"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
