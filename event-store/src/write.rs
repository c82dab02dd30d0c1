//! Writing units of work: positions, hash chains, events, idempotency outcomes, uniqueness
//! claims and side-table statements of one or many units of work in one Postgres transaction.
//! A unit of work that opened its own transaction writes alone; the others are written in
//! groups by the committer (commit.rs), through the same code.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::{Postgres, Transaction};

use crate::error::{is_unique_violation, StoreError};
use crate::record::{chain_hash, RecordedEvent};
use crate::uow::{Idempotency, Outcome};

/// A stream: aggregate type and id.
pub(crate) type StreamKey = (&'static str, String);

/// Builds a command's answer from the position of its last event.
pub(crate) type Respond = Box<dyn Fn(Option<i64>) -> Outcome + Send + Sync>;

/// Where a stream's next event chains from.
#[derive(Clone)]
pub(crate) enum HeadHash {
    Known(Vec<u8>),
    /// The last hash of a unit of work that left the stream before its positions (and so its
    /// hashes) were known: set once its statements ran in the transaction that commits it.
    /// Whoever builds on it waits for that commit, so a hash read here never changes.
    Pending(Arc<OnceLock<Vec<u8>>>),
}

impl HeadHash {
    /// The hash, once known.
    pub(crate) fn get(&self) -> Option<&[u8]> {
        match self {
            HeadHash::Known(hash) => Some(hash),
            HeadHash::Pending(cell) => cell.get().map(Vec::as_slice),
        }
    }
}

pub(crate) struct StagedEvent {
    pub(crate) aggregate_type: &'static str,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_type: String,
    pub(crate) event_version: String,
    pub(crate) payload: Value,
}

pub(crate) struct Claim {
    pub(crate) kind: String,
    pub(crate) value: String,
    pub(crate) owner: String,
}

/// An insert into a side table that a group commit merges with the same insert of the other
/// units of work in the group: one `INSERT INTO table (columns) VALUES (..), (..), ..`.
#[derive(Debug)]
pub struct SideInsert {
    pub table: &'static str,
    pub columns: &'static [&'static str],
}

/// Adds one row's values, in the insert's column order.
pub type RowValues = Box<dyn Fn(&mut PgArguments) -> Result<(), sqlx::error::BoxDynError> + Send + Sync>;

/// Rows merged into one statement at most: Postgres takes 65,535 parameters a statement.
const ROWS_PER_INSERT_MAX: usize = 1_000;

/// A stream a unit of work appends to: what its first event chains from, and where its last
/// hash goes once known (the next command on the stream may already have started from it).
pub(crate) struct StreamWrite {
    pub(crate) start: HeadHash,
    pub(crate) last: Arc<OnceLock<Vec<u8>>>,
}

/// Everything one unit of work writes at commit.
pub(crate) struct UnitWrite {
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) events: Vec<StagedEvent>,
    pub(crate) streams: HashMap<StreamKey, StreamWrite>,
    pub(crate) claims: Vec<Claim>,
    pub(crate) inserts: Vec<(&'static SideInsert, RowValues)>,
    pub(crate) statements: Vec<(&'static str, PgArguments)>,
    /// Whether a statement created or woke a saga.
    pub(crate) stages_saga: bool,
    pub(crate) idempotency: Option<Idempotency>,
    pub(crate) respond: Respond,
    /// Streams read from the in-process cache and not written: still at these sequences?
    pub(crate) cached_reads: Vec<(StreamKey, i64)>,
}

impl UnitWrite {
    /// Whether committing it writes anything at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.claims.is_empty()
            && self.inserts.is_empty()
            && self.statements.is_empty()
            && self.idempotency.is_none()
    }
}

/// What a unit of work's write produced.
pub(crate) struct Written {
    /// Position of its last event, if any.
    pub(crate) position: Option<i64>,
    pub(crate) outcome: Outcome,
    /// The last hash of each stream it wrote.
    pub(crate) last_hashes: Vec<(StreamKey, Vec<u8>)>,
}

/// Writes `units` in `tx`, in order: positions for all their events (the transaction's first
/// write), the events chained per stream, the idempotency outcomes, the claims, the side-table
/// rows (each table's in one statement), the statements, and the check of streams read from
/// the cache. Errors: `Conflict` (a stream or
/// an outcome written by someone else, a stale cached read, a unique violation of a
/// statement), `ClaimTaken`, `Database`. A transaction that failed is rolled back by its owner.
pub(crate) async fn write_units(
    tx: &mut Transaction<'static, Postgres>,
    units: &[&UnitWrite],
) -> Result<Vec<Written>, StoreError> {
    let event_count: usize = units.iter().map(|unit| unit.events.len()).sum();
    let positions = allocate_positions(tx, event_count).await?;
    let (rows, mut written) = chain_events(units, &positions)?;
    if event_count > 0 {
        rows.insert(tx).await?;
    }
    for (unit, written) in units.iter().zip(written.iter_mut()) {
        written.outcome = (unit.respond)(written.position);
        written.outcome.position = written.position;
    }
    insert_outcomes(tx, units, &written).await?;
    insert_claims(tx, units).await?;
    insert_side_rows(tx, units).await?;
    for unit in units {
        for (sql, arguments) in &unit.statements {
            sqlx::query_with(sql, arguments.clone()).execute(&mut **tx).await.map_err(conflict_if_unique)?;
        }
    }
    check_cached_reads(tx, units).await?;
    Ok(written)
}

async fn allocate_positions(tx: &mut Transaction<'static, Postgres>, count: usize) -> Result<Vec<i64>, StoreError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT ledger_allocate_positions($1)").bind(count as i32).fetch_one(&mut **tx).await?;
    assert_eq!(positions.len(), count, "one position per staged event");
    Ok(positions)
}

/// Gives each event its position and chains it to its stream's previous event: within these
/// units through the hashes computed here, else from where the stream stood.
fn chain_events(units: &[&UnitWrite], positions: &[i64]) -> Result<(EventRows, Vec<Written>), StoreError> {
    let mut rows = EventRows::default();
    let mut written = Vec::with_capacity(units.len());
    // The last hash computed here for a pending head, by its cell: a later unit on the same
    // stream chains from it before the cell is set.
    let mut computed: HashMap<*const OnceLock<Vec<u8>>, Vec<u8>> = HashMap::new();
    let mut positions = positions.iter();
    for unit in units {
        let mut heads: HashMap<&StreamKey, Vec<u8>> = HashMap::new();
        let mut last_position = None;
        for event in &unit.events {
            let position = *positions.next().expect("one position per event");
            let key = (event.aggregate_type, event.aggregate_id.clone());
            let (stream, write) = unit.streams.get_key_value(&key).expect("a staged stream has a head");
            let prev_hash = match heads.get(stream) {
                Some(hash) => hash.clone(),
                None => start_hash(&write.start, &computed)?,
            };
            let recorded = RecordedEvent {
                position,
                aggregate_type: event.aggregate_type.to_string(),
                aggregate_id: event.aggregate_id.clone(),
                sequence: event.sequence,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: event.payload.clone(),
                metadata: unit.metadata.clone(),
                memo: Default::default(),
            };
            let canonical = recorded.canonical().map_err(StoreError::corrupt)?;
            let hash = chain_hash(&prev_hash, &canonical);
            rows.push(&recorded, canonical, prev_hash, hash);
            heads.insert(stream, hash.to_vec());
            last_position = Some(position);
        }
        for (stream, hash) in &heads {
            computed.insert(Arc::as_ptr(&unit.streams[*stream].last), hash.clone());
        }
        let last_hashes = heads.into_iter().map(|(stream, hash)| (stream.clone(), hash)).collect();
        written.push(Written { position: last_position, outcome: Outcome::new(0, Value::Null), last_hashes });
    }
    Ok((rows, written))
}

/// The hash a stream's first event in a unit chains from. A pending one unknown here and
/// not yet set belongs to a unit of work that never wrote: a conflict.
fn start_hash(start: &HeadHash, computed: &HashMap<*const OnceLock<Vec<u8>>, Vec<u8>>) -> Result<Vec<u8>, StoreError> {
    if let HeadHash::Pending(cell) = start {
        if let Some(hash) = computed.get(&Arc::as_ptr(cell)) {
            return Ok(hash.clone());
        }
    }
    start.get().map(<[u8]>::to_vec).ok_or(StoreError::Conflict)
}

/// Stores the outcome of every unit with an idempotency key. A key another transaction
/// stored first (a concurrent repeat in another process) is a conflict: the retry answers
/// the stored outcome.
async fn insert_outcomes(
    tx: &mut Transaction<'static, Postgres>,
    units: &[&UnitWrite],
    written: &[Written],
) -> Result<(), StoreError> {
    let mut rows = OutcomeRows::default();
    for (unit, written) in units.iter().zip(written) {
        if let Some(key) = &unit.idempotency {
            rows.push(key, &written.outcome);
        }
    }
    if rows.command_ids.is_empty() {
        return Ok(());
    }
    let expected = rows.command_ids.len();
    let stored = sqlx::query(
        "INSERT INTO command_outcomes (command_id, request_hash, status, body, location, position) \
         SELECT * FROM UNNEST($1::uuid[], $2::bytea[], $3::smallint[], $4::jsonb[], $5::text[], $6::bigint[]) \
         ON CONFLICT (command_id) DO NOTHING",
    )
    .bind(rows.command_ids)
    .bind(rows.request_hashes)
    .bind(rows.statuses)
    .bind(rows.bodies)
    .bind(rows.locations)
    .bind(rows.positions)
    .execute(&mut **tx)
    .await?;
    match stored.rows_affected() as usize == expected {
        true => Ok(()),
        false => Err(StoreError::Conflict),
    }
}

/// Claims every unit's values; a value someone holds already fails with its kind.
async fn insert_claims(tx: &mut Transaction<'static, Postgres>, units: &[&UnitWrite]) -> Result<(), StoreError> {
    let claims: Vec<&Claim> = units.iter().flat_map(|unit| unit.claims.iter()).collect();
    if claims.is_empty() {
        return Ok(());
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO claims (kind, value, owner) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) \
         ON CONFLICT DO NOTHING RETURNING kind, value",
    )
    .bind(claims.iter().map(|c| c.kind.clone()).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| c.value.clone()).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| c.owner.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    if inserted.len() == claims.len() {
        return Ok(());
    }
    let taken = claims
        .iter()
        .find(|claim| !inserted.iter().any(|(kind, value)| *kind == claim.kind && *value == claim.value))
        .expect("a claim was not inserted");
    Err(StoreError::ClaimTaken { kind: taken.kind.clone() })
}

/// Inserts every unit's side-table rows, each table's together (in the units' order).
async fn insert_side_rows(tx: &mut Transaction<'static, Postgres>, units: &[&UnitWrite]) -> Result<(), StoreError> {
    let mut tables: Vec<(&'static SideInsert, Vec<&RowValues>)> = Vec::new();
    for (insert, row) in units.iter().flat_map(|unit| unit.inserts.iter()) {
        match tables.iter_mut().find(|(table, _)| std::ptr::eq(*table, *insert)) {
            Some((_, rows)) => rows.push(row),
            None => tables.push((insert, vec![row])),
        }
    }
    for (insert, rows) in tables {
        for chunk in rows.chunks(ROWS_PER_INSERT_MAX) {
            let mut arguments = PgArguments::default();
            for row in chunk {
                row(&mut arguments).map_err(StoreError::corrupt)?;
            }
            let sql = multi_row_insert(insert, chunk.len());
            // Not prepared: the text varies with the row count.
            sqlx::query_with(&sql, arguments).persistent(false).execute(&mut **tx).await.map_err(conflict_if_unique)?;
        }
    }
    Ok(())
}

/// `INSERT INTO table (a, b) VALUES ($1, $2), ($3, $4), ..` for `rows` rows.
fn multi_row_insert(insert: &SideInsert, rows: usize) -> String {
    let width = insert.columns.len();
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let placeholders: Vec<String> = (1..=width).map(|column| format!("${}", row * width + column)).collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    format!("INSERT INTO {} ({}) VALUES {}", insert.table, insert.columns.join(", "), values.join(", "))
}

/// A stream only read, from the cache, must still be at the cached sequence: another
/// process may have appended to it, and nothing else in the unit of work would notice.
async fn check_cached_reads(tx: &mut Transaction<'static, Postgres>, units: &[&UnitWrite]) -> Result<(), StoreError> {
    let (mut types, mut ids, mut sequences) = (Vec::new(), Vec::new(), Vec::new());
    for ((aggregate_type, aggregate_id), sequence) in units.iter().flat_map(|unit| unit.cached_reads.iter()) {
        types.push(aggregate_type.to_string());
        ids.push(aggregate_id.clone());
        sequences.push(*sequence);
    }
    if types.is_empty() {
        return Ok(());
    }
    let moved: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS c(t, i, s) \
         JOIN events e ON e.aggregate_type = c.t AND e.aggregate_id = c.i AND e.sequence > c.s)",
    )
    .bind(types)
    .bind(ids)
    .bind(sequences)
    .fetch_one(&mut **tx)
    .await?;
    match moved {
        true => Err(StoreError::Conflict),
        false => Ok(()),
    }
}

fn conflict_if_unique(error: sqlx::Error) -> StoreError {
    match is_unique_violation(&error) {
        true => StoreError::Conflict,
        false => StoreError::Database(error),
    }
}

/// Column arrays for one multi-row insert of outcomes.
#[derive(Default)]
struct OutcomeRows {
    command_ids: Vec<uuid::Uuid>,
    request_hashes: Vec<Vec<u8>>,
    statuses: Vec<i16>,
    bodies: Vec<Value>,
    locations: Vec<Option<String>>,
    positions: Vec<Option<i64>>,
}

impl OutcomeRows {
    fn push(&mut self, key: &Idempotency, outcome: &Outcome) {
        self.command_ids.push(key.command_id);
        self.request_hashes.push(key.request_hash.clone());
        self.statuses.push(outcome.status as i16);
        self.bodies.push(outcome.body.clone());
        self.locations.push(outcome.location.clone());
        self.positions.push(outcome.position);
    }
}

/// Column arrays for one multi-row insert of events through `UNNEST`.
#[derive(Default)]
struct EventRows {
    positions: Vec<i64>,
    aggregate_types: Vec<String>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    event_types: Vec<String>,
    event_versions: Vec<String>,
    canonicals: Vec<String>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

impl EventRows {
    fn push(&mut self, event: &RecordedEvent, canonical: String, prev_hash: Vec<u8>, hash: [u8; 32]) {
        self.positions.push(event.position);
        self.aggregate_types.push(event.aggregate_type.clone());
        self.aggregate_ids.push(event.aggregate_id.clone());
        self.sequences.push(event.sequence);
        self.event_types.push(event.event_type.clone());
        self.event_versions.push(event.event_version.clone());
        self.canonicals.push(canonical);
        self.prev_hashes.push(prev_hash);
        self.hashes.push(hash.to_vec());
    }

    async fn insert(self, tx: &mut Transaction<'static, Postgres>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type, \
                                 event_version, canonical, prev_hash, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                                  $6::text[], $7::text[], $8::bytea[], $9::bytea[])",
        )
        .bind(self.positions)
        .bind(self.aggregate_types)
        .bind(self.aggregate_ids)
        .bind(self.sequences)
        .bind(self.event_types)
        .bind(self.event_versions)
        .bind(self.canonicals)
        .bind(self.prev_hashes)
        .bind(self.hashes)
        .execute(&mut **tx)
        .await
        .map_err(conflict_if_unique)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_row_insert_numbers_the_placeholders_row_after_row() {
        let insert = SideInsert { table: "t", columns: &["a", "b"] };
        assert_eq!(multi_row_insert(&insert, 1), "INSERT INTO t (a, b) VALUES ($1, $2)");
        assert_eq!(multi_row_insert(&insert, 3), "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6)");
    }
}
