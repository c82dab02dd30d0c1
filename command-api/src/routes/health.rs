//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::Encoder;
use serde_json::json;

use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn health_live() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Postgres and NATS are reachable.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "A dependency is unreachable")))]
pub async fn health_ready(State(state): State<AppState>) -> Response {
    let postgres = sqlx::query("SELECT 1").execute(state.store.pool()).await.is_ok();
    let nats = match &state.nats {
        Some(client) => client.connection_state() == async_nats::connection::State::Connected,
        None => true,
    };
    let status = if postgres && nats { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "postgres": if postgres { "up" } else { "down" },
        "nats": if nats { "up" } else { "down" },
    });
    (status, axum::Json(body)).into_response()
}

/// Prometheus metrics in the text exposition format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut buffer = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode(&state.metrics.registry.gather(), &mut buffer).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, encoder.format_type().to_string())], buffer).into_response()
}
