//! Versioned upcasters: older stored event versions become today's shape on load. Stored
//! events are never rewritten.

use std::borrow::Cow;

use serde_json::Value;

use crate::error::StoreError;
use crate::record::RecordedEvent;

/// Today's payload for `recorded`: the stored one, borrowed, when it is current. Version 1 is
/// current for every event type; a new version adds an arm here that rewrites the older
/// payload (an owned one).
pub fn upcast(recorded: &RecordedEvent) -> Result<Cow<'_, Value>, StoreError> {
    match recorded.event_version.as_str() {
        domain::EVENT_VERSION => Ok(Cow::Borrowed(&recorded.payload)),
        other => Err(StoreError::corrupt(format!(
            "{} {} has unknown version {other}",
            recorded.aggregate_type, recorded.event_type
        ))),
    }
}
