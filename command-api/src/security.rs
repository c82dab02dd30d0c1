//! The security audit log: logins, refusals (401/403), role changes and rejected commands.
//! Writing it must never fail a request: a failure is logged and the request goes on.

use serde_json::Value;

use crate::auth::RequestInfo;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct SecurityEvent {
    pub kind: &'static str,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub code: Option<String>,
    pub info: RequestInfo,
    pub details: Value,
}

impl SecurityEvent {
    pub fn new(kind: &'static str, info: &RequestInfo) -> SecurityEvent {
        let details = serde_json::json!({"method": info.method, "path": info.path});
        SecurityEvent { kind, actor: None, subject: None, code: None, info: info.clone(), details }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Adds fields to the details (method and path are always there).
    pub fn details(mut self, extra: Value) -> Self {
        if let (Value::Object(details), Value::Object(extra)) = (&mut self.details, extra) {
            details.extend(extra);
        }
        self
    }
}

pub async fn record(state: &AppState, event: SecurityEvent) {
    let result = sqlx::query(
        "INSERT INTO security_audit (kind, actor, subject, code, request_id, ip, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.kind)
    .bind(&event.actor)
    .bind(&event.subject)
    .bind(&event.code)
    .bind(event.info.request_id)
    .bind(&event.info.ip)
    .bind(&event.details)
    .execute(state.store.pool())
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, kind = event.kind, "security audit entry not written");
    }
}
