//! One JSON error shape for every failure: `{"error": {"code", "message", "field"?}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hub_core::{ErrorCode, HubError};
use serde::Serialize;

/// An error as the API returns it. Built from a [`HubError`], whose code decides the status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

/// The `error` object of an error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Stable machine-readable code (`not_found`, `invalid_input`, …).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The input field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorBody,
}

/// The HTTP status for an error code; decided here once for every route.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::PortConflict | ErrorCode::Conflict => {
            StatusCode::CONFLICT
        }
        ErrorCode::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::PortUnavailable => StatusCode::CONFLICT,
        ErrorCode::BackendUnavailable | ErrorCode::RuntimeUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error with an explicit status and code, for failures the core never sees (bad JSON…).
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
                field: None,
            },
        }
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        let status = status_for(err.code());
        if status.is_server_error() {
            tracing::error!(error = %err, "request failed");
        }
        ApiError {
            status,
            body: ErrorBody {
                code: err.code().as_str().to_owned(),
                message: err.to_string(),
                field: err.field().map(str::to_owned),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(Envelope { error: &self.body })).into_response()
    }
}
