//! The outbox relay: one active instance publishes events to JetStream in position order,
//! only below the commit-safe horizon, and keeps the global hash chain.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use futures::future::try_join_all;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, Row};

use crate::bus::Bus;
use crate::error::StoreError;
use crate::record::{global_hash, PublishedEvent};
use crate::store::{Store, WAKE_CHANNEL};

/// Advisory lock (class, object) held by the active relay's session.
pub const RELAY_LOCK: (i32, i32) = (72560, 2);
/// Events read from Postgres per batch.
const RELAY_BATCH_MAX: i64 = 1000;
/// Publishes awaited together: the client stalls past about 5,000 in flight.
const PUBLISH_WINDOW_MAX: usize = 256;
/// Safety-net poll when no wake-up arrives (an aborted transaction sends none).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Poll while an older transaction is still running below a committed one.
const HORIZON_POLL: Duration = Duration::from_millis(5);
/// A standby checks this often whether the active relay went away.
const STANDBY_POLL: Duration = Duration::from_secs(1);
/// Pause after a failure (NATS or Postgres down) before trying again.
const FAILURE_BACKOFF: Duration = Duration::from_millis(500);
/// A chain checkpoint is stored after this many events, or this long, whichever comes first.
const CHECKPOINT_EVENTS: i64 = 1000;
const CHECKPOINT_AGE_MAX: Duration = Duration::from_secs(10);

pub struct Relay {
    store: Store,
    bus: Bus,
    nats: async_nats::Client,
}

/// Where the relay stands: last published position and the global chain's head.
struct RelayState {
    position: i64,
    global_hash: Vec<u8>,
    count: i64,
    checkpointed_count: i64,
    checkpointed_at: Instant,
}

impl Relay {
    pub fn new(store: Store, bus: Bus, nats: async_nats::Client) -> Relay {
        Relay { store, bus, nats }
    }

    /// Runs forever: waits to become the active relay, publishes, and starts over after any
    /// failure. NATS being down delays publishing; it never loses an event.
    pub async fn run(self) {
        loop {
            if let Err(error) = self.run_while_active().await {
                tracing::warn!(%error, "relay interrupted; retrying");
            }
            tokio::time::sleep(FAILURE_BACKOFF).await;
        }
    }

    async fn run_while_active(&self) -> Result<(), StoreError> {
        let mut lock_conn = self.store.pool().acquire().await?.detach();
        while !try_lock(&mut lock_conn, RELAY_LOCK).await? {
            tokio::time::sleep(STANDBY_POLL).await;
        }
        tracing::info!("relay active");
        let js = jetstream::new(self.nats.clone());
        self.bus.ensure_stream(&js).await.map_err(StoreError::nats_error)?;
        let mut listener = PgListener::connect_with(self.store.pool()).await?;
        listener.listen(WAKE_CHANNEL).await?;
        let mut state = load_state(&mut lock_conn).await?;
        let mut committed = self.store.commit_signal();
        loop {
            // Commits from here on wake the wait below at once; those before it are read now.
            committed.borrow_and_update();
            match self.publish_next_batch(&mut lock_conn, &js, &mut state).await? {
                BatchResult::Published => continue,
                BatchResult::WaitingForOlderTransaction => tokio::time::sleep(HORIZON_POLL).await,
                // A batch that took every committed event needs no second query to learn that
                // nothing is left (under load that query found nothing every other time).
                BatchResult::CaughtUp | BatchResult::Empty => {
                    tokio::select! {
                        _ = committed.changed() => {}
                        woken = self.store.wake_up_from_others(&mut listener) => { woken?; }
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
            }
        }
    }

    async fn publish_next_batch(
        &self,
        conn: &mut PgConnection,
        js: &jetstream::Context,
        state: &mut RelayState,
    ) -> Result<BatchResult, StoreError> {
        let rows = sqlx::query(
            "SELECT position, aggregate_type, canonical, hash, \
                    xact_id < pg_snapshot_xmin(pg_current_snapshot()) AS safe \
             FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(state.position)
        .bind(RELAY_BATCH_MAX)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Ok(BatchResult::Empty);
        }
        let safe: Vec<Unpublished> = rows
            .iter()
            .take_while(|row| row.get::<bool, _>(4))
            .map(|row| Unpublished {
                position: row.get(0),
                aggregate_type: row.get(1),
                canonical: row.get(2),
                hash: row.get(3),
            })
            .collect();
        if safe.is_empty() {
            return Ok(BatchResult::WaitingForOlderTransaction);
        }
        for window in safe.chunks(PUBLISH_WINDOW_MAX) {
            self.publish_window(js, state.position, window).await?;
            for event in window {
                state.global_hash = global_hash(&state.global_hash, &event.hash).to_vec();
                state.count += 1;
                state.position = event.position;
            }
            save_state(conn, state).await?;
        }
        match safe.len() == rows.len() && rows.len() < RELAY_BATCH_MAX as usize {
            true => Ok(BatchResult::CaughtUp),
            false => Ok(BatchResult::Published),
        }
    }

    async fn publish_window(
        &self,
        js: &jetstream::Context,
        mut prev_position: i64,
        events: &[Unpublished],
    ) -> Result<(), StoreError> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let payload = PublishedEvent::message(prev_position, &event.canonical);
            prev_position = event.position;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", self.bus.message_id(event.position, &event.hash).as_str());
            let subject = self.bus.event_subject(&event.aggregate_type);
            let ack =
                js.publish_with_headers(subject, headers, payload.into()).await.map_err(StoreError::nats_error)?;
            acks.push(ack.into_future());
        }
        try_join_all(acks).await.map_err(StoreError::nats_error)?;
        Ok(())
    }
}

/// A committed event the relay has yet to publish, as stored.
struct Unpublished {
    position: i64,
    aggregate_type: String,
    canonical: String,
    hash: Vec<u8>,
}

enum BatchResult {
    /// Published a batch; more may be committed already.
    Published,
    /// Published every event committed when the batch was read.
    CaughtUp,
    Empty,
    WaitingForOlderTransaction,
}

pub(crate) async fn try_lock(conn: &mut PgConnection, (class, object): (i32, i32)) -> Result<bool, StoreError> {
    let locked = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(class)
        .bind(object)
        .fetch_one(&mut *conn)
        .await?;
    Ok(locked)
}

async fn load_state(conn: &mut PgConnection) -> Result<RelayState, StoreError> {
    let row = sqlx::query("SELECT published_position, global_hash, global_count FROM relay_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let count: i64 = row.get(2);
    Ok(RelayState {
        position: row.get(0),
        global_hash: row.get(1),
        count,
        checkpointed_count: count,
        checkpointed_at: Instant::now(),
    })
}

async fn save_state(conn: &mut PgConnection, state: &mut RelayState) -> Result<(), StoreError> {
    let checkpoint_due = state.count - state.checkpointed_count >= CHECKPOINT_EVENTS
        || state.checkpointed_at.elapsed() >= CHECKPOINT_AGE_MAX;
    sqlx::query(
        "WITH saved AS ( \
           UPDATE relay_state SET published_position = $1, global_hash = $2, global_count = $3, \
                  updated_at = now() WHERE id = 1) \
         INSERT INTO chain_checkpoints (position, head_hash, count) \
         SELECT $1, $2, $3 WHERE $4 ON CONFLICT (position) DO NOTHING",
    )
    .bind(state.position)
    .bind(&state.global_hash)
    .bind(state.count)
    .bind(checkpoint_due)
    .execute(&mut *conn)
    .await?;
    if checkpoint_due {
        state.checkpointed_count = state.count;
        state.checkpointed_at = Instant::now();
    }
    Ok(())
}

impl StoreError {
    pub(crate) fn nats_error(error: impl std::fmt::Display) -> StoreError {
        StoreError::Nats(error.to_string())
    }
}
