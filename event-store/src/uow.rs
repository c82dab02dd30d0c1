//! A unit of work: a command's events (the outbox), its uniqueness claims, side-table
//! statements and idempotency record, written in one Postgres transaction. Most units of work
//! never open one themselves: they load (from the stream cache or a pooled connection),
//! decide, and hand their writes to the group committer (commit.rs). One that needs its own
//! transaction (an advisory lock, a read that must share the committing snapshot) opens it
//! with [`UnitOfWork::connection`] and writes alone in it.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, Postgres, Row, Transaction};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::commit::Submission;
use crate::error::StoreError;
use crate::metadata::CommandContext;
use crate::record::GENESIS_HASH;
use crate::store::{
    commit_state, committed, CachedStream, CommitState, PendingCommit, RefusalBasis, Snapshotted, Store, StripeGuard,
    Wrote,
};
use crate::write::{
    allocate_positions, event_count, write_units, Claim, HeadHash, Respond, SideInsert, SideRow, StagedEvent,
    StreamKey, StreamWrite, UnitWrite,
};

/// How long a command waits for another attempt with its idempotency key, running in this
/// process, to finish before it answers "in progress".
pub const IDEMPOTENCY_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(250);

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

/// A stream this unit of work touched: the hash its first staged event chains from, and the
/// state after the commands handled so far, so a second command on the stream continues
/// from there (a saga step can capture a hold twice, a batch can hold many deposits).
struct StreamHead {
    start_hash: HeadHash,
    sequence: i64,
    snapshot_sequence: i64,
    state: Option<Box<dyn Any + Send + Sync>>,
    snapshot: Option<PendingSnapshot>,
    /// The stripe's cache entry the state came from, as this unit of work took it (`None`:
    /// loaded from the database). A state from the cache is checked at commit if only read,
    /// and the entry goes back to the cache when the unit of work commits nothing, whatever it
    /// wrote on the stream meanwhile: its commands never happened.
    taken: Option<CachedStream>,
    /// Whether this unit of work staged events on the stream.
    written: bool,
    /// The commit the state waits for, when it came from a unit of work still committing.
    pending: Option<PendingCommit>,
}

impl StreamHead {
    fn came_from_cache(&self) -> bool {
        self.taken.is_some()
    }

    /// The commit the state waits for, while it is still running.
    fn commit_in_flight(&self) -> Option<&PendingCommit> {
        self.pending.as_ref().filter(|pending| pending.in_flight())
    }
}

struct PendingSnapshot {
    schema_version: i32,
    sequence: i64,
    state: Value,
}

/// A snapshot to write after commit, with the head hash it was taken at.
pub(crate) struct DueSnapshot {
    key: StreamKey,
    head_hash: HeadHash,
    snapshot: PendingSnapshot,
}

pub struct UnitOfWork {
    store: Store,
    /// The unit of work's own transaction, once [`connection`](Self::connection) opened it.
    tx: Option<Transaction<'static, Postgres>>,
    /// Where loads and reads run while there is no transaction.
    reader: Option<PoolConnection<Postgres>>,
    context: CommandContext,
    idempotency: Option<Idempotency>,
    staged: Vec<StagedEvent>,
    heads: HashMap<StreamKey, StreamHead>,
    claims: Vec<Claim>,
    inserts: Vec<(&'static SideInsert, SideRow)>,
    statements: Vec<(&'static str, PgArguments)>,
    stages_saga: bool,
    /// Stripes held until the unit of work ends, by index.
    stream_locks: Vec<(usize, StripeGuard)>,
    refusal_basis: RefusalBasis,
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
    /// its stored outcome. A caller that may run one key twice at once holds it first
    /// ([`Store::hold_command`]); across processes, the outcome's key decides at commit (the
    /// second to store it conflicts, and its retry answers the first one's outcome).
    pub async fn begin(&self, context: CommandContext, idempotency: Option<Idempotency>) -> Result<Begun, StoreError> {
        if let Some(key) = &idempotency {
            if let Some(outcome) = stored_outcome(self, key).await? {
                return Ok(Begun::Replayed(outcome));
            }
        }
        Ok(Begun::Fresh(Box::new(UnitOfWork {
            store: self.clone(),
            tx: None,
            reader: None,
            context,
            idempotency,
            staged: Vec::new(),
            heads: HashMap::new(),
            claims: Vec::new(),
            inserts: Vec::new(),
            statements: Vec::new(),
            stages_saga: false,
            stream_locks: Vec::new(),
            refusal_basis: RefusalBasis::default(),
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

async fn stored_outcome(store: &Store, key: &Idempotency) -> Result<Option<Outcome>, StoreError> {
    let row = sqlx::query(
        "SELECT request_hash, status, body, location, position FROM command_outcomes WHERE command_id = $1",
    )
    .bind(key.command_id)
    .fetch_optional(store.pool())
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

    /// The commits in flight that the states this unit of work's commands were refused on came
    /// from: whether its refusals stand (wait for that with the unit of work let go).
    pub fn refusal_basis(&self) -> RefusalBasis {
        self.refusal_basis.clone()
    }

    /// The unit of work's own transaction, opened on first use (never for writes: stage
    /// those). For what must happen in the committing transaction: an advisory lock, a read
    /// that decides under it. The unit of work then commits alone, outside any group.
    pub async fn connection(&mut self) -> Result<&mut PgConnection, StoreError> {
        if self.tx.is_none() {
            self.tx = Some(self.store.pool().begin().await?);
            self.reader = None;
        }
        Ok(self.tx.as_mut().expect("opened above"))
    }

    /// A connection for plain reads: the transaction if one is open, else a pooled connection
    /// (Postgres's READ COMMITTED gives every statement its own snapshot either way).
    pub async fn reader(&mut self) -> Result<&mut PgConnection, StoreError> {
        if self.tx.is_none() && self.reader.is_none() {
            self.reader = Some(self.store.pool().acquire().await?);
        }
        match (&mut self.tx, &mut self.reader) {
            (Some(tx), _) => Ok(tx),
            (None, Some(reader)) => Ok(reader),
            (None, None) => unreachable!("acquired above"),
        }
    }

    /// Takes the in-process locks of `streams` (aggregate type and id) before any of them is
    /// loaded, in one global order. Units of work that take theirs this way never wait on
    /// each other in a cycle, so each may wait as long as for a first stream: two wallets
    /// written together (a transfer) no longer meet head on with a transfer the other way.
    /// Called after another stream was loaded, it falls back to the short wait of a second
    /// stream.
    pub async fn hold_streams(&mut self, streams: &[(&'static str, &str)]) -> Result<(), StoreError> {
        let nested = !self.stream_locks.is_empty();
        let mut stripes: Vec<usize> = streams.iter().map(|(kind, id)| self.store.stream_stripe(kind, id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        for stripe in stripes {
            if self.stream_locks.iter().any(|(held, _)| *held == stripe) {
                continue;
            }
            let guard = self.store.lock_stripe(stripe, nested).await?;
            self.stream_locks.push((stripe, guard));
        }
        Ok(())
    }

    /// The aggregate's state in this unit of work (from the cache or loaded, as `execute`
    /// finds it), for a command that must look at a stream before deciding on another. A
    /// later `execute` on the stream continues from it.
    pub async fn state<A: Snapshotted>(&mut self, aggregate_id: &str) -> Result<A, StoreError> {
        let stream = (A::TYPE, aggregate_id.to_string());
        let (aggregate, sequence) = self.current_state::<A>(&stream).await?;
        self.keep_state(&stream, aggregate.clone(), sequence);
        Ok(aggregate)
    }

    /// Loads the aggregate, handles `command` and stages the new events. A rejection by the
    /// aggregate comes back as `Ok(Err(..))` and stages nothing.
    pub async fn execute<A: Snapshotted>(
        &mut self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
    ) -> Result<Result<Executed<A>, A::Error>, StoreError> {
        self.execute_with::<A, A::Error>(aggregate_id, |_| Ok(command.clone()), services).await
    }

    /// Like [`execute`](Self::execute), for a stream this command creates under an id it has
    /// just made up (a new UUIDv4): nothing is loaded, the stream starts empty. Were it there
    /// after all, its first event would conflict on `(aggregate_type, aggregate_id, 1)`.
    pub async fn execute_new<A: Snapshotted>(
        &mut self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
    ) -> Result<Result<Executed<A>, A::Error>, StoreError> {
        let stream = (A::TYPE, aggregate_id.to_string());
        assert!(!self.heads.contains_key(&stream), "a new stream is created once per unit of work");
        self.hold_stripe(&stream).await?;
        let head = StreamHead {
            start_hash: HeadHash::Known(GENESIS_HASH.to_vec()),
            sequence: 0,
            snapshot_sequence: 0,
            state: Some(Box::new(A::default())),
            snapshot: None,
            taken: None,
            written: false,
            pending: None,
        };
        self.heads.insert(stream, head);
        self.execute::<A>(aggregate_id, command, services).await
    }

    /// Like [`execute`](Self::execute), with the command built from the loaded state by
    /// `decide` (which may refuse with the caller's error): one load where a command needs
    /// the aggregate first, say to check its owner or its currency.
    ///
    /// A refusal decided on a cached state is decided again on the stored one: the cache may
    /// be behind another process's write, and unlike a write (which conflicts) a refusal is
    /// never checked against the database. `decide` may therefore run twice. A state whose
    /// commit is still in flight is this process's newest word on the stream, and its refusal
    /// stands if that commit does ([`refusal_basis`](Self::refusal_basis)): waiting for the
    /// commit here, under the stream's stripe, would hold up a hot stream, and the commit may
    /// need a pooled connection that commands queued on the stripe hold.
    pub async fn execute_with<A: Snapshotted, E: From<A::Error>>(
        &mut self,
        aggregate_id: &str,
        mut decide: impl FnMut(&A) -> Result<A::Command, E>,
        services: &A::Services,
    ) -> Result<Result<Executed<A>, E>, StoreError> {
        let stream = (A::TYPE, aggregate_id.to_string());
        let (aggregate, sequence) = self.current_state::<A>(&stream).await?;
        let decided = self.decide_on::<A, E>(&stream, aggregate, sequence, &mut decide, services).await?;
        if decided.is_ok() {
            return Ok(decided);
        }
        if !self.decided_on_cache(&stream) {
            self.note_refusal_basis(&stream);
            return Ok(decided);
        }
        // The stored state takes the cached one's place in this unit of work.
        self.heads.remove(&stream);
        let (aggregate, sequence) = self.load_stored::<A>(&stream).await?;
        self.decide_on::<A, E>(&stream, aggregate, sequence, &mut decide, services).await
    }

    /// Decides and handles one command on the stream's state `aggregate` (at `sequence_before`)
    /// and stages its events; the state after it stays with the unit of work either way.
    async fn decide_on<A: Snapshotted, E: From<A::Error>>(
        &mut self,
        stream: &StreamKey,
        mut aggregate: A,
        sequence_before: i64,
        decide: &mut impl FnMut(&A) -> Result<A::Command, E>,
        services: &A::Services,
    ) -> Result<Result<Executed<A>, E>, StoreError> {
        let command = match decide(&aggregate) {
            Ok(command) => command,
            Err(refusal) => {
                self.keep_state(stream, aggregate, sequence_before);
                return Ok(Err(refusal));
            }
        };
        let before = aggregate.clone();
        let sink = EventSink::default();
        // `EventSink::write` applies each event as it is written: `aggregate` is the new state.
        if let Err(rejection) = aggregate.handle(command, services, &sink).await {
            self.keep_state(stream, before, sequence_before);
            return Ok(Err(rejection.into()));
        }
        let events = sink.collect().await;
        self.stage::<A>(&stream.1, sequence_before, &events)?;
        let sequence = sequence_before + events.len() as i64;
        let head = self.heads.get_mut(stream).expect("current_state registers the stream");
        if !events.is_empty() && sequence - head.snapshot_sequence >= self.store.inner.snapshot_interval {
            let state = serde_json::to_value(&aggregate).map_err(StoreError::corrupt)?;
            head.snapshot = Some(PendingSnapshot { schema_version: A::SNAPSHOT_VERSION, sequence, state });
        }
        self.keep_state(stream, aggregate.clone(), sequence);
        Ok(Ok(Executed { aggregate, events, sequence }))
    }

    /// Notes the commit in flight, if any, that the stream's state (just refused on) came from.
    fn note_refusal_basis(&self, stream: &StreamKey) {
        if let Some(pending) = self.heads.get(stream).and_then(StreamHead::commit_in_flight) {
            self.refusal_basis.add(pending.clone());
        }
    }

    /// Whether the stream's state in this unit of work is the cache's committed one, untouched
    /// by it: a refusal decided on it may be stale.
    fn decided_on_cache(&self, stream: &StreamKey) -> bool {
        self.heads
            .get(stream)
            .is_some_and(|head| head.came_from_cache() && !head.written && head.commit_in_flight().is_none())
    }

    /// The stream's stored state (snapshot + tail), loaded from the database and registered
    /// with this unit of work as not from the cache. While a commit of this process that
    /// wrote the stream is in flight, the database may not show it yet: a conflict, retried
    /// by the caller once that commit has ended (its state in the cache was lost meanwhile).
    async fn load_stored<A: Snapshotted>(&mut self, stream: &StreamKey) -> Result<(A, i64), StoreError> {
        if self.hold_stripe(stream).await?.writes_in_flight(stream) {
            return Err(StoreError::Conflict);
        }
        let store = self.store.clone();
        let loaded = store.load::<A>(self.reader().await?, &stream.1, true).await?;
        let head = StreamHead {
            start_hash: HeadHash::Known(loaded.head_hash),
            sequence: loaded.sequence,
            snapshot_sequence: loaded.snapshot_sequence,
            state: None,
            snapshot: None,
            taken: None,
            written: false,
            pending: None,
        };
        self.heads.insert(stream.clone(), head);
        Ok((loaded.aggregate, loaded.sequence))
    }

    /// The stream's state in this unit of work: as left by an earlier command, or loaded
    /// (snapshot + tail) under the stream's in-process lock.
    async fn current_state<A: Snapshotted>(&mut self, stream: &StreamKey) -> Result<(A, i64), StoreError> {
        if let Some(head) = self.heads.get_mut(stream) {
            let state = head.state.take().expect("a touched stream keeps its state");
            let state = state.downcast::<A>().expect("a stream holds one aggregate type");
            return Ok((*state, head.sequence));
        }
        let stripe = self.hold_stripe(stream).await?;
        if let Some(cached) = take_cached(stripe, stream) {
            if let Some(state) = cached.state.downcast_ref::<A>() {
                let state = state.clone();
                let sequence = cached.sequence;
                let head = StreamHead {
                    start_hash: cached.head_hash.clone(),
                    sequence,
                    snapshot_sequence: cached.snapshot_sequence,
                    state: None,
                    snapshot: None,
                    written: false,
                    pending: cached.pending.clone(),
                    taken: Some(cached),
                };
                self.heads.insert(stream.clone(), head);
                return Ok((state, sequence));
            }
        }
        self.load_stored::<A>(stream).await
    }

    /// Takes the stream's in-process stripe (once: streams of one unit of work may share one)
    /// and returns its cache slot.
    async fn hold_stripe(&mut self, stream: &StreamKey) -> Result<&mut StripeGuard, StoreError> {
        let stripe = self.store.stream_stripe(stream.0, &stream.1);
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

    fn keep_state<A: Snapshotted>(&mut self, stream: &StreamKey, aggregate: A, sequence: i64) {
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
        if stripe.cached.as_ref().is_some_and(|cached| cached.key == stream) {
            stripe.cached = None;
        }
        let head = StreamHead {
            start_hash: HeadHash::Known(prev_hash),
            sequence: 0,
            snapshot_sequence: 0,
            state: None,
            snapshot: None,
            taken: None,
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

    /// Stages a row of a side table (an index), inserted at commit before the statements,
    /// with the events, the claims and the rows of the other units of work committed with
    /// this one. `row` has a member per column of `insert`, named as it.
    pub fn stage_insert(&mut self, insert: &'static SideInsert, row: SideRow) {
        debug_assert!(
            row.len() == insert.columns.len() && insert.columns.iter().all(|(name, _)| row.contains_key(*name)),
            "a side row of {} names exactly its columns",
            insert.table
        );
        self.inserts.push((insert, row));
    }

    /// Stages a write to a side table (credentials, personal data, indexes), run at commit
    /// after the events, in the same transaction.
    pub fn stage_statement(&mut self, sql: &'static str, arguments: PgArguments) {
        self.statements.push((sql, arguments));
    }

    /// Stages a statement that creates a saga or makes one due: as
    /// [`stage_statement`](Self::stage_statement), and the saga workers wake after the commit.
    pub fn stage_saga_statement(&mut self, sql: &'static str, arguments: PgArguments) {
        self.stage_statement(sql, arguments);
        self.stages_saga = true;
    }

    /// Writes everything staged and commits. `respond` builds the answer from the position
    /// of the last event; with an idempotency key it is stored in the same transaction. It may
    /// be called more than once (a group that fails is written again unit by unit).
    ///
    /// Errors: `Conflict` (another command wrote first, or a state this one built on did not
    /// commit: retry from a fresh load), `ClaimTaken`, `Database`.
    pub async fn commit(
        mut self,
        respond: impl Fn(Option<i64>) -> Outcome + Send + Sync + 'static,
    ) -> Result<Committed, StoreError> {
        let write = self.take_write(Box::new(respond));
        match self.tx.take() {
            Some(tx) => self.commit_alone(tx, write).await,
            None if write.is_empty() => Ok(Committed { position: None, outcome: (write.respond)(None) }),
            None => self.commit_in_group(write).await,
        }
    }

    /// What this unit of work writes, taken out of it.
    fn take_write(&mut self, respond: Respond) -> UnitWrite {
        let mut streams = HashMap::new();
        for event in &self.staged {
            let key = (event.aggregate_type, event.aggregate_id.clone());
            if let std::collections::hash_map::Entry::Vacant(entry) = streams.entry(key) {
                let start = self.heads[entry.key()].start_hash.clone();
                entry.insert(StreamWrite { start, last: Arc::new(OnceLock::new()) });
            }
        }
        let cached_reads = self
            .heads
            .iter()
            .filter(|(_, head)| head.came_from_cache() && !head.written)
            .map(|(key, head)| (key.clone(), head.sequence))
            .collect();
        UnitWrite {
            metadata: self.context.metadata(),
            events: std::mem::take(&mut self.staged),
            streams,
            claims: std::mem::take(&mut self.claims),
            inserts: std::mem::take(&mut self.inserts),
            statements: std::mem::take(&mut self.statements),
            stages_saga: std::mem::take(&mut self.stages_saga),
            idempotency: self.idempotency.clone(),
            respond,
            cached_reads,
        }
    }

    /// Writes and commits in the unit of work's own transaction. Its hashes chain from the
    /// states it built on, so those must have committed first.
    async fn commit_alone(
        mut self,
        mut tx: Transaction<'static, Postgres>,
        write: UnitWrite,
    ) -> Result<Committed, StoreError> {
        let built_on: Vec<PendingCommit> = self.heads.values().filter_map(|head| head.pending.clone()).collect();
        for pending in built_on {
            if !committed(pending).await {
                return self.fail(tx, StoreError::Conflict);
            }
        }
        let units = [&write];
        let written = async {
            let positions = allocate_positions(&mut tx, event_count(&units)).await?;
            write_units(&mut tx, &units, &positions).await
        };
        let written = match written.await {
            Ok(mut written) => written.remove(0),
            Err(error) => return self.fail(tx, error),
        };
        let (outcome_sender, this_commit) = self.new_commit();
        let hashes = written.last_hashes.iter().map(|(key, hash)| (key.clone(), HeadHash::Known(hash.clone())));
        let snapshots = self.cache_states(Some((hashes.collect(), this_commit)));
        // Every statement ran: the stripes go, and our states with them, marked pending on
        // this commit, so the next command on these streams need not wait for it.
        self.stream_locks.clear();
        let result = tx.commit().await;
        outcome_sender.send_replace(Some(result.is_ok()));
        result?;
        let wrote = Wrote { events: written.position.is_some(), saga: write.stages_saga };
        self.store.after_commit(wrote, snapshots);
        Ok(Committed { position: written.position, outcome: written.outcome })
    }

    /// Leaves nothing of a failed commit in the cache (a stale read may have failed it) and
    /// rolls the transaction back.
    fn fail(mut self, tx: Transaction<'static, Postgres>, error: StoreError) -> Result<Committed, StoreError> {
        self.heads.clear();
        self.tx = Some(tx);
        Err(error)
    }

    /// Hands the writes to the group committer. The states go back to the cache pending on
    /// the group's commit, and the stripes are let go only once the submission is queued, so
    /// the next command on a stream queues behind this one.
    async fn commit_in_group(mut self, write: UnitWrite) -> Result<Committed, StoreError> {
        let depends_on = self.heads.values().filter_map(|head| head.pending.clone()).collect();
        let (outcome, this_commit) = self.new_commit();
        let hashes = write.streams.iter().map(|(key, stream)| (key.clone(), HeadHash::Pending(stream.last.clone())));
        let snapshots = self.cache_states(Some((hashes.collect(), this_commit.clone())));
        self.reader = None;
        let (reply, answer) = oneshot::channel();
        let submission = Submission { unit: this_commit.unit, write, depends_on, outcome, snapshots, reply };
        let queued = self.store.inner.committer.send(submission);
        self.stream_locks.clear();
        if queued.is_err() {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        }
        answer.await.unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed)))
    }

    fn new_commit(&self) -> (watch::Sender<Option<bool>>, PendingCommit) {
        let (sender, outcome) = watch::channel(None);
        (sender, PendingCommit { unit: self.store.next_unit(), outcome })
    }

    /// Leaves each stream's state in its stripe's cache for the next unit of work, and
    /// returns the snapshots that came due. When committing (`written`: the hash of each
    /// stream written, and this commit): a stream written waits on this commit, which its
    /// stripe notes as in flight; one only read is dropped, unless its own commit is still in
    /// flight. Otherwise (nothing committed) the cache's entries go back as they were taken.
    /// The cache so holds only states this process wrote.
    fn cache_states(&mut self, written: Option<(HashMap<StreamKey, HeadHash>, PendingCommit)>) -> Vec<DueSnapshot> {
        let mut due = Vec::new();
        for (key, mut head) in std::mem::take(&mut self.heads) {
            let entry = match (&written, head.written) {
                (Some((hashes, this_commit)), true) => {
                    let hash = hashes[&key].clone();
                    if let Some(snapshot) = head.snapshot.take() {
                        head.snapshot_sequence = snapshot.sequence;
                        due.push(DueSnapshot { key: key.clone(), head_hash: hash.clone(), snapshot });
                    }
                    head.state.take().map(|state| CachedStream {
                        key: key.clone(),
                        sequence: head.sequence,
                        head_hash: hash,
                        snapshot_sequence: head.snapshot_sequence,
                        state,
                        pending: Some(this_commit.clone()),
                    })
                }
                // Nothing committed: the entry goes back as it was taken, even if the unit of
                // work wrote on it (a later command refused): none of its commands happened.
                (None, _) => head.taken.take(),
                // So does one only read and still waiting for its own commit: the newest word
                // on the stream.
                (Some(_), false) if head.commit_in_flight().is_some() => head.taken.take(),
                // A committed state only read from the cache by a unit that commits shows a
                // stale read only at commit; one read from the database may predate a commit
                // that another unit of work starts meanwhile, and cached it would outlive it.
                _ => None,
            };
            let Some(stripe) = self.stripe_of(&key) else { continue };
            if let (Some((_, this_commit)), true) = (&written, head.written) {
                stripe.note_in_flight(&key, this_commit);
            }
            if let Some(entry) = entry {
                stripe.cached = Some(entry);
            }
        }
        due
    }

    /// The stripe of a stream, if this unit of work holds it (it does for every stream it
    /// touched until it lets go of them at commit).
    fn stripe_of(&mut self, stream: &StreamKey) -> Option<&mut StripeGuard> {
        let stripe = self.store.stream_stripe(stream.0, &stream.1);
        self.stream_locks.iter_mut().find(|(held, _)| *held == stripe).map(|(_, guard)| guard)
    }
}

impl Store {
    /// Writes snapshots that came due, off the command path: the caller does not wait.
    pub(crate) fn write_due_snapshots(&self, due: Vec<DueSnapshot>) {
        for DueSnapshot { key: (aggregate_type, aggregate_id), head_hash, snapshot } in due {
            let Some(head_hash) = head_hash.get().map(<[u8]>::to_vec) else { continue };
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
    /// sqlx would only queue the rollback until the connection is used again.
    fn drop(&mut self) {
        // States of streams this unit of work did not write are still the committed ones.
        let _never_written = self.cache_states(None);
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
fn take_cached(stripe: &mut StripeGuard, stream: &StreamKey) -> Option<CachedStream> {
    let mut cached = match stripe.cached.as_ref() {
        Some(cached) if cached.key == *stream => stripe.cached.take()?,
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

/// Metadata of a stored event as a plain map (for cqrs-es envelopes).
pub(crate) fn metadata_map(metadata: &BTreeMap<String, String>) -> HashMap<String, String> {
    metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
