//! A unit of work: one Postgres transaction holding a command's events (the outbox), its
//! uniqueness claims, side tables and idempotency record.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{is_unique_violation, StoreError};
use crate::metadata::CommandContext;
use crate::record::{chain_hash, RecordedEvent};
use crate::store::{
    commit_state, committed, CachedStream, CommitState, PendingCommit, Snapshotted, Store, StripeGuard,
};

/// How long a command waits for another attempt with its idempotency key to finish before it
/// answers "in progress".
const IDEMPOTENCY_LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(250);

/// A command's idempotency: its id and a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub command_id: Uuid,
    pub request_hash: Vec<u8>,
}

/// What a command answered, stored so a repeat answers the same.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: u16,
    pub body: Value,
    /// The `Location` of a created resource.
    pub location: Option<String>,
    pub position: Option<i64>,
}

impl Outcome {
    pub fn new(status: u16, body: Value) -> Outcome {
        Outcome { status, body, location: None, position: None }
    }
}

pub enum Begun {
    Fresh(Box<UnitOfWork>),
    /// The command ran before: its stored outcome.
    Replayed(Outcome),
}

/// The result of handling one command on one aggregate inside a unit of work.
pub struct Executed<A: Aggregate> {
    /// State after the new events.
    pub aggregate: A,
    pub events: Vec<A::Event>,
    /// Sequence of the stream's last event after this command.
    pub sequence: i64,
}

struct StagedEvent {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
}

/// A stream this unit of work touched: the hash its first staged event chains from, and the
/// state after the commands handled so far, so a second command on the stream continues
/// from there (a saga step can capture a hold twice, a batch can hold many deposits).
struct StreamHead {
    prev_hash: Vec<u8>,
    sequence: i64,
    snapshot_sequence: i64,
    state: Option<Box<dyn Any + Send + Sync>>,
    snapshot: Option<PendingSnapshot>,
    /// Where the state came from: the stripe's cache (checked at commit if only read) or the
    /// database.
    from_cache: bool,
    /// Whether this unit of work staged events on the stream.
    written: bool,
    /// The commit the state waits for, when it came from a unit of work still committing.
    pending: Option<PendingCommit>,
}

struct PendingSnapshot {
    schema_version: i32,
    sequence: i64,
    state: Value,
}

struct Claim {
    kind: String,
    value: String,
    owner: String,
}

pub struct UnitOfWork {
    store: Store,
    /// `None` once committed or dropped.
    tx: Option<Transaction<'static, Postgres>>,
    context: CommandContext,
    idempotency: Option<Idempotency>,
    staged: Vec<StagedEvent>,
    heads: HashMap<(&'static str, String), StreamHead>,
    claims: Vec<Claim>,
    statements: Vec<(&'static str, PgArguments)>,
    /// Stripes held until the unit of work ends, by index.
    stream_locks: Vec<(usize, StripeGuard)>,
    /// A cached state read turned out stale: nothing of this unit of work goes back to the cache.
    cache_stale: bool,
}

/// What a committed unit of work returns.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Position of the last event written, if any.
    pub position: Option<i64>,
    pub outcome: Outcome,
}

impl Store {
    /// Starts a unit of work. With an idempotency key, a repeat of a finished command returns
    /// its stored outcome, and a repeat while it still runs is refused.
    pub async fn begin(&self, context: CommandContext, idempotency: Option<Idempotency>) -> Result<Begun, StoreError> {
        let mut tx = self.pool().begin().await?;
        if let Some(key) = &idempotency {
            let lock_key = i64::from_be_bytes(key.command_id.as_bytes()[..8].try_into().expect("8 bytes"));
            // Waits a moment for the key's lock: a repeat sent the instant a first attempt
            // answered may still find that attempt's rollback on its way. Longer than that,
            // the first attempt is really still running.
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(format!("{}ms", IDEMPOTENCY_LOCK_WAIT_MAX.as_millis()))
                .execute(&mut *tx)
                .await?;
            match sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock_key).execute(&mut *tx).await {
                Ok(_) => {}
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("55P03") => {
                    drop(tx);
                    return Err(StoreError::IdempotencyKeyInProgress);
                }
                Err(error) => return Err(error.into()),
            }
            sqlx::query("SELECT set_config('lock_timeout', '0', true)").execute(&mut *tx).await?;
            // A new statement, so a new snapshot: it sees an outcome committed just before
            // the lock was granted. The transaction ends before answering either way, so the
            // lock is gone when the client sends its next repeat.
            match stored_outcome(&mut tx, key).await {
                Ok(None) => {}
                Ok(Some(outcome)) => {
                    tx.rollback().await?;
                    return Ok(Begun::Replayed(outcome));
                }
                Err(error) => {
                    tx.rollback().await?;
                    return Err(error);
                }
            }
        }
        Ok(Begun::Fresh(Box::new(UnitOfWork {
            store: self.clone(),
            tx: Some(tx),
            context,
            idempotency,
            staged: Vec::new(),
            heads: HashMap::new(),
            claims: Vec::new(),
            statements: Vec::new(),
            stream_locks: Vec::new(),
            cache_stale: false,
        })))
    }

    /// Stores the outcome of a command refused before it wrote anything, so a repeat of the
    /// key answers the same refusal.
    pub async fn record_outcome(&self, key: &Idempotency, outcome: &Outcome) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO command_outcomes (command_id, request_hash, status, body, location, position) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(key.command_id)
        .bind(&key.request_hash)
        .bind(outcome.status as i16)
        .bind(&outcome.body)
        .bind(&outcome.location)
        .bind(outcome.position)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

async fn stored_outcome(
    tx: &mut Transaction<'static, Postgres>,
    key: &Idempotency,
) -> Result<Option<Outcome>, StoreError> {
    let row = sqlx::query(
        "SELECT request_hash, status, body, location, position FROM command_outcomes WHERE command_id = $1",
    )
    .bind(key.command_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if row.get::<Vec<u8>, _>("request_hash") != key.request_hash {
        return Err(StoreError::IdempotencyKeyReused);
    }
    Ok(Some(Outcome {
        status: row.get::<i16, _>("status") as u16,
        body: row.get("body"),
        location: row.get("location"),
        position: row.get("position"),
    }))
}

impl UnitOfWork {
    pub fn context(&self) -> &CommandContext {
        &self.context
    }

    /// The transaction, for reads a command needs (never for writes: stage those).
    pub fn connection(&mut self) -> &mut sqlx::PgConnection {
        self.tx()
    }

    fn tx(&mut self) -> &mut Transaction<'static, Postgres> {
        self.tx.as_mut().expect("a unit of work's transaction lives until commit or drop")
    }

    /// Loads the aggregate, handles `command` and stages the new events. A rejection by the
    /// aggregate comes back as `Ok(Err(..))` and stages nothing.
    pub async fn execute<A: Snapshotted>(
        &mut self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
    ) -> Result<Result<Executed<A>, A::Error>, StoreError> {
        self.execute_with::<A, A::Error>(aggregate_id, |_| Ok(command), services).await
    }

    /// Like [`execute`](Self::execute), with the command built from the loaded state by
    /// `decide` (which may refuse with the caller's error): one load where a command needs
    /// the aggregate first, say to check its owner or its currency.
    pub async fn execute_with<A: Snapshotted, E: From<A::Error>>(
        &mut self,
        aggregate_id: &str,
        decide: impl FnOnce(&A) -> Result<A::Command, E>,
        services: &A::Services,
    ) -> Result<Result<Executed<A>, E>, StoreError> {
        let stream = (A::TYPE, aggregate_id.to_string());
        let (mut aggregate, sequence_before) = self.current_state::<A>(&stream).await?;
        let command = match decide(&aggregate) {
            Ok(command) => command,
            Err(refusal) => {
                self.keep_state(&stream, aggregate, sequence_before);
                return Ok(Err(refusal));
            }
        };
        let before = aggregate.clone();
        let sink = EventSink::default();
        // `EventSink::write` applies each event as it is written: `aggregate` is the new state.
        if let Err(rejection) = aggregate.handle(command, services, &sink).await {
            self.keep_state(&stream, before, sequence_before);
            return Ok(Err(rejection.into()));
        }
        let events = sink.collect().await;
        self.stage::<A>(aggregate_id, sequence_before, &events)?;
        let sequence = sequence_before + events.len() as i64;
        let head = self.heads.get_mut(&stream).expect("current_state registers the stream");
        if !events.is_empty() && sequence - head.snapshot_sequence >= self.store.inner.snapshot_interval {
            let state = serde_json::to_value(&aggregate).map_err(StoreError::corrupt)?;
            head.snapshot = Some(PendingSnapshot { schema_version: A::SNAPSHOT_VERSION, sequence, state });
        }
        self.keep_state(&stream, aggregate.clone(), sequence);
        Ok(Ok(Executed { aggregate, events, sequence }))
    }

    /// The stream's state in this unit of work: as left by an earlier command, or loaded
    /// (snapshot + tail) under the stream's in-process lock.
    async fn current_state<A: Snapshotted>(&mut self, stream: &(&'static str, String)) -> Result<(A, i64), StoreError> {
        if let Some(head) = self.heads.get_mut(stream) {
            let state = head.state.take().expect("a touched stream keeps its state");
            let state = state.downcast::<A>().expect("a stream holds one aggregate type");
            return Ok((*state, head.sequence));
        }
        let stripe = self.hold_stripe(stream).await?;
        if let Some(cached) = take_cached(stripe, stream) {
            if let Ok(state) = cached.state.downcast::<A>() {
                let head = StreamHead {
                    prev_hash: cached.head_hash,
                    sequence: cached.sequence,
                    snapshot_sequence: cached.snapshot_sequence,
                    state: None,
                    snapshot: None,
                    from_cache: true,
                    written: false,
                    pending: cached.pending,
                };
                self.heads.insert(stream.clone(), head);
                return Ok((*state, cached.sequence));
            }
        }
        let loaded = self.store.load::<A>(self.tx.as_mut().expect("open transaction"), &stream.1, true).await?;
        let head = StreamHead {
            prev_hash: loaded.head_hash,
            sequence: loaded.sequence,
            snapshot_sequence: loaded.snapshot_sequence,
            state: None,
            snapshot: None,
            from_cache: false,
            written: false,
            pending: None,
        };
        self.heads.insert(stream.clone(), head);
        Ok((loaded.aggregate, loaded.sequence))
    }

    /// Takes the stream's in-process stripe (once: streams of one unit of work may share one)
    /// and returns its cache slot.
    async fn hold_stripe(&mut self, stream: &(&'static str, String)) -> Result<&mut StripeGuard, StoreError> {
        let stripe = self.store.stream_stripe(stream);
        let held = match self.stream_locks.iter().position(|(held, _)| *held == stripe) {
            Some(held) => held,
            None => {
                let guard = self.store.lock_stripe(stripe, !self.stream_locks.is_empty()).await?;
                self.stream_locks.push((stripe, guard));
                self.stream_locks.len() - 1
            }
        };
        Ok(&mut self.stream_locks[held].1)
    }

    fn keep_state<A: Snapshotted>(&mut self, stream: &(&'static str, String), aggregate: A, sequence: i64) {
        let head = self.heads.get_mut(stream).expect("current_state registers the stream");
        head.state = Some(Box::new(aggregate));
        head.sequence = sequence;
    }

    /// Stages events for a stream whose head (`sequence`, `prev_hash`) the caller loaded.
    pub(crate) fn stage<A: Aggregate>(
        &mut self,
        aggregate_id: &str,
        after_sequence: i64,
        events: &[A::Event],
    ) -> Result<(), StoreError> {
        if let Some(head) = self.heads.get_mut(&(A::TYPE, aggregate_id.to_string())) {
            head.written |= !events.is_empty();
        }
        for (offset, event) in events.iter().enumerate() {
            self.staged.push(StagedEvent {
                aggregate_type: A::TYPE,
                aggregate_id: aggregate_id.to_string(),
                sequence: after_sequence + offset as i64 + 1,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_value(event).map_err(StoreError::corrupt)?,
            });
        }
        Ok(())
    }

    /// Registers a stream whose head the caller loaded itself (the cqrs-es path), under the
    /// stream's stripe, dropping a state of it the stripe may cache: these events bypass it.
    pub(crate) async fn set_head(
        &mut self,
        aggregate_type: &'static str,
        aggregate_id: &str,
        prev_hash: Vec<u8>,
    ) -> Result<(), StoreError> {
        let stream = (aggregate_type, aggregate_id.to_string());
        let stripe = self.hold_stripe(&stream).await?;
        if stripe.as_ref().is_some_and(|cached| cached.key == stream) {
            **stripe = None;
        }
        let head = StreamHead {
            prev_hash,
            sequence: 0,
            snapshot_sequence: 0,
            state: None,
            snapshot: None,
            from_cache: false,
            written: true,
            pending: None,
        };
        self.heads.insert(stream, head);
        Ok(())
    }

    /// Claims `value` of `kind` (a username, an email, a reference) for `owner`, at commit.
    pub fn claim(&mut self, kind: &str, value: &str, owner: &str) {
        let claim = Claim { kind: kind.to_string(), value: value.to_string(), owner: owner.to_string() };
        self.claims.push(claim);
    }

    /// Stages a write to a side table (credentials, personal data, indexes), run at commit
    /// after the events, in the same transaction.
    pub fn stage_statement(&mut self, sql: &'static str, arguments: PgArguments) {
        self.statements.push((sql, arguments));
    }

    /// Writes everything staged and commits. `respond` builds the answer from the position
    /// of the last event; with an idempotency key it is stored in the same transaction.
    pub async fn commit(mut self, respond: impl FnOnce(Option<i64>) -> Outcome) -> Result<Committed, StoreError> {
        let position = self.write_events().await?;
        for claim in std::mem::take(&mut self.claims) {
            let inserted =
                sqlx::query("INSERT INTO claims (kind, value, owner) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(&claim.kind)
                    .bind(&claim.value)
                    .bind(&claim.owner)
                    .execute(&mut **self.tx())
                    .await?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::ClaimTaken { kind: claim.kind });
            }
        }
        for (sql, arguments) in std::mem::take(&mut self.statements) {
            sqlx::query_with(sql, arguments).execute(&mut **self.tx()).await.map_err(
                |error| match is_unique_violation(&error) {
                    true => StoreError::Conflict,
                    false => StoreError::Database(error),
                },
            )?;
        }
        let mut outcome = respond(position);
        outcome.position = position;
        if let Some(key) = self.idempotency.clone() {
            sqlx::query(
                "INSERT INTO command_outcomes (command_id, request_hash, status, body, location, position) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(key.command_id)
            .bind(&key.request_hash)
            .bind(outcome.status as i16)
            .bind(&outcome.body)
            .bind(&outcome.location)
            .bind(position)
            .execute(&mut **self.tx())
            .await
            .map_err(|error| match is_unique_violation(&error) {
                true => StoreError::Conflict,
                false => StoreError::Database(error),
            })?;
        }
        self.check_cached_reads().await?;
        let waits_for: Vec<PendingCommit> = self.heads.values().filter_map(|head| head.pending.clone()).collect();
        // Every statement ran: the stripes go, and our states with them, marked pending on
        // this commit, so the next command on these streams need not wait for it.
        let (outcome_sender, this_commit) = watch::channel(None);
        let heads = std::mem::take(&mut self.heads);
        let snapshots = self.cache_states(heads, |_| true, Some(this_commit));
        self.stream_locks.clear();
        for pending in waits_for {
            if !committed(pending).await {
                // Our states built on one that never committed; dropping the sender fails
                // whoever built on ours. Retried from the database.
                return Err(StoreError::Conflict);
            }
        }
        let result = self.tx.take().expect("open transaction").commit().await;
        outcome_sender.send_replace(Some(result.is_ok()));
        result?;
        if position.is_some() {
            self.store.inner.committed.send_modify(|commits| *commits = commits.wrapping_add(1));
            self.store.inner.notify_others.notify_one();
        }
        self.store.write_due_snapshots(snapshots);
        Ok(Committed { position, outcome })
    }

    /// A stream only read, from the cache, must still be at the cached sequence: another
    /// process may have appended to it, and nothing else in this unit of work would notice.
    async fn check_cached_reads(&mut self) -> Result<(), StoreError> {
        let (mut types, mut ids, mut sequences) = (Vec::new(), Vec::new(), Vec::new());
        for ((aggregate_type, aggregate_id), head) in &self.heads {
            if head.from_cache && !head.written {
                types.push(aggregate_type.to_string());
                ids.push(aggregate_id.clone());
                sequences.push(head.sequence);
            }
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
        .fetch_one(&mut **self.tx())
        .await?;
        self.cache_stale = moved;
        match moved {
            true => Err(StoreError::Conflict),
            false => Ok(()),
        }
    }

    /// Leaves each stream's state (those `keep` selects) in its stripe's cache for the next
    /// unit of work, and returns the snapshots that came due with their head hashes. A stream
    /// written here waits on `this_commit`; one only read keeps what its state waited on.
    fn cache_states(
        &mut self,
        heads: HashMap<(&'static str, String), StreamHead>,
        keep: impl Fn(&StreamHead) -> bool,
        this_commit: Option<PendingCommit>,
    ) -> Vec<DueSnapshot> {
        let mut due = Vec::new();
        for (key, mut head) in heads {
            if let Some(snapshot) = head.snapshot.take() {
                head.snapshot_sequence = snapshot.sequence;
                due.push(DueSnapshot { key: key.clone(), head_hash: head.prev_hash.clone(), snapshot });
            }
            let Some(state) = head.state.take().filter(|_| keep(&head)) else { continue };
            let stripe = self.store.stream_stripe(&key);
            if let Some((_, guard)) = self.stream_locks.iter_mut().find(|(held, _)| *held == stripe) {
                let pending = match head.written {
                    true => this_commit.clone(),
                    false => head.pending,
                };
                **guard = Some(CachedStream {
                    key,
                    sequence: head.sequence,
                    head_hash: head.prev_hash,
                    snapshot_sequence: head.snapshot_sequence,
                    state,
                    pending,
                });
            }
        }
        due
    }

    /// Allocates positions, chains hashes per stream and inserts every staged event in one
    /// statement. Returns the last position, or `None` when nothing was staged.
    async fn write_events(&mut self) -> Result<Option<i64>, StoreError> {
        if self.staged.is_empty() {
            return Ok(None);
        }
        let positions: Vec<i64> = sqlx::query_scalar("SELECT ledger_allocate_positions($1)")
            .bind(self.staged.len() as i32)
            .fetch_one(&mut **self.tx())
            .await?;
        assert_eq!(positions.len(), self.staged.len(), "one position per staged event");
        let metadata = self.context.metadata();
        let mut rows = EventRows::default();
        for (event, position) in self.staged.iter().zip(&positions) {
            let key = (event.aggregate_type, event.aggregate_id.clone());
            let head = self.heads.get_mut(&key).expect("a staged stream has a head");
            let recorded = RecordedEvent {
                position: *position,
                aggregate_type: event.aggregate_type.to_string(),
                aggregate_id: event.aggregate_id.clone(),
                sequence: event.sequence,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: event.payload.clone(),
                metadata: metadata.clone(),
            };
            let canonical = recorded.canonical().map_err(StoreError::corrupt)?;
            let hash = chain_hash(&head.prev_hash, &canonical);
            rows.push(&recorded, canonical, std::mem::replace(&mut head.prev_hash, hash.to_vec()), hash);
        }
        rows.insert(self.tx()).await?;
        Ok(positions.last().copied())
    }
}

impl Store {
    /// Writes snapshots that came due, off the command path: the caller does not wait.
    fn write_due_snapshots(&self, due: Vec<DueSnapshot>) {
        for DueSnapshot { key: (aggregate_type, aggregate_id), head_hash, snapshot } in due {
            let pool = self.pool().clone();
            tokio::spawn(async move {
                let result = sqlx::query(
                    "INSERT INTO snapshots (aggregate_type, aggregate_id, schema_version, last_sequence, head_hash, state) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
                       schema_version = EXCLUDED.schema_version, last_sequence = EXCLUDED.last_sequence, \
                       head_hash = EXCLUDED.head_hash, state = EXCLUDED.state, taken_at = now() \
                     WHERE snapshots.last_sequence < EXCLUDED.last_sequence \
                        OR snapshots.schema_version <> EXCLUDED.schema_version",
                )
                .bind(aggregate_type)
                .bind(&aggregate_id)
                .bind(snapshot.schema_version)
                .bind(snapshot.sequence)
                .bind(head_hash)
                .bind(snapshot.state)
                .execute(&pool)
                .await;
                if let Err(error) = result {
                    tracing::warn!(%error, aggregate_type, aggregate_id, "snapshot not written; loads replay more");
                }
            });
        }
    }
}

impl Drop for UnitOfWork {
    /// A unit of work dropped without commit (a rejection, an error) rolls back at once:
    /// sqlx would only queue the rollback until the connection is used again, and until then
    /// the idempotency lock would make a repeat answer "in progress".
    fn drop(&mut self) {
        // States of streams this unit of work did not write are still the committed ones.
        let heads = std::mem::take(&mut self.heads);
        let cache_stale = self.cache_stale;
        let _rolled_back_snapshots = self.cache_states(heads, |head| !head.written && !cache_stale, None);
        if let Some(tx) = self.tx.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(error) = tx.rollback().await {
                        tracing::debug!(%error, "rollback of an abandoned unit of work failed");
                    }
                });
            }
        }
    }
}

/// Takes the stripe's cached state if it is `stream`'s and its writer has not failed (then
/// the state is dropped and the stream loaded from the database).
fn take_cached(stripe: &mut StripeGuard, stream: &(&'static str, String)) -> Option<CachedStream> {
    let mut cached = match stripe.as_ref() {
        Some(cached) if cached.key == *stream => stripe.take()?,
        _ => return None,
    };
    match cached.pending.as_ref().map(commit_state) {
        Some(CommitState::Failed) => None,
        Some(CommitState::Committed) => {
            cached.pending = None;
            Some(cached)
        }
        Some(CommitState::Running) | None => Some(cached),
    }
}

/// A snapshot to write after commit, with the head hash it was taken at.
struct DueSnapshot {
    key: (&'static str, String),
    head_hash: Vec<u8>,
    snapshot: PendingSnapshot,
}

/// Column arrays for one multi-row insert through `UNNEST`.
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
        let result = sqlx::query(
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
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(StoreError::Conflict),
            Err(error) => Err(StoreError::Database(error)),
        }
    }
}

/// Metadata of a stored event as a plain map (for cqrs-es envelopes).
pub(crate) fn metadata_map(metadata: &BTreeMap<String, String>) -> HashMap<String, String> {
    metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
