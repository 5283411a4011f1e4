//! `/api/filesystem`: the folder browser, confined to the configured roots.

use axum::Json;
use axum::extract::State;
use hub_core::browse::FolderListing;

use crate::dto::{BrowseQuery, HomeJson};
use crate::extract::Query;
use crate::{ApiError, AppState};

/// Where browsing starts.
#[utoipa::path(get, path = "/api/filesystem/home", tag = "filesystem",
    responses((status = 200, body = HomeJson)))]
pub(crate) async fn home(State(state): State<AppState>) -> Result<Json<HomeJson>, ApiError> {
    let home = state.browser.home()?;
    Ok(Json(HomeJson {
        path: home.display().to_string(),
    }))
}

/// Sub-folders of `path`, sorted, hidden ones skipped. Outside the roots: 403; missing: 404;
/// not a folder: 400.
#[utoipa::path(get, path = "/api/filesystem/browse", tag = "filesystem", params(BrowseQuery),
    responses((status = 200, body = FolderListing), (status = 400, body = crate::error::ErrorEnvelope),
        (status = 403, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn browse(
    State(state): State<AppState>,
    Query(query): Query<BrowseQuery>,
) -> Result<Json<FolderListing>, ApiError> {
    match state.browser.list_async(query.path).await {
        Ok(listing) => Ok(Json(listing)),
        // The original answered 400 for "not a directory".
        Err(err @ hub_core::HubError::InvalidInput { .. }) => {
            Err(ApiError::from(err).with_status(axum::http::StatusCode::BAD_REQUEST))
        }
        Err(err) => Err(err.into()),
    }
}
