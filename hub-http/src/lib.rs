//! # hub-http
//!
//! A thin axum service over [`hub_core::Hub`]: routes translate HTTP to hub calls and
//! [`HubError`](hub_core::HubError) codes to statuses; no rule of the hub lives here.

mod auth;
pub mod dto;
pub mod error;
pub mod extract;
pub mod openapi;
mod routes;
pub mod server;
mod ui;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hub_core::Hub;
use hub_core::browse::FolderBrowser;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

pub use dto::{ProjectJson, TaskAccepted, TaskStatusJson};
pub use error::{ApiError, HttpCode};

/// How the API is served, beyond the hub itself.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// When set, every route but `/health` needs `Authorization: Bearer <token>` (or, for
    /// browsers' `EventSource`, `?access_token=<token>`).
    pub token: Option<String>,
    /// Origins allowed by CORS; empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Folders the browser may list (default: the user's home).
    pub browse_roots: Vec<PathBuf>,
    /// Largest request body accepted, in bytes (default 1 MiB).
    pub body_limit: Option<usize>,
    /// Serve `/metrics` without the token (for a scraper on a trusted network).
    pub metrics_public: bool,
}

/// The application state every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The hub being served.
    pub hub: Hub,
    browser: Arc<FolderBrowser>,
}

/// The full router of the API for `hub`, with default options.
pub fn router(hub: Hub) -> Router {
    router_with(hub, &ServeOptions::default())
}

/// The full router of the API for `hub`.
pub fn router_with(hub: Hub, options: &ServeOptions) -> Router {
    let state = AppState {
        hub,
        browser: Arc::new(FolderBrowser::new(&options.browse_roots)),
    };
    let mut router = routes::routes()
        .layer(axum::middleware::from_fn_with_state(
            auth::Token::new(options.token.clone(), options.metrics_public),
            auth::require_token,
        ))
        // Outside the token check, so refused requests are counted too.
        .layer(axum::middleware::from_fn_with_state(
            state.hub.clone(),
            record_request,
        ))
        .layer(DefaultBodyLimit::max(
            options.body_limit.unwrap_or(1024 * 1024),
        ))
        .layer(TraceLayer::new_for_http());
    let origins: Vec<HeaderValue> = options
        .cors_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if !origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("last-event-id"),
                ]),
        );
    }
    router
        .fallback(|| async { ApiError::http(HttpCode::NotFound, "no such route") })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Counts a request and its latency (to its response head) in the hub's HTTP figures, under
/// its route's template: ids in paths never become labels.
async fn record_request(
    State(hub): State<Hub>,
    route: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    // Each route answers with and without a trailing slash: one series for both.
    let route = match route.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => route,
    };
    hub.http_metrics().record(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Turns the errors no handler shaped — axum's plain-text rejections (a path that is not
/// UTF-8), its empty 405 — into the API's one JSON shape, keeping their status and headers
/// (`Allow`).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let code = HttpCode::for_status(status);
    let message = match String::from_utf8_lossy(&text).trim() {
        "" if status == StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("this route does not take that method (allowed: {allowed})")
        }
        "" => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
        text => text.to_owned(),
    };
    let mut json = ApiError::http(code, message).into_response();
    *json.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}
