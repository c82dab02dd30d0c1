//! Recorded events: the canonical envelope every event is stored, hashed and published as.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::{to_canonical_string, CanonicalError};

/// The hash every chain starts from.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// One stored event, as readers (projectors, relay, audit) see it. It also reads from its
/// canonical text (the names `type` and `version`; `stream` is ignored), which is what the
/// relay publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    #[serde(alias = "type")]
    pub event_type: String,
    #[serde(alias = "version")]
    pub event_version: String,
    pub payload: Value,
    pub metadata: BTreeMap<String, String>,
    /// What readers worked out from the fields above, kept for the next reader of the same
    /// event. Not part of the event: never stored, serialised or compared.
    #[serde(skip)]
    pub(crate) memo: Memo,
}

/// Work done once per recorded event instead of once per reader: every projection decodes the
/// events of a batch and reads their time, and a decode (a walk of the JSON tree with field
/// name matching, decimal and UUID parsing) costs many times the clone of its result. Only
/// valid while the event's fields do not change, which they do not once it is read.
#[derive(Default)]
pub struct Memo {
    decoded: OnceLock<Box<dyn Any + Send + Sync>>,
    occurred_at: OnceLock<Option<chrono::DateTime<chrono::Utc>>>,
}

impl Memo {
    /// The value `decode` gives, computed at the first call for this event; `T` is the
    /// aggregate's event type, one per event.
    pub(crate) fn decoded<T, E>(&self, decode: impl FnOnce() -> Result<T, E>) -> Result<T, E>
    where
        T: Any + Clone + Send + Sync,
    {
        if let Some(decoded) = self.decoded.get().and_then(|decoded| decoded.downcast_ref::<T>()) {
            return Ok(decoded.clone());
        }
        let decoded = decode()?;
        let _ = self.decoded.set(Box::new(decoded.clone()));
        Ok(decoded)
    }
}

/// A copy of an event starts with nothing worked out (what a memo holds is not `Clone`).
impl Clone for Memo {
    fn clone(&self) -> Memo {
        Memo::default()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Memo")
    }
}

impl RecordedEvent {
    /// The RFC 8785 text that is hashed and stored.
    pub fn canonical(&self) -> Result<String, CanonicalError> {
        let envelope = serde_json::json!({
            "stream": format!("{}/{}", self.aggregate_type, self.aggregate_id),
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "sequence": self.sequence,
            "position": self.position,
            "type": self.event_type,
            "version": self.event_version,
            "payload": self.payload,
            "metadata": self.metadata,
        });
        to_canonical_string(&envelope)
    }

    /// Parses a stored canonical text back into an event.
    pub fn from_canonical(text: &str) -> Result<RecordedEvent, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// When the command that produced this event ran (UTC), from its metadata.
    pub fn occurred_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        *self.memo.occurred_at.get_or_init(|| {
            let text = self.metadata.get(crate::metadata::TIMESTAMP)?;
            chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc())
        })
    }
}

/// `SHA-256(prev_hash ‖ canonical)`: one link of a stream's chain.
pub fn chain_hash(prev_hash: &[u8], canonical: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical.as_bytes());
    hasher.finalize().into()
}

/// One link of the global chain, kept by the relay in position order over event hashes.
pub fn global_hash(prev_global: &[u8], event_hash: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_global);
    hasher.update(event_hash);
    hasher.finalize().into()
}

/// A message as the relay publishes it: the event and the position published before it, so
/// a consumer can tell a gap from a repeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedEvent {
    pub prev_position: i64,
    pub event: RecordedEvent,
}

impl PublishedEvent {
    /// The bytes of the message for a stored event: its canonical text as stored and hashed,
    /// wrapped as it is, so publishing neither parses nor re-encodes the event (and a
    /// consumer could check the text against the event's hash).
    pub fn message(prev_position: i64, canonical: &str) -> Vec<u8> {
        format!("{{\"prev_position\":{prev_position},\"event\":{canonical}}}").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_memo_decodes_once_and_a_copy_starts_with_nothing() {
        let memo = Memo::default();
        let decodes = Cell::new(0);
        let decode = || {
            decodes.set(decodes.get() + 1);
            Ok::<_, ()>(decodes.get().to_string())
        };

        assert_eq!(memo.decoded(decode), Ok("1".to_string()));
        assert_eq!(memo.decoded(decode), Ok("1".to_string()));
        assert_eq!(memo.clone().decoded(decode), Ok("2".to_string()));
        assert_eq!(decodes.get(), 2);
    }

    #[test]
    fn a_message_of_the_canonical_text_reads_as_the_event() {
        let event = RecordedEvent {
            position: 42,
            aggregate_type: "Wallet".into(),
            aggregate_id: "w-1".into(),
            sequence: 7,
            event_type: "Deposited".into(),
            event_version: "1".into(),
            payload: serde_json::json!({"Deposited": {"amount": "1.00"}}),
            metadata: BTreeMap::from([("actor".to_string(), "admin".to_string())]),
            memo: Memo::default(),
        };

        let message = PublishedEvent::message(41, &event.canonical().unwrap());
        let published: PublishedEvent = serde_json::from_slice(&message).unwrap();

        assert_eq!(published.prev_position, 41);
        assert_eq!(published.event, event);
        let serialised = serde_json::to_vec(&PublishedEvent { prev_position: 41, event: event.clone() }).unwrap();
        assert_eq!(serde_json::from_slice::<PublishedEvent>(&serialised).unwrap().event, event);
    }

    #[test]
    fn a_failed_decode_is_not_kept() {
        let memo = Memo::default();

        assert_eq!(memo.decoded(|| Err::<String, _>("corrupt")), Err("corrupt"));
        assert_eq!(memo.decoded(|| Ok::<_, &str>("fixed".to_string())), Ok("fixed".to_string()));
    }
}
