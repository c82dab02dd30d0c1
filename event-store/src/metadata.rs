//! Metadata carried by every event: who, why, and when.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

pub const ACTOR: &str = "actor";
pub const REQUEST_ID: &str = "request_id";
pub const CORRELATION_ID: &str = "correlation_id";
pub const CAUSATION_ID: &str = "causation_id";
pub const COMMAND_ID: &str = "command_id";
pub const TIMESTAMP: &str = "timestamp";

/// Who sent a command and under which ids; becomes every resulting event's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// A user id, or a component name such as `cli` or `saga:transfer`.
    pub actor: String,
    pub request_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub command_id: Uuid,
    /// The command's time, UTC, truncated to microseconds (what Postgres keeps).
    pub at: DateTime<Utc>,
}

impl CommandContext {
    /// A context for a fresh command with new ids, at the current time.
    pub fn new(actor: impl Into<String>) -> CommandContext {
        let request_id = Uuid::new_v4();
        CommandContext {
            actor: actor.into(),
            request_id,
            correlation_id: request_id,
            causation_id: None,
            command_id: Uuid::new_v4(),
            at: now_micros(),
        }
    }

    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut metadata = BTreeMap::new();
        metadata.insert(ACTOR.to_string(), self.actor.clone());
        metadata.insert(REQUEST_ID.to_string(), self.request_id.to_string());
        metadata.insert(CORRELATION_ID.to_string(), self.correlation_id.to_string());
        if let Some(causation_id) = self.causation_id {
            metadata.insert(CAUSATION_ID.to_string(), causation_id.to_string());
        }
        metadata.insert(COMMAND_ID.to_string(), self.command_id.to_string());
        metadata.insert(TIMESTAMP.to_string(), self.at.to_rfc3339_opts(SecondsFormat::Micros, true));
        metadata
    }
}

/// The current UTC time at the microsecond precision Postgres stores.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
