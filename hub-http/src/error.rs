//! One JSON error shape for every failure:
//! `{"error": {"code", "message", "field"?}, "detail": "<message>"}`.
//!
//! `detail` repeats the message for clients written for the original hub (FastAPI's shape),
//! so they keep showing the hub's messages.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hub_core::{ErrorCode, HubError};
use serde::Serialize;
use utoipa::ToSchema;

/// An error as the API returns it. Built from a [`HubError`], whose code decides the status,
/// or from an [`HttpCode`] for failures of HTTP itself.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

/// The `error` object of an error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`not_found`, `invalid_input`, …).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The input field at fault (`name`, `ports.backend`, `delete_data`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// What went wrong.
    pub error: ErrorBody,
    /// The message again, where the original hub (FastAPI) put it: for its clients.
    pub detail: String,
}

/// Failures of HTTP itself, which the core never sees: every code the API adds to
/// [`ErrorCode`]'s, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCode {
    /// The body is not well-formed JSON (400).
    MalformedJson,
    /// The request is malformed in another way (400).
    BadRequest,
    /// No or a wrong token (401).
    Unauthorized,
    /// No such route (404).
    NotFound,
    /// The route exists, not with this method (405).
    MethodNotAllowed,
    /// The body is larger than the limit (413).
    PayloadTooLarge,
    /// The body is not `application/json` (415).
    UnsupportedMediaType,
    /// A wrong value in the URL or query (422).
    InvalidInput,
    /// Too many connections at once (503).
    Overloaded,
}

impl HttpCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpCode::MalformedJson => "malformed_json",
            HttpCode::BadRequest => "bad_request",
            HttpCode::Unauthorized => "unauthorized",
            HttpCode::NotFound => "not_found",
            HttpCode::MethodNotAllowed => "method_not_allowed",
            HttpCode::PayloadTooLarge => "payload_too_large",
            HttpCode::UnsupportedMediaType => "unsupported_media_type",
            HttpCode::InvalidInput => "invalid_input",
            HttpCode::Overloaded => "overloaded",
        }
    }

    /// The status it is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            HttpCode::MalformedJson | HttpCode::BadRequest => StatusCode::BAD_REQUEST,
            HttpCode::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpCode::NotFound => StatusCode::NOT_FOUND,
            HttpCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HttpCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpCode::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
            HttpCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code a bare status (one no handler made) stands for.
    pub fn for_status(status: StatusCode) -> HttpCode {
        match status {
            StatusCode::UNAUTHORIZED => HttpCode::Unauthorized,
            StatusCode::NOT_FOUND => HttpCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => HttpCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => HttpCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => HttpCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => HttpCode::InvalidInput,
            StatusCode::SERVICE_UNAVAILABLE => HttpCode::Overloaded,
            _ => HttpCode::BadRequest,
        }
    }
}

/// The HTTP status for an error code; decided here once for every route.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::PortConflict | ErrorCode::Conflict => {
            StatusCode::CONFLICT
        }
        ErrorCode::PortUnavailable => StatusCode::CONFLICT,
        ErrorCode::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::BackendUnavailable | ErrorCode::RuntimeUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error of HTTP itself.
    pub fn http(code: HttpCode, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            body: ErrorBody {
                code: code.as_str().to_owned(),
                message: message.into(),
                field: None,
            },
        }
    }

    /// Names the input field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }

    /// Sends it with `status` instead of its code's (for the original's 400 on a file).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The status this error is sent with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        let status = status_for(err.code());
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %err, "request failed");
        } else {
            // The message may quote the caller's input: the log format escapes it.
            tracing::debug!(status = status.as_u16(), error = %err, "request refused");
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

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonSyntaxError(_) => HttpCode::MalformedJson,
            JsonRejection::JsonDataError(_) => HttpCode::InvalidInput,
            JsonRejection::MissingJsonContentType(_) => HttpCode::UnsupportedMediaType,
            JsonRejection::BytesRejection(_) => HttpCode::PayloadTooLarge,
            _ => HttpCode::BadRequest,
        };
        let field = match code {
            HttpCode::InvalidInput | HttpCode::MalformedJson => {
                path_of::<serde_json::Error>(&rejection)
            }
            _ => None,
        };
        let err = ApiError::http(code, rejection.body_text());
        match field {
            Some(field) => err.with_field(field),
            None => err,
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let field = path_of::<serde_urlencoded::de::Error>(&rejection);
        let err = ApiError::http(HttpCode::InvalidInput, rejection.body_text());
        match field {
            Some(field) => err.with_field(field),
            None => err,
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        let code = match &rejection {
            PathRejection::FailedToDeserializePathParams(_) => HttpCode::BadRequest,
            _ => HttpCode::BadRequest,
        };
        ApiError::http(code, rejection.body_text())
    }
}

/// The field at fault (`ports.backend`), from the error chain of an axum rejection: the path
/// serde was at, plus the field an `unknown field` / `missing field` message names. `None` when
/// the error is about the whole input.
fn path_of<E: std::error::Error + 'static>(rejection: &dyn std::error::Error) -> Option<String> {
    let mut source = rejection.source();
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<serde_path_to_error::Error<E>>() {
            let path = found.path().to_string();
            let path = (path != ".").then_some(path);
            let message = found.inner().to_string();
            let named = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|prefix| message.strip_prefix(prefix))
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned);
            return match (path, named) {
                // serde reports an unknown key at the key itself, a missing one at its parent.
                (Some(path), Some(name)) if !path.ends_with(&name) => {
                    Some(format!("{path}.{name}"))
                }
                (Some(path), _) => Some(path),
                (None, named) => named,
            };
        }
        source = err.source();
    }
    None
}

/// The one error shape on the wire.
#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorBody,
    detail: &'a str,
}

impl ApiError {
    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            error: &self.body,
            detail: &self.body.message,
        }
    }

    /// The JSON body, for answers written below axum (the accept loop's 503).
    pub fn to_json(&self) -> String {
        // Strings only: serialising cannot fail.
        serde_json::to_string(&self.envelope()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.envelope())).into_response()
    }
}
