//! `GET /openapi.json`: the hand-written OpenAPI 3 document of the whole API.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, checked by a test against [`super::ROUTES`].
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
