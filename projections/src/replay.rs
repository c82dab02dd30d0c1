//! Rebuilding read models from the event store alone: into a separate schema (point in
//! time), or in place of the live tables.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::{Store, StoreError};
use sqlx::{Connection, PgConnection};

use crate::runner::CATCH_UP_BATCH_MAX;
use crate::Projection;

#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub schema: String,
    pub projections: Vec<&'static str>,
    pub events: u64,
    pub position: i64,
    pub elapsed: Duration,
}

/// Schema a live rebuild fills before it swaps the result in.
const REBUILD_SCHEMA: &str = "ecoledger_rebuild";

/// Replays events up to `to_position` (capped at the relay's published watermark) into fresh
/// copies of the projections' tables in `schema`. The live tables are never touched.
pub async fn replay_into_schema(
    store: &Store,
    projections: &[Arc<dyn Projection>],
    schema: &str,
    to_position: i64,
) -> Result<ReplayReport, StoreError> {
    if schema == "public" || !is_identifier(schema) {
        return Err(StoreError::corrupt(format!("{schema:?} is not a usable replay schema name")));
    }
    let started = Instant::now();
    let up_to = to_position.min(store.published_position().await?);
    let mut conn = store.pool().acquire().await?;
    create_schema(&mut conn, projections, schema).await?;
    let mut position = 0;
    let mut events_applied = 0;
    loop {
        let events = store.read_range(&mut conn, position, up_to, CATCH_UP_BATCH_MAX).await?;
        let Some(last) = events.last().map(|e| e.position) else { break };
        let mut tx = conn.begin().await?;
        sqlx::query(&format!("SET LOCAL search_path TO {schema}, public")).execute(&mut *tx).await?;
        for projection in projections {
            projection.apply_batch(&mut tx, &events).await?;
            crate::checkpoint::advance(&mut tx, projection.name(), position, last).await?;
        }
        tx.commit().await?;
        events_applied += events.len() as u64;
        position = last;
    }
    let names = projections.iter().map(|p| p.name()).collect();
    Ok(ReplayReport {
        schema: schema.to_string(),
        projections: names,
        events: events_applied,
        position,
        elapsed: started.elapsed(),
    })
}

async fn create_schema(
    conn: &mut PgConnection,
    projections: &[Arc<dyn Projection>],
    schema: &str,
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut *tx).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut *tx).await?;
    sqlx::query(&format!(
        "CREATE TABLE {schema}.projection_checkpoints (LIKE public.projection_checkpoints INCLUDING ALL)"
    ))
    .execute(&mut *tx)
    .await?;
    for projection in projections {
        for table in projection.tables() {
            sqlx::query(&format!("CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!("INSERT INTO {schema}.projection_checkpoints (name, position) VALUES ($1, 0)"))
            .bind(projection.name())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Rebuilds the live read models: replays into a side schema, then swaps the result into the
/// live tables in one transaction. A live projector that was further along finds its
/// checkpoint moved, reloads it and catches up from Postgres.
pub async fn rebuild_live(store: &Store, projections: &[Arc<dyn Projection>]) -> Result<ReplayReport, StoreError> {
    let report = replay_into_schema(store, projections, REBUILD_SCHEMA, i64::MAX).await?;
    let mut conn = store.pool().acquire().await?;
    let mut tx = conn.begin().await?;
    for projection in projections {
        for table in projection.tables() {
            sqlx::query(&format!("LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await?;
            sqlx::query(&format!("DELETE FROM public.{table}")).execute(&mut *tx).await?;
            sqlx::query(&format!("INSERT INTO public.{table} SELECT * FROM {REBUILD_SCHEMA}.{table}"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO public.projection_checkpoints (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
        )
        .bind(projection.name())
        .bind(report.position)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!("DROP SCHEMA {REBUILD_SCHEMA} CASCADE")).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(ReplayReport { schema: "public".to_string(), ..report })
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 63
}
