//! A listing's expiry: its saga row comes due at `expires_at`; the step expires the listing
//! and shrinks the seller's hold to what purchases in flight may still capture.

use chrono::Utc;
use domain::listing::{Listing, ListingCommand, ListingError};
use domain::wallet::{Wallet, WalletCommand};
use event_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::step::{begin_step, finish, let_go_of_refused, mark, StepResult};

pub const LISTING_EXPIRY_SAGA: &str = "listing_expiry";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListingExpirySaga {
    pub listing_id: Uuid,
    pub seller_carbon_wallet_id: Uuid,
}

pub async fn expire(
    store: &Store,
    saga_id: Uuid,
    saga: &ListingExpirySaga,
    attempt: i32,
) -> Result<StepResult, StoreError> {
    let mut uow = begin_step(store, LISTING_EXPIRY_SAGA, saga_id, "expire", attempt).await?;
    let expire = ListingCommand::Expire { now: uow.context().at.min(Utc::now()) };
    let listing = match uow.execute::<Listing>(&saga.listing_id.to_string(), expire, &()).await? {
        Ok(executed) => executed.aggregate,
        // Cancelled before it expired: nothing left to do.
        Err(ListingError::NotActive) => {
            let_go_of_refused(uow).await?;
            mark(store, saga_id, "completed").await?;
            return Ok(StepResult::AlreadySettled);
        }
        Err(error) => return Err(StoreError::corrupt(format!("listing {}: {error}", saga.listing_id))),
    };
    let resize = WalletCommand::ResizeHold { hold_id: saga.listing_id, remaining: listing.hold_target() };
    if let Err(error) = uow.execute::<Wallet>(&saga.seller_carbon_wallet_id.to_string(), resize, &()).await? {
        return Err(StoreError::corrupt(format!(
            "listing {}: the seller's hold refused to shrink: {error}",
            saga.listing_id
        )));
    }
    finish(uow, saga_id, "completed").await?;
    Ok(StepResult::Completed)
}
