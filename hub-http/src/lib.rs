//! # hub-http
//!
//! A thin axum service over [`hub_core::Hub`]: routes translate HTTP to hub calls and
//! [`HubError`](hub_core::HubError) codes to statuses; no rule of the hub lives here.

pub mod error;
mod routes;

use axum::Router;
use hub_core::Hub;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

/// The application state every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The hub being served.
    pub hub: Hub,
}

/// The full router of the API for `hub`.
pub fn router(hub: Hub) -> Router {
    routes::routes()
        .layer(TraceLayer::new_for_http())
        .with_state(AppState { hub })
}
