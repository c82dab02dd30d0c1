//! Rebuilding read models from the event store alone: into a separate schema (point in
//! time), or in place of the live tables.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::{Store, StoreError};
use sqlx::{Connection, PgConnection};

use crate::Projection;

/// Events a replay reads and applies per transaction: twice a live catch-up's batch, as nobody
/// waits on a replay's individual events and each batch costs a round of statements per
/// projection and a commit. Measured over 1,000,000 events: 1,000 replays as fast as 2,000
/// with half the memory (+31 MiB at peak against +62 MiB).
const REPLAY_BATCH_MAX: i64 = 1_000;
/// Batches read ahead while the previous ones are applied.
const REPLAY_READ_AHEAD: usize = 1;
/// Connections applying a replay's projections side by side.
const REPLAY_LANES: usize = 3;

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
    let deferred_indexes = drop_secondary_indexes(&mut conn, schema).await?;
    drop(conn);
    let mut batches = read_ahead(store.clone(), up_to);
    let (lanes, lane_tasks) = start_lanes(store, projections, schema);
    let mut position = 0;
    let mut events_applied = 0;
    while let Some(events) = batches.recv().await {
        let events = Arc::new(events?);
        let Some(last) = events.last().map(|e| e.position) else { break };
        let mut lane_stopped = false;
        for lane in &lanes {
            lane_stopped |= lane.send((position, events.clone())).await.is_err();
        }
        if lane_stopped {
            break; // its error comes out of the join below
        }
        events_applied += events.len() as u64;
        position = last;
    }
    drop(lanes);
    for task in lane_tasks {
        task.await.map_err(|error| StoreError::corrupt(format!("a replay lane panicked: {error}")))??;
    }
    build_indexes(&mut *store.pool().acquire().await?, &deferred_indexes).await?;
    let names = projections.iter().map(|p| p.name()).collect();
    Ok(ReplayReport {
        schema: schema.to_string(),
        projections: names,
        events: events_applied,
        position,
        elapsed: started.elapsed(),
    })
}

/// A batch for the lanes: the position it starts after, and its events.
type LaneBatch = (i64, Arc<Vec<event_store::RecordedEvent>>);
type LaneTask = tokio::task::JoinHandle<Result<(), StoreError>>;

/// Splits the projections over `REPLAY_LANES` lanes, each applying every batch to its
/// projections on a connection of its own (a transaction per batch, checkpoints included):
/// Postgres works on several projections at once. The replay schema is private to the
/// replay, so lanes need not commit a batch together; each projection's checkpoint says how
/// far it got.
fn start_lanes(
    store: &Store,
    projections: &[Arc<dyn Projection>],
    schema: &str,
) -> (Vec<tokio::sync::mpsc::Sender<LaneBatch>>, Vec<LaneTask>) {
    let lane_count = REPLAY_LANES.min(projections.len()).max(1);
    (0..lane_count)
        .map(|lane| {
            let mine: Vec<Arc<dyn Projection>> = projections.iter().skip(lane).step_by(lane_count).cloned().collect();
            let (sender, receiver) = tokio::sync::mpsc::channel(1);
            let task = tokio::spawn(apply_lane(store.clone(), mine, schema.to_string(), receiver));
            (sender, task)
        })
        .unzip()
}

async fn apply_lane(
    store: Store,
    projections: Vec<Arc<dyn Projection>>,
    schema: String,
    mut batches: tokio::sync::mpsc::Receiver<LaneBatch>,
) -> Result<(), StoreError> {
    let mut conn = store.pool().acquire().await?;
    while let Some((after, events)) = batches.recv().await {
        let last = events.last().map_or(after, |e| e.position);
        let mut tx = conn.begin().await?;
        // A replay that stops part way is started again from an empty schema, so its batches
        // need not wait for the disk (rebuild_live's swap into the live tables does).
        sqlx::query(&format!("SET LOCAL search_path TO {schema}, public")).execute(&mut *tx).await?;
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        for projection in &projections {
            projection.apply_batch(&mut tx, &events).await?;
            crate::checkpoint::advance(&mut tx, projection.name(), after, last).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Reads the events up to `up_to` in batches on a connection of its own, a few batches ahead
/// of the caller: reading and decoding overlap with applying. Ends after the last batch, or
/// after an error.
fn read_ahead(
    store: Store,
    up_to: i64,
) -> tokio::sync::mpsc::Receiver<Result<Vec<event_store::RecordedEvent>, StoreError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(REPLAY_READ_AHEAD);
    tokio::spawn(async move {
        let mut conn = match store.pool().acquire().await {
            Ok(conn) => conn,
            Err(error) => return drop(sender.send(Err(error.into())).await),
        };
        let mut position = 0;
        loop {
            let batch = store.read_range(&mut conn, position, up_to, REPLAY_BATCH_MAX).await;
            let last = batch.as_ref().ok().and_then(|events| events.last().map(|e| e.position));
            let failed = batch.is_err();
            if sender.send(batch).await.is_err() || failed {
                return;
            }
            match last {
                Some(last) => position = last,
                None => return,
            }
        }
    });
    receiver
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

/// Drops the replay schema's non-unique indexes and returns their definitions, to be built
/// once the replay has written every row: one sort per index instead of a B-tree insert per
/// row (the advice of Postgres's "Populating a Database"). The projections' writes find rows
/// only by primary keys and unique indexes, which stay.
async fn drop_secondary_indexes(conn: &mut PgConnection, schema: &str) -> Result<Vec<String>, StoreError> {
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND NOT i.indisunique ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    let mut definitions = Vec::with_capacity(indexes.len());
    for (name, definition) in indexes {
        sqlx::query(&format!("DROP INDEX {name}")).execute(&mut *conn).await?;
        definitions.push(definition);
    }
    Ok(definitions)
}

/// Memory each deferred index build may sort in: Postgres's default, 64 MB, is less than the
/// sort of a million postings' account-and-position keys takes.
const INDEX_BUILD_MEMORY: &str = "256MB";

async fn build_indexes(conn: &mut PgConnection, definitions: &[String]) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")).execute(&mut *tx).await?;
    for definition in definitions {
        sqlx::query(definition).execute(&mut *tx).await?;
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
    // The live projector moves its checkpoints first in each batch, then writes the tables:
    // locking them in the same order here (the checkpoints first) leaves no deadlock between
    // the two. The lock waits for the projector's batch in flight and holds back the next.
    sqlx::query("LOCK TABLE public.projection_checkpoints IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
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
