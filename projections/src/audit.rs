use async_trait::async_trait;
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

use crate::{occurred_at, Projection};

/// `rm_audit_events`: every event, flattened for auditors' queries.
pub struct AuditEvents;

#[async_trait]
impl Projection for AuditEvents {
    fn name(&self) -> &'static str {
        "audit_events"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_audit_events"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let metadata = serde_json::to_value(&event.metadata).map_err(StoreError::corrupt)?;
        sqlx::query(
            "INSERT INTO rm_audit_events (position, aggregate_type, aggregate_id, sequence, event_type, \
             event_version, actor, occurred_at, payload, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(event.position)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(&event.event_type)
        .bind(&event.event_version)
        .bind(event.metadata.get(event_store::metadata::ACTOR))
        .bind(occurred_at(event)?)
        .bind(&event.payload)
        .bind(metadata)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
