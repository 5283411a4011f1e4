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

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use hub_core::Hub;
use hub_core::browse::FolderBrowser;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

pub use dto::{ProjectJson, TaskAccepted, TaskStatusJson};
pub use error::ApiError;

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
            auth::Token::new(options.token.clone()),
            auth::require_token,
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
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            )
        })
        .with_state(state)
}
