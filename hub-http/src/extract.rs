//! Extractors whose rejections use the API's error shape instead of axum's plain text.

use axum::extract::{FromRequest, FromRequestParts};

use crate::ApiError;

/// A JSON body; malformed JSON is a 400, wrong types a 422, an oversize body a 413.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// Query parameters; wrong types are a 422 naming the parameter.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
