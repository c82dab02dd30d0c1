//! The live projector: one active instance per projection (advisory lock), fed by JetStream,
//! filling gaps and the tail from Postgres.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use event_store::{Bus, PublishedEvent, RecordedEvent, Store, StoreError};
use futures::StreamExt;
use sqlx::PgConnection;

use crate::checkpoint::{advance, checkpoint};
use crate::Projection;

/// Events applied per transaction while catching up from Postgres.
pub(crate) const CATCH_UP_BATCH_MAX: i64 = 500;
/// How often the projector compares its checkpoint with the relay's watermark: the safety
/// net for a message lost at the tail, and the way forward while NATS is down.
const CATCH_UP_POLL: Duration = Duration::from_millis(500);
const STANDBY_POLL: Duration = Duration::from_secs(1);
const FAILURE_BACKOFF: Duration = Duration::from_millis(500);

pub struct Projector {
    store: Store,
    projection: Arc<dyn Projection>,
    bus: Bus,
    nats: Option<async_nats::Client>,
}

type Messages = consumer::pull::Stream;

impl Projector {
    pub fn new(store: Store, projection: Arc<dyn Projection>, bus: Bus, nats: Option<async_nats::Client>) -> Projector {
        Projector { store, projection, bus, nats }
    }

    /// Runs forever, starting over after any failure.
    pub async fn run(self) {
        loop {
            if let Err(error) = self.run_while_active().await {
                tracing::warn!(%error, projection = self.projection.name(), "projector interrupted; retrying");
            }
            tokio::time::sleep(FAILURE_BACKOFF).await;
        }
    }

    async fn run_while_active(&self) -> Result<(), StoreError> {
        let name = self.projection.name();
        let mut lock_conn = self.store.pool().acquire().await?.detach();
        while !event_store::try_advisory_lock(&mut lock_conn, event_store::PROJECTION_LOCK_CLASS, lock_object(name))
            .await?
        {
            tokio::time::sleep(STANDBY_POLL).await;
        }
        tracing::info!(projection = name, "projector active");
        let mut position = checkpoint(&mut lock_conn, name).await?;
        let mut messages = self.subscribe().await;
        let mut poll = tokio::time::interval(CATCH_UP_POLL);
        loop {
            tokio::select! {
                next = next_message(&mut messages) => match next {
                    Some(Ok(message)) => {
                        self.handle(&mut lock_conn, &message.payload, &mut position).await?;
                        if let Err(error) = message.ack().await {
                            tracing::debug!(%error, "ack failed; the message will be redelivered and ignored");
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, projection = name, "JetStream consumer failed; resubscribing");
                        messages = None;
                    }
                    None => messages = None,
                },
                _ = poll.tick() => {
                    let watermark = self.store.published_position().await?;
                    self.catch_up(&mut lock_conn, &mut position, watermark).await?;
                    if messages.is_none() {
                        messages = self.subscribe().await;
                    }
                }
            }
        }
    }

    /// A durable pull consumer for this projection, or `None` while NATS is unreachable.
    async fn subscribe(&self) -> Option<Messages> {
        let nats = self.nats.as_ref()?;
        let result = async {
            let js = jetstream::new(nats.clone());
            let stream = self.bus.ensure_stream(&js).await?;
            let durable = format!("projection_{}", self.projection.name());
            let config = consumer::pull::Config {
                durable_name: Some(durable.clone()),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            };
            let consumer = stream.get_or_create_consumer(&durable, config).await.map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        }
        .await;
        result.map_err(|error| tracing::debug!(%error, "cannot subscribe yet")).ok()
    }

    /// Applies a published event when it follows the checkpoint, ignores a repeat, and fills
    /// a gap (a lost or reordered message) from Postgres.
    async fn handle(&self, conn: &mut PgConnection, payload: &[u8], position: &mut i64) -> Result<(), StoreError> {
        let published: PublishedEvent = match serde_json::from_slice(payload) {
            Ok(published) => published,
            Err(error) => {
                tracing::warn!(%error, "unreadable message ignored; Postgres fills the gap");
                return Ok(());
            }
        };
        if published.event.position <= *position {
            return Ok(());
        }
        if published.prev_position == *position {
            return self.apply_batch(conn, position, &[published.event]).await;
        }
        self.catch_up(conn, position, published.event.position).await
    }

    /// Applies every event after the checkpoint up to `up_to` (a published position).
    async fn catch_up(&self, conn: &mut PgConnection, position: &mut i64, up_to: i64) -> Result<(), StoreError> {
        while *position < up_to {
            let events = self.store.read_range(conn, *position, up_to, CATCH_UP_BATCH_MAX).await?;
            if events.is_empty() {
                return Ok(());
            }
            self.apply_batch(conn, position, &events).await?;
        }
        Ok(())
    }

    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        position: &mut i64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        let last = events.last().expect("a batch is never empty").position;
        let result = apply_in_transaction(conn, self.projection.as_ref(), *position, last, events).await;
        match result {
            Ok(()) => {
                *position = last;
                Ok(())
            }
            Err(StoreError::Conflict) => {
                // A rebuild moved the checkpoint under us: start again from where it left it.
                *position = checkpoint(conn, self.projection.name()).await?;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// Applies `events` and moves the checkpoint from `from` to `to`, all in one transaction.
pub(crate) async fn apply_in_transaction(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    from: i64,
    to: i64,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for event in events {
        projection.apply(&mut tx, event).await?;
    }
    advance(&mut tx, projection.name(), from, to).await?;
    tx.commit().await?;
    Ok(())
}

async fn next_message(messages: &mut Option<Messages>) -> Option<Result<jetstream::Message, String>> {
    match messages {
        Some(stream) => stream.next().await.map(|r| r.map_err(|e| e.to_string())),
        None => std::future::pending().await,
    }
}

/// The advisory lock object for a projection's name: FNV-1a, stable across builds, so every
/// instance of every version agrees on it.
fn lock_object(name: &str) -> i32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ byte as u32).wrapping_mul(0x0100_0193));
    hash as i32
}
