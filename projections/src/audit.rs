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
        sqlx::query(
            "INSERT INTO rm_audit_events (position, aggregate_type, aggregate_id, sequence, event_type, \
             event_version, actor, occurred_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.position)
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(&event.event_type)
        .bind(&event.event_version)
        .bind(event.metadata.get(event_store::metadata::ACTOR))
        .bind(occurred_at(event)?)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn apply_batch(&self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let mut columns = AuditColumns::default();
        for event in events {
            columns.push(event)?;
        }
        sqlx::query(
            "INSERT INTO rm_audit_events (position, aggregate_type, aggregate_id, sequence, event_type, \
             event_version, actor, occurred_at) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], \
                                  $7::text[], $8::timestamptz[])",
        )
        .bind(columns.positions)
        .bind(columns.aggregate_types)
        .bind(columns.aggregate_ids)
        .bind(columns.sequences)
        .bind(columns.event_types)
        .bind(columns.event_versions)
        .bind(columns.actors)
        .bind(columns.occurred_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Column arrays of a batch insert.
#[derive(Default)]
struct AuditColumns {
    positions: Vec<i64>,
    aggregate_types: Vec<String>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    event_versions: Vec<String>,
    actors: Vec<Option<String>>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl AuditColumns {
    fn push(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        self.positions.push(event.position);
        self.aggregate_types.push(event.aggregate_type.clone());
        self.aggregate_ids.push(event.aggregate_id.clone());
        self.sequences.push(event.sequence);
        self.event_types.push(event.event_type.clone());
        self.event_versions.push(event.event_version.clone());
        self.actors.push(event.metadata.get(event_store::metadata::ACTOR).cloned());
        self.occurred_at.push(occurred_at(event)?);
        Ok(())
    }
}
