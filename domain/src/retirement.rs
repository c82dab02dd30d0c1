//! A retirement certificate: what a retirement of credits held in the ledger proves, as the
//! public sees it. Its `cert_hash` is SHA-256 of the RFC 8785 (JSON canonicalisation) bytes of
//! [`Certificate::document`]; only that hash goes on the chain (`recordRetirement`), never a
//! name or a reason.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::money::{Amount, Currency};

/// What a certificate states. Ledger facts (`position`, `event_hash`, `retired_at`) come from
/// the `CreditsRetired` event; the words (beneficiary, reason, ...) from the retirement's
/// details, kept outside the events because they may name a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub id: Uuid,
    pub amount: Amount,
    pub beneficiary: String,
    pub reason: String,
    pub consumption_period: Option<String>,
    pub country: Option<String>,
    pub retired_at: DateTime<Utc>,
    /// Global position of the `CreditsRetired` event.
    pub position: i64,
    /// Hex of the `CreditsRetired` event's hash in the event store.
    pub event_hash: String,
}

/// The unit a certificate counts in: one CARBON credit is one tonne of CO2 equivalent.
pub const CERTIFICATE_UNIT: &str = "tCO2e";

impl Certificate {
    /// The JSON document the hash covers (absent optional fields are `null`, so the document's
    /// shape never varies).
    pub fn document(&self) -> Value {
        json!({
            "id": self.id,
            "amount": format!("{:.*}", Currency::Carbon.scale() as usize, self.amount.value()),
            "unit": CERTIFICATE_UNIT,
            "beneficiary": self.beneficiary,
            "reason": self.reason,
            "consumption_period": self.consumption_period,
            "country": self.country,
            "retired_at": self.retired_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "position": self.position,
            "event_hash": self.event_hash,
        })
    }
}
