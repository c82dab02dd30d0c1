//! Versioned upcasters: older stored event versions become today's shape on load. Stored
//! events are never rewritten.

use serde_json::Value;

use crate::error::StoreError;
use crate::record::RecordedEvent;

/// Today's payload for `recorded`. Version 1 is current for every event type; a new version
/// adds an arm here that rewrites the older payload.
pub fn upcast(recorded: &RecordedEvent) -> Result<Value, StoreError> {
    match recorded.event_version.as_str() {
        domain::EVENT_VERSION => Ok(recorded.payload.clone()),
        other => Err(StoreError::corrupt(format!(
            "{} {} has unknown version {other}",
            recorded.aggregate_type, recorded.event_type
        ))),
    }
}
