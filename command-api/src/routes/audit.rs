//! `/api/v1/audit`: the event history, chain verification and the security log, for
//! auditors and admins.

use axum::extract::State;
use axum::response::Response;
use domain::user::Role;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, RequestInfo};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::read::{position_of, with_position, Consistency};
use crate::state::AppState;
use crate::views::{cursor, page_limit};

const STAFF: &[Role] = &[Role::Admin, Role::Auditor];

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Return events after this global position.
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub actor: Option<String>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventsPage {
    pub items: Vec<AuditEvent>,
    /// Pass as `after` for the next page; absent at the end.
    pub next_after: Option<i64>,
}

/// Events in position order, up to what the relay has published.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = AuditEventsPage), (status = 403, body = crate::error::Problem)))]
pub async fn audit_events(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    consistency: Consistency,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    caller.require_any(&state, &info, STAFF).await?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid_field("after", "invalid", "must be a non-negative position"));
    }
    let limit = page_limit(query.limit)?;
    let position = position_of(&state, &["audit_events"], consistency.0).await?;
    let rows = sqlx::query(
        "SELECT a.position, a.aggregate_type, a.aggregate_id, a.sequence, a.event_type, a.event_version, a.actor, \
                a.occurred_at, e.canonical \
         FROM rm_audit_events a JOIN events e ON e.position = a.position \
         WHERE a.position > $1 ORDER BY a.position LIMIT $2",
    )
    .bind(after)
    .bind(limit + 1)
    .fetch_all(state.store.pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let items = rows.iter().take(limit as usize).map(audit_event).collect::<Result<Vec<_>, ApiError>>()?;
    let next_after = more.then(|| items.last().map(|e| e.position)).flatten();
    Ok(with_position(position, axum::Json(AuditEventsPage { items, next_after })))
}

/// A row of the audit read model, with its payload and metadata from the stored event.
fn audit_event(row: &sqlx::postgres::PgRow) -> Result<AuditEvent, ApiError> {
    let stored = event_store::RecordedEvent::from_canonical(row.get("canonical")).map_err(|error| {
        tracing::error!(%error, position = row.get::<i64, _>("position"), "a stored event does not parse");
        ApiError::internal()
    })?;
    Ok(AuditEvent {
        position: row.get("position"),
        aggregate_type: row.get("aggregate_type"),
        aggregate_id: row.get("aggregate_id"),
        sequence: row.get("sequence"),
        event_type: row.get("event_type"),
        event_version: row.get("event_version"),
        actor: row.get("actor"),
        occurred_at: row.get("occurred_at"),
        payload: stored.payload,
        metadata: serde_json::to_value(&stored.metadata).map_err(|_| ApiError::internal())?,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyView {
    pub ok: bool,
    pub streams: u64,
    pub events: u64,
    pub checkpoints: u64,
    pub first_problem: Option<String>,
}

/// Walks every hash chain now and reports the first problem, if any.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = VerifyView), (status = 403, body = crate::error::Problem)))]
pub async fn audit_verify(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
) -> Result<Response, ApiError> {
    caller.require_any(&state, &info, STAFF).await?;
    let report = event_store::verify::verify(state.store.pool()).await?;
    let view = VerifyView {
        ok: report.ok(),
        streams: report.streams,
        events: report.events,
        checkpoints: report.checkpoints,
        first_problem: report.first_problem,
    };
    Ok(axum::response::IntoResponse::into_response(axum::Json(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SecurityQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecurityEntry {
    pub id: i64,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub kind: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub code: Option<String>,
    pub request_id: Option<uuid::Uuid>,
    pub ip: Option<String>,
    pub details: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecurityPage {
    pub items: Vec<SecurityEntry>,
    pub next_cursor: Option<String>,
}

/// The security log: logins, refusals, role changes and rejected commands, oldest first.
#[utoipa::path(get, path = "/api/v1/audit/security", tag = "audit", security(("bearer" = [])), params(SecurityQuery),
    responses((status = 200, body = SecurityPage), (status = 403, body = crate::error::Problem)))]
pub async fn audit_security(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    ApiQuery(query): ApiQuery<SecurityQuery>,
) -> Result<Response, ApiError> {
    caller.require_any(&state, &info, STAFF).await?;
    let after = cursor::decode(query.cursor.as_deref())?;
    let limit = page_limit(query.limit)?;
    let rows = sqlx::query(
        "SELECT id, occurred_at, kind, actor, subject, code, request_id, ip, details FROM security_audit \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit + 1)
    .fetch_all(state.store.pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<SecurityEntry> = rows
        .iter()
        .take(limit as usize)
        .map(|row| SecurityEntry {
            id: row.get("id"),
            occurred_at: row.get("occurred_at"),
            kind: row.get("kind"),
            actor: row.get("actor"),
            subject: row.get("subject"),
            code: row.get("code"),
            request_id: row.get("request_id"),
            ip: row.get("ip"),
            details: row.get("details"),
        })
        .collect();
    let next_cursor = more.then(|| items.last().map(|e| cursor::encode(e.id))).flatten();
    Ok(axum::response::IntoResponse::into_response(axum::Json(SecurityPage { items, next_cursor })))
}
