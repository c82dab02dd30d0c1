//! JetStream naming and setup: a fan-out, not a store of record (DESIGN.md section 1).

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// How long JetStream keeps published events; anything older is read from Postgres.
const STREAM_AGE_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Window in which JetStream drops a repeated `Nats-Msg-Id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Bytes of an event's hash in its deduplication id: enough to tell apart two events stored
/// at one position, short enough to keep the id small.
const MESSAGE_ID_HASH_BYTES: usize = 8;

/// Subject prefix and the names derived from it, so parallel tests and deployments share a
/// NATS server without seeing each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    prefix: String,
}

impl Bus {
    /// `prefix` must be a NATS subject token: letters, digits, `-` and `_`.
    pub fn new(prefix: &str) -> Result<Bus, String> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!("NATS prefix {prefix:?} must be 1-64 letters, digits, '-' or '_'"));
        }
        Ok(Bus { prefix: prefix.to_string() })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.prefix.to_ascii_uppercase().replace('-', "_"))
    }

    pub fn event_subject(&self, aggregate_type: &str) -> String {
        format!("{}.events.{aggregate_type}", self.prefix)
    }

    pub fn all_events_subject(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The deduplication id of the event at `position` whose hash is `hash`: the same event
    /// published again gets the same id, so JetStream drops the repeat. The hash is part of it
    /// because a position alone does not name one event: a database restored from a backup,
    /// recreated, or a replica promoted after losing its last commits gives new events the
    /// positions of events already published under this prefix, and JetStream would drop
    /// those as repeats for its whole duplicate window (the projector then learns of them
    /// only from its catch-up poll).
    pub fn message_id(&self, position: i64, hash: &[u8]) -> String {
        let hash_prefix = &hash[..hash.len().min(MESSAGE_ID_HASH_BYTES)];
        format!("{}:{position}:{}", self.prefix, hex::encode(hash_prefix))
    }

    /// Creates the events stream when missing (the code owns it, not an operator).
    pub async fn ensure_stream(&self, context: &jetstream::Context) -> Result<stream::Stream, String> {
        let config = stream::Config {
            name: self.events_stream(),
            subjects: vec![self.all_events_subject()],
            max_age: STREAM_AGE_MAX,
            duplicate_window: DUPLICATE_WINDOW,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        match context.get_or_create_stream(config).await {
            Ok(stream) => Ok(stream),
            // Another process (a standby relay, a consumer) created it between our lookup and
            // our create: NATS then refuses ours as "subjects overlap". Take theirs.
            Err(create_error) => context.get_stream(self.events_stream()).await.map_err(|_| create_error.to_string()),
        }
    }
}

/// Connects to NATS without blocking start-up on it: the command path never needs NATS, and
/// the client keeps reconnecting in the background.
pub async fn connect(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .name("ecoledger")
        .connect(url)
        .await
}
