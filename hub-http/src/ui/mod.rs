//! The web dashboard: one page and its script and styles, embedded in the binary and served
//! from it. Nothing is fetched from another host, and a strict Content-Security-Policy says so
//! to the browser: scripts, styles and connections come from this origin only.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLES: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/icon.svg");

/// Only this origin's files; no inline script or style, no frames, no plugins.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether the request comes from a browser asking for a page (`Accept: text/html`), rather
/// than an API client asking for JSON.
pub(crate) fn wants_page(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Whether `path` is one of the dashboard's files: served without a token, since they hold no
/// data (the page asks for the token before it asks the API for anything).
pub(crate) fn is_asset(path: &str) -> bool {
    path.starts_with("/ui/")
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The dashboard page.
pub(crate) fn page() -> Response {
    let mut response = file("text/html; charset=utf-8", INDEX);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub(crate) async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn styles() -> Response {
    file("text/css; charset=utf-8", STYLES)
}

pub(crate) async fn icon() -> Response {
    file("image/svg+xml", ICON)
}
