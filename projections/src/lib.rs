//! Read models built from events (DESIGN.md section 5): each projection applies events in
//! position order and stores its checkpoint in the same transaction as its writes, so a
//! replay from Postgres reproduces the live tables row for row.

mod audit;
mod chain;
mod checkpoint;
mod journal;
mod listings;
mod prices;
mod purchases;
mod replay;
mod runner;
mod system_accounts;
mod transactions;
mod transfers;
mod users;
mod wallet_entries;
mod wallets;

use std::sync::Arc;

use async_trait::async_trait;
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

pub use checkpoint::{checkpoint, checkpoints};
pub use prices::{Prices, PRICE_SOURCE_PRIORITY, PRICE_UPDATES_CHANNEL};
pub use replay::{rebuild_live, replay_into_schema, ReplayReport};
pub use runner::Projector;

/// A read model: tables it owns, and how one event changes them.
#[async_trait]
pub trait Projection: Send + Sync {
    /// Stable name: the checkpoint's key and the `--projection` argument.
    fn name(&self) -> &'static str;
    /// The tables this projection owns, in the search path's schema.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event. Events it does not care about are no-ops. Runs inside the
    /// transaction that also moves the checkpoint; table names are unqualified so the same
    /// code writes the live tables or a replay schema.
    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError>;

    /// Applies `events` in order; the result must equal applying them one by one. Projections
    /// that can write a batch in a few set-based statements override it (replays and
    /// catch-ups go through here).
    async fn apply_batch(&self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        for event in events {
            self.apply(conn, event).await?;
        }
        Ok(())
    }
}

/// Every projection, in a fixed order.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(users::Users),
        Arc::new(wallets::Wallets),
        Arc::new(wallet_entries::WalletEntries),
        Arc::new(system_accounts::SystemAccounts),
        Arc::new(transactions::Transactions),
        Arc::new(transfers::Transfers),
        Arc::new(listings::Listings),
        Arc::new(purchases::Purchases),
        Arc::new(audit::AuditEvents),
        Arc::new(journal::Journal),
        Arc::new(prices::Prices::default()),
        Arc::new(chain::Chain),
    ]
}

/// The projections named by `selector`: a projection's name, or `all`.
pub fn select(selector: &str) -> Option<Vec<Arc<dyn Projection>>> {
    match selector {
        "all" => Some(all()),
        name => {
            let chosen: Vec<_> = all().into_iter().filter(|p| p.name() == name).collect();
            (!chosen.is_empty()).then_some(chosen)
        }
    }
}

/// Decodes a wallet event, or `None` for other aggregates.
pub(crate) fn wallet_event(event: &RecordedEvent) -> Result<Option<domain::wallet::WalletEvent>, StoreError> {
    if event.aggregate_type != <domain::wallet::Wallet as cqrs_es::Aggregate>::TYPE {
        return Ok(None);
    }
    event_store::store::decode_event_shared::<domain::wallet::Wallet>(event).map(Some)
}

/// Decodes a transfer event, or `None` for other aggregates.
pub(crate) fn transfer_event(event: &RecordedEvent) -> Result<Option<domain::transfer::TransferEvent>, StoreError> {
    if event.aggregate_type != <domain::transfer::Transfer as cqrs_es::Aggregate>::TYPE {
        return Ok(None);
    }
    event_store::store::decode_event_shared::<domain::transfer::Transfer>(event).map(Some)
}

/// Decodes a listing event, or `None` for other aggregates.
pub(crate) fn listing_event(event: &RecordedEvent) -> Result<Option<domain::listing::ListingEvent>, StoreError> {
    if event.aggregate_type != <domain::listing::Listing as cqrs_es::Aggregate>::TYPE {
        return Ok(None);
    }
    event_store::store::decode_event_shared::<domain::listing::Listing>(event).map(Some)
}

/// Decodes a purchase event, or `None` for other aggregates.
pub(crate) fn purchase_event(event: &RecordedEvent) -> Result<Option<domain::purchase::PurchaseEvent>, StoreError> {
    if event.aggregate_type != <domain::purchase::Purchase as cqrs_es::Aggregate>::TYPE {
        return Ok(None);
    }
    event_store::store::decode_event_shared::<domain::purchase::Purchase>(event).map(Some)
}

/// Decodes a chain movement event (a movement between system accounts), or `None` for other
/// aggregates.
pub(crate) fn chain_movement_event(
    event: &RecordedEvent,
) -> Result<Option<domain::chain::ChainMovementEvent>, StoreError> {
    if event.aggregate_type != <domain::chain::ChainMovement as cqrs_es::Aggregate>::TYPE {
        return Ok(None);
    }
    event_store::store::decode_event_shared::<domain::chain::ChainMovement>(event).map(Some)
}

/// Every posting an event records: a wallet's, or a chain movement's (both sides system
/// accounts). The journal and the system accounts read postings only through here, so no kind
/// of posting can be left out of the trial balance.
pub(crate) fn postings_of(event: &RecordedEvent) -> Result<Vec<domain::accounts::Posting>, StoreError> {
    if let Some(wallet_event) = wallet_event(event)? {
        return Ok(wallet_event.postings(stream_uuid(event)?));
    }
    Ok(chain_movement_event(event)?.map(|movement| movement.postings()).unwrap_or_default())
}

/// Decodes a user event, or `None` for other aggregates.
pub(crate) fn user_event(event: &RecordedEvent) -> Result<Option<domain::user::UserEvent>, StoreError> {
    if event.aggregate_type != <domain::user::User as cqrs_es::Aggregate>::TYPE {
        return Ok(None);
    }
    event_store::store::decode_event_shared::<domain::user::User>(event).map(Some)
}

/// The time an event happened, from its metadata: projections never read the clock.
pub(crate) fn occurred_at(event: &RecordedEvent) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    event
        .occurred_at()
        .ok_or_else(|| StoreError::corrupt(format!("event at position {} has no timestamp", event.position)))
}

/// The stream id of a wallet or user event as a UUID.
pub(crate) fn stream_uuid(event: &RecordedEvent) -> Result<uuid::Uuid, StoreError> {
    event
        .aggregate_id
        .parse()
        .map_err(|_| StoreError::corrupt(format!("position {}: stream id is not a UUID", event.position)))
}
