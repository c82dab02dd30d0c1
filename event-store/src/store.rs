//! The Postgres event store: loading aggregates (snapshot plus tail), reading by position,
//! and the shared state a unit of work needs.

use std::any::Any;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::postgres::{PgListener, PgNotification, PgPool};
use sqlx::{PgConnection, Row};
use tokio::sync::{mpsc, watch, Mutex, Notify, OwnedMutexGuard};
use uuid::Uuid;

use crate::commit;
use crate::error::StoreError;
use crate::record::{RecordedEvent, GENESIS_HASH};
use crate::write::{HeadHash, StreamKey};

/// Streams are serialised in-process through this many striped locks, so a hot wallet queues
/// instead of failing on optimistic conflicts (a bounded table, whatever the stream count).
const STREAM_LOCK_STRIPES: usize = 4096;
/// How long a command waits for its first stream's lock before it counts as a conflict.
const STREAM_LOCK_WAIT_MAX: Duration = Duration::from_secs(2);
/// How long a command already holding a stripe waits for another: two units of work taking
/// stripes in opposite orders (a purchase: listing then wallet; its settlement: wallet then
/// listing) wait for each other, and the sooner one gives up, retrying from scratch, the
/// sooner both get through.
const STREAM_LOCK_NESTED_WAIT_MAX: Duration = Duration::from_millis(50);
/// A snapshot is written once a stream has grown this many events past its last one.
pub const SNAPSHOT_INTERVAL_DEFAULT: i64 = 100;
/// The Postgres channel other processes' relays listen on.
pub const WAKE_CHANNEL: &str = "ecoledger_events";

/// An aggregate the store can snapshot. Bump `SNAPSHOT_VERSION` whenever the state's shape
/// changes: older snapshots are then ignored and the stream is replayed.
pub trait Snapshotted: Aggregate<Command: Clone> + Clone + 'static {
    const SNAPSHOT_VERSION: i32;
}

impl Snapshotted for domain::wallet::Wallet {
    const SNAPSHOT_VERSION: i32 = 1;
}

impl Snapshotted for domain::user::User {
    const SNAPSHOT_VERSION: i32 = 1;
}

impl Snapshotted for domain::transfer::Transfer {
    const SNAPSHOT_VERSION: i32 = 1;
}

impl Snapshotted for domain::listing::Listing {
    const SNAPSHOT_VERSION: i32 = 1;
}

impl Snapshotted for domain::purchase::Purchase {
    const SNAPSHOT_VERSION: i32 = 1;
}

impl Snapshotted for domain::chain::ChainMovement {
    const SNAPSHOT_VERSION: i32 = 1;
}

impl Snapshotted for domain::price::PriceFeed {
    /// 2: a tie of `observed_at` goes to the higher-priority source (1 kept the first).
    const SNAPSHOT_VERSION: i32 = 2;
}

/// A command running in this process (see [`Store::hold_command`]).
pub struct RunningCommand {
    store: Store,
    command_id: Uuid,
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        self.store.inner.commands_running.lock().expect("never poisoned").remove(&self.command_id);
        self.store.inner.command_finished.notify_waiters();
    }
}

/// An aggregate as loaded: its state, the stream's head, and where its snapshot stands.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub aggregate: A,
    pub sequence: i64,
    pub head_hash: Vec<u8>,
    pub snapshot_sequence: i64,
}

#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

/// The state of the stream a stripe served last, as written (or loaded) under the stripe's
/// lock: the next command on a hot stream starts from it instead of reloading. Other writers
/// (another process, the bulk path) cannot be seen here, so a cached state is only trusted
/// where a stale one would fail: a write chains from its sequence (the unique
/// `(aggregate_type, aggregate_id, sequence)` turns a stale one into a conflict and a retry
/// from the database), a stream only read is checked at commit, and a refusal is decided
/// again on the committed state (`UnitOfWork::execute_with`). Only states a unit of work
/// wrote are cached: a state only read from the database may predate a commit in flight.
///
/// A unit of work leaves its states here and lets go of its stripes once its statements ran,
/// before its COMMIT: the next command on the stream works on while the first one's commit
/// is flushed (and Postgres flushes several commits at once). `pending` says whether the state
/// is committed yet; a unit of work that started from a pending state commits only after that
/// one committed, and fails with a conflict (retried from the database) if it did not.
pub(crate) struct CachedStream {
    pub(crate) key: (&'static str, String),
    pub(crate) sequence: i64,
    pub(crate) head_hash: HeadHash,
    pub(crate) snapshot_sequence: i64,
    pub(crate) state: Box<dyn Any + Send + Sync>,
    pub(crate) pending: Option<PendingCommit>,
}

/// A unit of work's COMMIT as others wait for it: which unit, and `None` while it runs, then
/// whether it committed. A sender dropped without an answer counts as not committed.
#[derive(Clone)]
pub(crate) struct PendingCommit {
    pub(crate) unit: u64,
    pub(crate) outcome: watch::Receiver<Option<bool>>,
}

/// Where a pending commit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitState {
    Running,
    Committed,
    Failed,
}

pub(crate) fn commit_state(pending: &PendingCommit) -> CommitState {
    match *pending.outcome.borrow() {
        Some(true) => CommitState::Committed,
        Some(false) => CommitState::Failed,
        None if pending.outcome.has_changed().is_err() => CommitState::Failed,
        None => CommitState::Running,
    }
}

/// The commits still in flight that the states a unit of work's commands were refused on
/// came from (earlier commands on those streams, not committed yet). Such a refusal is this
/// process's newest word on the stream and stands, unless that commit then fails (a conflict,
/// a database error): the state it was decided on never was. A caller for whom a refusal is
/// final (a saga compensating, a command storing it as its outcome) asks [`stands`](Self::stands)
/// after letting go of the unit of work, and decides again from a fresh load if not; one that
/// acts on it in the same unit of work asks [`settled`](Self::settled) first.
#[derive(Clone, Default)]
pub struct RefusalBasis(Arc<std::sync::Mutex<Vec<PendingCommit>>>);

impl RefusalBasis {
    pub(crate) fn add(&self, commit: PendingCommit) {
        self.0.lock().expect("refusal basis lock poisoned").push(commit);
    }

    /// Whether every one of those commits has committed already (true when there are none).
    pub fn settled(&self) -> bool {
        let commits = self.0.lock().expect("refusal basis lock poisoned");
        commits.iter().all(|commit| commit_state(commit) == CommitState::Committed)
    }

    /// Waits until those commits ended; whether every one committed. Wait with no stripe
    /// held: a commit may need what a unit of work queued on its stripe holds.
    pub async fn stands(&self) -> bool {
        let commits = self.0.lock().expect("refusal basis lock poisoned").clone();
        for commit in commits {
            if !committed(commit).await {
                return false;
            }
        }
        true
    }
}

impl PendingCommit {
    /// Whether the commit is still running (neither committed nor failed).
    pub(crate) fn in_flight(&self) -> bool {
        commit_state(self) == CommitState::Running
    }
}

/// Waits until a pending commit ends; whether it committed.
pub(crate) async fn committed(mut pending: PendingCommit) -> bool {
    match pending.outcome.wait_for(Option::is_some).await {
        Ok(outcome) => *outcome == Some(true),
        Err(_) => false,
    }
}

/// A stripe of the in-process stream lock: the state of the stream it served last, and the
/// commits still in flight that wrote any of its streams.
#[derive(Default)]
pub(crate) struct Stripe {
    pub(crate) cached: Option<CachedStream>,
    /// Until one of these ends, the database may not show its write yet, so a stream it wrote
    /// is not loaded from there: the load would miss this process's newest word on the stream
    /// (its cached state was lost: another stream on the stripe took its place, or a commit
    /// built on it failed), and a refusal decided on that load would stand.
    in_flight: Vec<(StreamKey, PendingCommit)>,
}

impl Stripe {
    /// Notes that `commit`, not ended yet, writes `stream`; forgets the commits that ended.
    pub(crate) fn note_in_flight(&mut self, stream: &StreamKey, commit: &PendingCommit) {
        self.in_flight.retain(|(_, pending)| pending.in_flight());
        self.in_flight.push((stream.clone(), commit.clone()));
    }

    /// Whether a commit of this process that wrote `stream` is still in flight.
    pub(crate) fn writes_in_flight(&self, stream: &StreamKey) -> bool {
        self.in_flight.iter().any(|(key, pending)| key == stream && pending.in_flight())
    }
}

/// A held stripe, with the stream state it caches.
pub(crate) type StripeGuard = OwnedMutexGuard<Stripe>;

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    stripes: Vec<Arc<Mutex<Stripe>>>,
    /// Counts commits in this process: the relay wakes on its changes.
    pub(crate) committed: watch::Sender<u64>,
    /// Counts commits in this process that created or woke a saga: the saga workers wake on
    /// its changes (not on every commit, where each would look for due sagas in vain).
    pub(crate) saga_staged: watch::Sender<u64>,
    /// Wakes the task that sends the debounced cross-process NOTIFY.
    pub(crate) notify_others: Arc<Notify>,
    /// Sent as the NOTIFY's payload, so this store's own listeners tell its wake-ups from
    /// other processes' (its own commits woke them in-process already).
    instance: String,
    pub(crate) snapshot_interval: i64,
    /// The group committer's queue (commit.rs).
    pub(crate) committer: commit::Queue,
    /// Numbers units of work, so a group knows which of the commits it waits for are its own.
    next_unit: AtomicU64,
    /// Commands (by id) running in this process, so a repeat of an idempotency key waits or
    /// is refused instead of running beside the first (across processes the stored outcome's
    /// key decides at commit).
    commands_running: std::sync::Mutex<HashSet<Uuid>>,
    command_finished: Notify,
}

/// What a commit wrote, for the wake-ups that follow it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wrote {
    pub(crate) events: bool,
    pub(crate) saga: bool,
}

impl Store {
    pub fn new(pool: PgPool) -> Store {
        Store::with_snapshot_interval(pool, SNAPSHOT_INTERVAL_DEFAULT)
    }

    pub fn with_snapshot_interval(pool: PgPool, snapshot_interval: i64) -> Store {
        let notify_others = Arc::new(Notify::new());
        let instance = Uuid::new_v4().simple().to_string();
        let (committer, queue) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            pool: pool.clone(),
            stripes: (0..STREAM_LOCK_STRIPES).map(|_| Arc::new(Mutex::new(Stripe::default()))).collect(),
            committed: watch::Sender::new(0),
            saga_staged: watch::Sender::new(0),
            notify_others: notify_others.clone(),
            instance: instance.clone(),
            snapshot_interval: snapshot_interval.max(1),
            committer,
            next_unit: AtomicU64::new(1),
            commands_running: std::sync::Mutex::new(HashSet::new()),
            command_finished: Notify::new(),
        });
        commit::start(queue, &inner);
        tokio::spawn(send_debounced_notifies(pool, notify_others, instance));
        Store { inner }
    }

    /// A new unit of work's number.
    pub(crate) fn next_unit(&self) -> u64 {
        self.inner.next_unit.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks command `command_id` as running in this process until the guard drops. A repeat
    /// that finds it running waits up to `wait_max` for it to end, then is refused with
    /// `IdempotencyKeyInProgress`.
    pub async fn hold_command(&self, command_id: Uuid, wait_max: Duration) -> Result<RunningCommand, StoreError> {
        let deadline = tokio::time::Instant::now() + wait_max;
        loop {
            let finished = self.inner.command_finished.notified();
            if self.inner.commands_running.lock().expect("never poisoned").insert(command_id) {
                return Ok(RunningCommand { store: self.clone(), command_id });
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return Err(StoreError::IdempotencyKeyInProgress);
            }
        }
    }

    /// After a commit: wakes this process's relay, its saga workers when a saga was staged,
    /// other processes' (debounced), and writes the snapshots that came due, off the command
    /// path.
    pub(crate) fn after_commit(&self, wrote: Wrote, snapshots: Vec<crate::uow::DueSnapshot>) {
        if wrote.events {
            self.inner.committed.send_modify(|commits| *commits = commits.wrapping_add(1));
        }
        if wrote.saga {
            self.inner.saga_staged.send_modify(|commits| *commits = commits.wrapping_add(1));
        }
        if wrote.events || wrote.saga {
            self.inner.notify_others.notify_one();
        }
        self.write_due_snapshots(snapshots);
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Changes after every commit of events in this process (the in-process wake-up of the
    /// relay; other processes get a debounced NOTIFY).
    pub fn commit_signal(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// Waits for the next wake-up NOTIFY on `WAKE_CHANNEL` sent by another process (or
    /// another store). This store's own, sent for others, are skipped: they followed commits
    /// that [`Store::commit_signal`] and [`Store::saga_signal`] announced already, and
    /// answering them cost the relay and the saga workers a query each that found nothing.
    /// Errors: the listener's connection failed.
    pub async fn wake_up_from_others(&self, listener: &mut PgListener) -> Result<PgNotification, sqlx::Error> {
        loop {
            let notification = listener.recv().await?;
            if notification.payload() != self.inner.instance {
                return Ok(notification);
            }
        }
    }

    /// Changes after every commit in this process that staged a saga statement (the
    /// in-process wake-up of the saga workers; other processes get a debounced NOTIFY).
    pub fn saga_signal(&self) -> watch::Receiver<u64> {
        self.inner.saga_staged.subscribe()
    }

    /// The striped lock a stream queues on in this process.
    pub(crate) fn stream_stripe(&self, aggregate_type: &str, aggregate_id: &str) -> usize {
        // Each part hashed as it is (a `str` hash ends with a terminator, so the two parts
        // cannot run into each other): no string built per lookup.
        let mut hasher = DefaultHasher::new();
        aggregate_type.hash(&mut hasher);
        aggregate_id.hash(&mut hasher);
        (hasher.finish() as usize) % STREAM_LOCK_STRIPES
    }

    /// Whether two streams share a stripe, so that one's cached state takes the other's place:
    /// for tests of what follows.
    #[doc(hidden)]
    pub fn share_a_stripe(&self, (a_type, a_id): (&'static str, &str), (b_type, b_id): (&'static str, &str)) -> bool {
        self.stream_stripe(a_type, a_id) == self.stream_stripe(b_type, b_id)
    }

    /// Takes stripe `index`, waiting at most `STREAM_LOCK_WAIT_MAX`, or
    /// `STREAM_LOCK_NESTED_WAIT_MAX` when the caller holds stripes already (then a conflict:
    /// two units of work that took stripes in opposite orders back off and retry).
    pub(crate) async fn lock_stripe(&self, index: usize, holding_others: bool) -> Result<StripeGuard, StoreError> {
        let stripe = self.inner.stripes[index].clone();
        let wait_max = match holding_others {
            true => STREAM_LOCK_NESTED_WAIT_MAX,
            false => STREAM_LOCK_WAIT_MAX,
        };
        tokio::time::timeout(wait_max, stripe.lock_owned()).await.map_err(|_| StoreError::Conflict)
    }

    /// Loads an aggregate from its snapshot (when `use_snapshot`) and the events after it.
    pub async fn load<A: Snapshotted>(
        &self,
        conn: &mut PgConnection,
        aggregate_id: &str,
        use_snapshot: bool,
    ) -> Result<Loaded<A>, StoreError> {
        let mut loaded = match use_snapshot {
            true => load_snapshot::<A>(conn, aggregate_id).await?,
            false => None,
        }
        .unwrap_or_else(|| Loaded {
            aggregate: A::default(),
            sequence: 0,
            head_hash: GENESIS_HASH.to_vec(),
            snapshot_sequence: 0,
        });
        let rows = sqlx::query(
            "SELECT sequence, canonical, prev_hash, hash FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(loaded.sequence)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let sequence: i64 = row.get(0);
            let prev_hash: Vec<u8> = row.get(2);
            if sequence != loaded.sequence + 1 || prev_hash != loaded.head_hash {
                return Err(StoreError::corrupt(format!(
                    "{}/{aggregate_id}: event {sequence} does not follow {} in the chain",
                    A::TYPE,
                    loaded.sequence
                )));
            }
            let recorded = RecordedEvent::from_canonical(row.get(1)).map_err(StoreError::corrupt)?;
            loaded.aggregate.apply(decode_event::<A>(&recorded)?);
            loaded.sequence = sequence;
            loaded.head_hash = row.get(3);
        }
        Ok(loaded)
    }

    /// Loads an aggregate outside any command, on a pooled connection.
    pub async fn load_current<A: Snapshotted>(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        self.load::<A>(&mut conn, aggregate_id, true).await
    }

    /// Events with positions in `(after, up_to]`, in position order, at most `limit`.
    /// Callers keep `up_to` at or below the relay's published watermark (or the commit-safe
    /// horizon), so no event can later appear below what they have read.
    pub async fn read_range(
        &self,
        conn: &mut PgConnection,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT canonical FROM events WHERE position > $1 AND position <= $2 \
             ORDER BY position LIMIT $3",
        )
        .bind(after)
        .bind(up_to)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(|row| RecordedEvent::from_canonical(row.get(0)).map_err(StoreError::corrupt)).collect()
    }

    /// The highest position the relay has published: readers by position stop there.
    pub async fn published_position(&self) -> Result<i64, StoreError> {
        let position = sqlx::query_scalar("SELECT published_position FROM relay_state WHERE id = 1")
            .fetch_one(&self.inner.pool)
            .await?;
        Ok(position)
    }
}

async fn load_snapshot<A: Snapshotted>(
    conn: &mut PgConnection,
    aggregate_id: &str,
) -> Result<Option<Loaded<A>>, StoreError> {
    let row = sqlx::query(
        "SELECT last_sequence, head_hash, state FROM snapshots \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND schema_version = $3",
    )
    .bind(A::TYPE)
    .bind(aggregate_id)
    .bind(A::SNAPSHOT_VERSION)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let state: Value = row.get(2);
    let aggregate = serde_json::from_value(state).map_err(StoreError::corrupt)?;
    let sequence: i64 = row.get(0);
    Ok(Some(Loaded { aggregate, sequence, head_hash: row.get(1), snapshot_sequence: sequence }))
}

/// [`decode_event`], done once per recorded event however many readers ask (the projections
/// of a batch each decode its events): later calls clone the first one's result.
pub fn decode_event_shared<A: Aggregate>(recorded: &RecordedEvent) -> Result<A::Event, StoreError>
where
    A::Event: 'static,
{
    recorded.memo.decoded(|| decode_event::<A>(recorded))
}

/// Turns a stored event into the aggregate's event type, upcasting older versions. A current
/// payload is read in place, never copied.
pub fn decode_event<A: Aggregate>(recorded: &RecordedEvent) -> Result<A::Event, StoreError> {
    let payload = crate::upcast::upcast(recorded)?;
    serde::Deserialize::deserialize(payload.as_ref()).map_err(|error: serde_json::Error| {
        StoreError::corrupt(format!(
            "{} {} v{} at position {}: {error}",
            recorded.aggregate_type, recorded.event_type, recorded.event_version, recorded.position
        ))
    })
}

/// Sends `NOTIFY` for other processes after commits, at most once per debounce window:
/// never inside a command's transaction, where it would serialise every commit.
async fn send_debounced_notifies(pool: PgPool, wake: Arc<Notify>, instance: String) {
    const DEBOUNCE: Duration = Duration::from_millis(20);
    loop {
        wake.notified().await;
        let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(WAKE_CHANNEL).bind(&instance).execute(&pool).await;
        if let Err(error) = sent {
            tracing::debug!(%error, "could not send the wake-up NOTIFY; the relays' poll covers it");
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}
