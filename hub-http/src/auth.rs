//! Optional bearer-token authentication.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The token requests must carry, if any.
#[derive(Clone)]
pub(crate) struct Token(Option<std::sync::Arc<str>>);

impl Token {
    pub(crate) fn new(token: Option<String>) -> Self {
        Token(token.filter(|t| !t.is_empty()).map(Into::into))
    }
}

pub(crate) async fn require_token(
    State(token): State<Token>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token.0 else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/health" || path == "/health/" {
        return next.run(request).await;
    }
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    // Browsers' EventSource cannot send headers: accept the token as a query parameter too.
    let from_query = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token=").map(str::to_owned))
    });
    match from_header.or(from_query) {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token").into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this hub needs a token: send 'Authorization: Bearer <token>'",
        )
        .into_response(),
    }
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
