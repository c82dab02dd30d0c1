//! The live projector: one active instance (advisory lock) runs every projection, fed by
//! JetStream, filling gaps and the tail from Postgres. Each projection keeps its own
//! checkpoint, moved in the same transaction as its writes; events are read from Postgres
//! once for all of them.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use event_store::{Bus, PublishedEvent, RecordedEvent, Store, StoreError};
use futures::{FutureExt, StreamExt};
use sqlx::{Executor, PgConnection};

use crate::checkpoint::{begin_moving_checkpoints, checkpoint};
use crate::Projection;

/// Events applied per transaction while catching up from Postgres.
pub(crate) const CATCH_UP_BATCH_MAX: i64 = 500;
/// How often the projector compares its checkpoints with the relay's watermark: the safety
/// net for a message lost at the tail, and the way forward while NATS is down.
const CATCH_UP_POLL: Duration = Duration::from_millis(500);
const STANDBY_POLL: Duration = Duration::from_secs(1);
const FAILURE_BACKOFF: Duration = Duration::from_millis(500);
/// The JetStream durable consumer of the projector.
const DURABLE_NAME: &str = "projections";

pub struct Projector {
    store: Store,
    projections: Vec<Arc<dyn Projection>>,
    bus: Bus,
    nats: Option<async_nats::Client>,
}

type Messages = consumer::pull::Stream;

/// A projection and the position it has applied up to.
struct Tracked {
    projection: Arc<dyn Projection>,
    position: i64,
}

impl Projector {
    pub fn new(
        store: Store,
        projections: Vec<Arc<dyn Projection>>,
        bus: Bus,
        nats: Option<async_nats::Client>,
    ) -> Projector {
        Projector { store, projections, bus, nats }
    }

    /// Runs forever, starting over after any failure.
    pub async fn run(self) {
        loop {
            if let Err(error) = self.run_while_active().await {
                tracing::warn!(%error, "projector interrupted; retrying");
            }
            tokio::time::sleep(FAILURE_BACKOFF).await;
        }
    }

    async fn run_while_active(&self) -> Result<(), StoreError> {
        let mut conn = self.store.pool().acquire().await?.detach();
        while !event_store::try_advisory_lock(&mut conn, event_store::PROJECTION_LOCK_CLASS, lock_object(DURABLE_NAME))
            .await?
        {
            tokio::time::sleep(STANDBY_POLL).await;
        }
        tracing::info!(projections = self.projections.len(), "projector active");
        let mut tracked = Vec::with_capacity(self.projections.len());
        for projection in &self.projections {
            let position = checkpoint(&mut conn, projection.name()).await?;
            tracked.push(Tracked { projection: projection.clone(), position });
        }
        let mut messages = self.subscribe().await;
        let mut poll = tokio::time::interval(CATCH_UP_POLL);
        loop {
            tokio::select! {
                next = next_message(&mut messages) => match next {
                    Some(Ok(message)) => {
                        let batch = drain_ready(message, messages.as_mut());
                        self.handle(&mut conn, &batch, &mut tracked).await?;
                        // The consumer acknowledges all (`AckPolicy::All`): the batch's last
                        // message acknowledges those before it, one message to NATS, not one per event.
                        let last = batch.last().expect("a batch holds its first message");
                        if let Err(error) = last.ack().await {
                            tracing::debug!(%error, "ack failed; the messages will be redelivered and ignored");
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "JetStream consumer failed; resubscribing");
                        messages = None;
                    }
                    None => messages = None,
                },
                _ = poll.tick() => {
                    let watermark = self.store.published_position().await?;
                    self.catch_up(&mut conn, &mut tracked, watermark).await?;
                    if messages.is_none() {
                        messages = self.subscribe().await;
                    }
                }
            }
        }
    }

    /// The durable pull consumer, or `None` while NATS is unreachable.
    async fn subscribe(&self) -> Option<Messages> {
        let nats = self.nats.as_ref()?;
        let result = async {
            let js = jetstream::new(nats.clone());
            let stream = self.bus.ensure_stream(&js).await?;
            let config = consumer::pull::Config {
                durable_name: Some(DURABLE_NAME.to_string()),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::All,
                ..Default::default()
            };
            let mut consumer =
                stream.get_or_create_consumer(DURABLE_NAME, config.clone()).await.map_err(|e| e.to_string())?;
            // A consumer made by an earlier version acknowledged each message: replaced, since
            // JetStream does not change a consumer's ack policy. Whatever it had not delivered
            // is read from Postgres (`catch_up`), like anything else a subscription missed.
            if consumer.cached_info().config.ack_policy != consumer::AckPolicy::All {
                stream.delete_consumer(DURABLE_NAME).await.map_err(|e| e.to_string())?;
                consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
            }
            consumer.messages().await.map_err(|e| e.to_string())
        }
        .await;
        result.map_err(|error| tracing::debug!(%error, "cannot subscribe yet")).ok()
    }

    /// Applies published events: one that follows every checkpoint directly, repeats not at
    /// all, and anything else (a batch, a lost or reordered message) from Postgres in
    /// transactions of many events, up to the newest position seen.
    async fn handle(
        &self,
        conn: &mut PgConnection,
        batch: &[jetstream::Message],
        tracked: &mut [Tracked],
    ) -> Result<(), StoreError> {
        let lowest = tracked.iter().map(|t| t.position).min().unwrap_or(0);
        let mut published: Vec<PublishedEvent> = Vec::with_capacity(batch.len());
        for message in batch {
            match serde_json::from_slice::<PublishedEvent>(&message.payload) {
                Ok(event) if event.event.position > lowest => published.push(event),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "unreadable message ignored; Postgres fills the gap"),
            }
        }
        if published.is_empty() {
            return Ok(());
        }
        if follows_every_checkpoint(&published, tracked) {
            let events: Vec<RecordedEvent> = published.into_iter().map(|p| p.event).collect();
            return apply_all(conn, tracked, &events).await;
        }
        let newest = published.iter().map(|p| p.event.position).max().expect("not empty");
        self.catch_up(conn, tracked, newest).await
    }

    /// Applies every event after each checkpoint up to `up_to` (a published position),
    /// reading each batch from Postgres once for every projection.
    async fn catch_up(&self, conn: &mut PgConnection, tracked: &mut [Tracked], up_to: i64) -> Result<(), StoreError> {
        loop {
            let lowest = tracked.iter().map(|t| t.position).min().unwrap_or(up_to);
            if lowest >= up_to {
                return Ok(());
            }
            let events = self.store.read_range(conn, lowest, up_to, CATCH_UP_BATCH_MAX).await?;
            if events.is_empty() {
                return Ok(());
            }
            apply_all(conn, tracked, &events).await?;
        }
    }
}

/// Whether the messages, in order, are the events right after every projection's checkpoint:
/// each names the one before it as its predecessor, the first the checkpoint itself. Then they
/// are applied as received; otherwise the gap (or the reordering) is read from Postgres.
fn follows_every_checkpoint(published: &[PublishedEvent], tracked: &[Tracked]) -> bool {
    let Some(first) = published.first() else { return false };
    let chained = published.windows(2).all(|pair| pair[1].prev_position == pair[0].event.position);
    chained && tracked.iter().all(|t| t.position == first.prev_position)
}

/// Applies `events` to every projection that has not seen them and moves their checkpoints,
/// all in one transaction: one commit per batch, whatever the number of projections. A rebuild
/// that moved a checkpoint under us fails it; the checkpoints are then reloaded and the
/// events come again from Postgres.
async fn apply_all(
    conn: &mut PgConnection,
    tracked: &mut [Tracked],
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    let last = events.last().expect("a batch is never empty").position;
    let behind: Vec<&Tracked> = tracked.iter().filter(|t| t.position < last).collect();
    if behind.is_empty() {
        return Ok(());
    }
    let result = apply_in_transaction(conn, &behind, events, last).await;
    // A failed statement left the transaction aborted. When its ROLLBACK fails too, the
    // connection is broken: the projector starts over on a new one, reporting the first error.
    if result.is_err() && conn.execute("ROLLBACK").await.is_err() {
        return result;
    }
    match result {
        Ok(()) => {
            for t in tracked.iter_mut() {
                t.position = t.position.max(last);
            }
            Ok(())
        }
        Err(StoreError::Conflict) => {
            for t in tracked.iter_mut() {
                t.position = checkpoint(conn, t.projection.name()).await?;
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// The transaction of [`apply_all`]: the checkpoints of the projections `behind` `last` moved
/// to it, then each one's unseen events applied.
async fn apply_in_transaction(
    conn: &mut PgConnection,
    behind: &[&Tracked],
    events: &[RecordedEvent],
    last: i64,
) -> Result<(), StoreError> {
    let moves: Vec<(&'static str, i64)> = behind.iter().map(|t| (t.projection.name(), t.position)).collect();
    begin_moving_checkpoints(conn, &moves, last).await?;
    for t in behind {
        let unapplied = events.partition_point(|e| e.position <= t.position);
        t.projection.apply_batch(conn, &events[unapplied..]).await?;
    }
    conn.execute("COMMIT").await?;
    Ok(())
}

/// The message just received and every one already buffered behind it (bounded), so a burst
/// is applied in a few transactions instead of one per event.
fn drain_ready(first: jetstream::Message, messages: Option<&mut Messages>) -> Vec<jetstream::Message> {
    let mut batch = vec![first];
    let Some(messages) = messages else { return batch };
    while batch.len() < CATCH_UP_BATCH_MAX as usize {
        match messages.next().now_or_never() {
            Some(Some(Ok(message))) => batch.push(message),
            _ => break,
        }
    }
    batch
}

async fn next_message(messages: &mut Option<Messages>) -> Option<Result<jetstream::Message, String>> {
    match messages {
        Some(stream) => stream.next().await.map(|r| r.map_err(|e| e.to_string())),
        None => std::future::pending().await,
    }
}

/// The advisory lock object for a name: FNV-1a, stable across builds, so every instance of
/// every version agrees on it.
fn lock_object(name: &str) -> i32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ byte as u32).wrapping_mul(0x0100_0193));
    hash as i32
}
