//! Read-your-writes: every query says which position its read model reached, and may wait a
//! bounded time for a position the client already saw (DESIGN.md section 5).

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

pub const LEDGER_POSITION_HEADER: &str = "ledger-position";
/// How often a `min_position` wait looks at the checkpoints again.
const MIN_POSITION_POLL: Duration = Duration::from_millis(5);

/// The `min_position` query parameter, if any.
pub struct Consistency(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for Consistency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let Some((_, value)) = pairs.iter().find(|(name, _)| name == "min_position") else {
            return Ok(Consistency(None));
        };
        match value.parse::<i64>() {
            Ok(position) if position >= 0 => Ok(Consistency(Some(position))),
            _ => Err(ApiError::invalid_field("min_position", "invalid", "must be a non-negative integer")),
        }
    }
}

/// The position every one of `projections` has reached, after waiting (bounded) until it is
/// at least `min_position`.
pub async fn position_of(state: &AppState, projections: &[&str], min_position: Option<i64>) -> Result<i64, ApiError> {
    let started = Instant::now();
    loop {
        let reached: Option<i64> = sqlx::query_scalar(
            "SELECT min(COALESCE(c.position, 0)) FROM unnest($1::text[]) AS p(name) \
             LEFT JOIN projection_checkpoints c ON c.name = p.name",
        )
        .bind(projections)
        .fetch_one(state.store.pool())
        .await?;
        let reached = reached.unwrap_or(0);
        match min_position {
            Some(wanted) if reached < wanted => {
                if started.elapsed() >= state.config.min_position_wait_max {
                    return Err(ApiError::unavailable(
                        "projection_lagging",
                        format!("the read model reached position {reached}, not yet {wanted}; retry shortly"),
                        1,
                    ));
                }
                tokio::time::sleep(MIN_POSITION_POLL).await;
            }
            _ => return Ok(reached),
        }
    }
}

/// A query's JSON answer with its `Ledger-Position`.
pub fn with_position(position: i64, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(LEDGER_POSITION_HEADER, HeaderValue::from(position));
    response
}

/// The `as_of` query parameter: an RFC 3339 time, or 422 `validation_failed`.
pub fn parse_as_of(value: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    value
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|time| time.to_utc())
                .map_err(|_| ApiError::invalid_field("as_of", "invalid", "must be an RFC 3339 time"))
        })
        .transpose()
}
