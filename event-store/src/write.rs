//! Writing units of work: positions, hash chains, events, idempotency outcomes, uniqueness
//! claims and side-table statements of one or many units of work in one Postgres transaction.
//! A unit of work that opened its own transaction writes alone; the others are written in
//! groups by the committer (commit.rs), through the same code.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, Postgres};

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

/// A side table (an index) that units of work add rows to. A group commit inserts every
/// unit's rows of all such tables in the one statement that also inserts the events, claims
/// and outcomes: `INSERT INTO table (columns) SELECT .. FROM jsonb_to_recordset($n)`, the
/// rows bound as one JSON array whatever their number, so the statement stays prepared.
#[derive(Debug)]
pub struct SideInsert {
    pub table: &'static str,
    /// Each column's name and SQL type, as `jsonb_to_recordset` reads it from the row.
    pub columns: &'static [(&'static str, &'static str)],
}

/// One row of a side table: a JSON object with a member per column (exact numbers as strings).
pub type SideRow = serde_json::Map<String, Value>;

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
    pub(crate) inserts: Vec<(&'static SideInsert, SideRow)>,
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

/// Events of `units` together: how many positions their transaction allocates.
pub(crate) fn event_count(units: &[&UnitWrite]) -> usize {
    units.iter().map(|unit| unit.events.len()).sum()
}

/// Writes `units` in the transaction on `conn`, whose first write allocated `positions`
/// (one per event, [`event_count`]), in order: the events chained per stream, the
/// idempotency outcomes, the claims, the side-table rows (one statement for all of these),
/// the statements, and the check of streams read from the cache. Errors: `Conflict` (a
/// stream or an outcome written by someone else, a stale cached read, a unique violation of
/// a statement), `ClaimTaken`, `Database`. A transaction that failed is rolled back by its
/// owner.
pub(crate) async fn write_units(
    conn: &mut PgConnection,
    units: &[&UnitWrite],
    positions: &[i64],
) -> Result<Vec<Written>, StoreError> {
    let (events, mut written) = chain_events(units, positions)?;
    for (unit, written) in units.iter().zip(written.iter_mut()) {
        written.outcome = (unit.respond)(written.position);
        written.outcome.position = written.position;
    }
    insert_rows(conn, units, events, &written).await?;
    for unit in units {
        for (sql, arguments) in &unit.statements {
            sqlx::query_with(sql, arguments.clone()).execute(&mut *conn).await.map_err(conflict_if_unique)?;
        }
    }
    check_cached_reads(conn, units).await?;
    Ok(written)
}

/// Positions for `count` events, in a transaction that has not written yet (a unit of work's
/// own; the committer's allocate as they begin, open_tx.rs).
pub(crate) async fn allocate_positions(conn: &mut PgConnection, count: usize) -> Result<Vec<i64>, StoreError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT ledger_allocate_positions($1)").bind(count as i32).fetch_one(conn).await?;
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

/// Inserts every row of `units` but their statements' in one statement (one round trip):
/// the events, the outcomes of units with an idempotency key, the claims and the side-table
/// rows. A unique violation (an event's stream moved, a side row exists) is a conflict; so is
/// an outcome another transaction stored first (a concurrent repeat in another process: the
/// retry answers the stored outcome); a value someone else holds fails with its claim's kind.
async fn insert_rows(
    conn: &mut PgConnection,
    units: &[&UnitWrite],
    events: EventRows,
    written: &[Written],
) -> Result<(), StoreError> {
    let mut statement = RowsStatement::default();
    statement.add_events(events).map_err(StoreError::corrupt)?;
    let outcomes = statement.add_outcomes(units, written).map_err(StoreError::corrupt)?;
    let claims: Vec<&Claim> = units.iter().flat_map(|unit| unit.claims.iter()).collect();
    statement.add_claims(&claims).map_err(StoreError::corrupt)?;
    statement.add_side_rows(units).map_err(StoreError::corrupt)?;
    let Some(sql) = statement.sql() else { return Ok(()) };
    let returned: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as_with(&sql, statement.arguments).fetch_all(conn).await.map_err(conflict_if_unique)?;
    let outcomes_stored = returned.iter().filter(|(part, _, _)| part == "outcome").count();
    if outcomes_stored != outcomes {
        return Err(StoreError::Conflict);
    }
    let claimed: Vec<(&str, &str)> = returned
        .iter()
        .filter_map(|(part, kind, value)| match (part.as_str(), kind, value) {
            ("claim", Some(kind), Some(value)) => Some((kind.as_str(), value.as_str())),
            _ => None,
        })
        .collect();
    match claims.iter().find(|claim| !claimed.contains(&(claim.kind.as_str(), claim.value.as_str()))) {
        Some(taken) => Err(StoreError::ClaimTaken { kind: taken.kind.clone() }),
        None => Ok(()),
    }
}

/// The one statement of [`insert_rows`]: a data-modifying `WITH` query per kind of row, and
/// a result naming each outcome stored and each claim taken. Its text depends only on which
/// kinds of rows (and which side tables) it has, never on their number, so it is prepared
/// once per connection and kind.
#[derive(Default)]
struct RowsStatement {
    inserts: Vec<String>,
    results: Vec<&'static str>,
    arguments: PgArguments,
    parameters: usize,
}

type EncodeResult = Result<(), sqlx::error::BoxDynError>;

impl RowsStatement {
    /// `$n` for the next parameter, bound to `value`.
    fn bind<'q, T>(&mut self, value: T) -> Result<String, sqlx::error::BoxDynError>
    where
        T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        sqlx::Arguments::add(&mut self.arguments, value)?;
        self.parameters += 1;
        Ok(format!("${}", self.parameters))
    }

    /// `$n::sql_type[]` for the next parameter, bound to the column `values`.
    fn bind_array<'q, T>(&mut self, values: Vec<T>, sql_type: &str) -> Result<String, sqlx::error::BoxDynError>
    where
        Vec<T>: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        Ok(format!("{}::{sql_type}[]", self.bind(values)?))
    }

    fn add_events(&mut self, rows: EventRows) -> EncodeResult {
        if rows.positions.is_empty() {
            return Ok(());
        }
        let columns = [
            self.bind_array(rows.positions, "bigint")?,
            self.bind_array(rows.aggregate_types, "text")?,
            self.bind_array(rows.aggregate_ids, "text")?,
            self.bind_array(rows.sequences, "bigint")?,
            self.bind_array(rows.event_types, "text")?,
            self.bind_array(rows.event_versions, "text")?,
            self.bind_array(rows.canonicals, "text")?,
            self.bind_array(rows.prev_hashes, "bytea")?,
            self.bind_array(rows.hashes, "bytea")?,
        ];
        self.inserts.push(format!(
            "event_rows AS (INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type, \
             event_version, canonical, prev_hash, hash) SELECT * FROM UNNEST({}))",
            columns.join(", ")
        ));
        Ok(())
    }

    /// Adds the outcomes of the units with an idempotency key; returns how many.
    fn add_outcomes(&mut self, units: &[&UnitWrite], written: &[Written]) -> Result<usize, sqlx::error::BoxDynError> {
        let mut rows = OutcomeRows::default();
        for (unit, written) in units.iter().zip(written) {
            if let Some(key) = &unit.idempotency {
                rows.push(key, &written.outcome);
            }
        }
        let count = rows.command_ids.len();
        if count == 0 {
            return Ok(0);
        }
        let columns = [
            self.bind_array(rows.command_ids, "uuid")?,
            self.bind_array(rows.request_hashes, "bytea")?,
            self.bind_array(rows.statuses, "smallint")?,
            self.bind_array(rows.bodies, "jsonb")?,
            self.bind_array(rows.locations, "text")?,
            self.bind_array(rows.positions, "bigint")?,
        ];
        self.inserts.push(format!(
            "outcome_rows AS (INSERT INTO command_outcomes (command_id, request_hash, status, body, location, position) \
             SELECT * FROM UNNEST({}) ON CONFLICT (command_id) DO NOTHING RETURNING 1)",
            columns.join(", ")
        ));
        self.results.push("SELECT 'outcome'::text, NULL::text, NULL::text FROM outcome_rows");
        Ok(count)
    }

    fn add_claims(&mut self, claims: &[&Claim]) -> EncodeResult {
        if claims.is_empty() {
            return Ok(());
        }
        let kinds = self.bind_array(claims.iter().map(|c| c.kind.clone()).collect(), "text")?;
        let values = self.bind_array(claims.iter().map(|c| c.value.clone()).collect(), "text")?;
        let owners = self.bind_array(claims.iter().map(|c| c.owner.clone()).collect(), "text")?;
        self.inserts.push(format!(
            "claim_rows AS (INSERT INTO claims (kind, value, owner) \
             SELECT * FROM UNNEST({kinds}, {values}, {owners}) \
             ON CONFLICT DO NOTHING RETURNING kind, value)"
        ));
        self.results.push("SELECT 'claim'::text, kind, value FROM claim_rows");
        Ok(())
    }

    /// Each side table's rows, in the units' order, as one JSON array.
    fn add_side_rows(&mut self, units: &[&UnitWrite]) -> EncodeResult {
        let mut tables: Vec<(&'static SideInsert, Vec<&SideRow>)> = Vec::new();
        for (insert, row) in units.iter().flat_map(|unit| unit.inserts.iter()) {
            match tables.iter_mut().find(|(table, _)| std::ptr::eq(*table, *insert)) {
                Some((_, rows)) => rows.push(row),
                None => tables.push((insert, vec![row])),
            }
        }
        for (index, (insert, rows)) in tables.into_iter().enumerate() {
            let rows = self.bind(sqlx::types::Json(rows))?;
            let names: Vec<&str> = insert.columns.iter().map(|(name, _)| *name).collect();
            let typed: Vec<String> =
                insert.columns.iter().map(|(name, sql_type)| format!("{name} {sql_type}")).collect();
            self.inserts.push(format!(
                "side_rows_{index} AS (INSERT INTO {table} ({names}) SELECT {names} \
                 FROM jsonb_to_recordset({rows}::jsonb) AS r({typed}))",
                table = insert.table,
                names = names.join(", "),
                typed = typed.join(", "),
            ));
        }
        Ok(())
    }

    /// The statement, or `None` when there is nothing to insert.
    fn sql(&self) -> Option<String> {
        if self.inserts.is_empty() {
            return None;
        }
        let results = match self.results.is_empty() {
            true => "SELECT NULL::text, NULL::text, NULL::text WHERE false".to_string(),
            false => self.results.join(" UNION ALL "),
        };
        Some(format!("WITH {} {results}", self.inserts.join(", ")))
    }
}

/// A stream only read, from the cache, must still be at the cached sequence: another
/// process may have appended to it, and nothing else in the unit of work would notice.
async fn check_cached_reads(conn: &mut PgConnection, units: &[&UnitWrite]) -> Result<(), StoreError> {
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
    .fetch_one(conn)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(value: &str) -> Claim {
        Claim { kind: "username".to_string(), value: value.to_string(), owner: "u".to_string() }
    }

    #[test]
    fn the_rows_statement_text_depends_on_the_kinds_of_rows_not_their_number() {
        let (one, two) = (claim("a"), claim("b"));
        let mut few = RowsStatement::default();
        few.add_claims(&[&one]).unwrap();
        let mut more = RowsStatement::default();
        more.add_claims(&[&one, &two]).unwrap();
        assert_eq!(few.sql(), more.sql());
        assert!(few.sql().unwrap().contains("INSERT INTO claims"));
        assert_eq!(RowsStatement::default().sql(), None, "nothing to insert, no statement");
    }
}
