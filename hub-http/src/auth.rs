//! Optional bearer-token authentication.
//!
//! The token comes in the `Authorization` header (`Bearer`, in any case). Only the event-stream
//! routes also take it as `?access_token=` (percent-encoded), because a browser's
//! `EventSource` cannot set headers; everywhere else a token in the URL is not accepted, so it
//! does not end up in logs and histories.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;
use crate::error::HttpCode;

/// The token requests must carry, if any, and whether `/metrics` is open without it.
#[derive(Clone)]
pub(crate) struct Token {
    token: Option<std::sync::Arc<str>>,
    metrics_public: bool,
}

impl Token {
    pub(crate) fn new(token: Option<String>, metrics_public: bool) -> Self {
        Token {
            token: token.filter(|t| !t.is_empty()).map(Into::into),
            metrics_public,
        }
    }
}

/// Whether `path` is an event stream (`/api/events`, `/api/tasks/{id}/events`).
fn is_event_stream(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path == "/api/events" || (path.starts_with("/api/tasks/") && path.ends_with("/events"))
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
fn bearer(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The decoded `access_token` query parameter.
fn query_token(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find_map(|(key, value)| (key == "access_token").then_some(value))
}

pub(crate) async fn require_token(
    State(token): State<Token>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token.token else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    // Health, and the dashboard's page and files: they hold no data, and the page asks for
    // the token before it calls the API.
    let page = path == "/" && crate::ui::wants_page(request.headers());
    let metrics = token.metrics_public && path.trim_end_matches('/') == "/metrics";
    if path == "/health" || path == "/health/" || page || metrics || crate::ui::is_asset(path) {
        return next.run(request).await;
    }
    let given = bearer(&request).or_else(|| {
        is_event_stream(path)
            .then(|| query_token(&request))
            .flatten()
    });
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::http(HttpCode::Unauthorized, "invalid token").into_response(),
        None => ApiError::http(
            HttpCode::Unauthorized,
            "this hub needs a token: send 'Authorization: Bearer <token>' (event streams also \
             take '?access_token=<token>')",
        )
        .into_response(),
    }
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_event_streams_take_a_token_in_the_url() {
        assert!(is_event_stream("/api/events"));
        assert!(is_event_stream("/api/events/"));
        assert!(is_event_stream("/api/tasks/abc/events"));
        assert!(!is_event_stream("/api/tasks"));
        assert!(!is_event_stream("/api/projects"));
    }
}
