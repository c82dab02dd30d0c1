//! The REST command and query API (DESIGN.md section 6).

pub mod auth;
pub mod claims;
pub mod commands;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod price_stream;
pub mod read;
pub mod registration;
pub mod routes;
pub mod security;
pub mod state;
pub mod telemetry;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use auth::Jwt;
pub use error::ApiError;
pub use state::{ApiConfig, AppState, ChainApiConfig};

/// The whole HTTP application: API routes, OpenAPI and docs, request ids, metrics, limits.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(telemetry::REQUEST_ID_HEADER);
    routes::api_routes()
        .fallback(|| async { ApiError::not_found("route_not_found", "no such route") })
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", openapi::ApiDoc::openapi()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), telemetry::track))
        .layer(DefaultBodyLimit::max(extract::BODY_BYTES_MAX))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
