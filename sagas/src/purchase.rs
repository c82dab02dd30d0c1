//! The purchase saga's settling step: the buyer pays the seller and the fee through
//! `transit`, the seller's held CARBON goes to the buyer, all in one transaction; or, if any
//! party refuses, everything reserved is released and the purchase fails. Nothing is ever
//! half-settled.

use domain::listing::{Listing, ListingCommand};
use domain::purchase::{Purchase, PurchaseCommand, PurchaseError, PurchaseTerms};
use domain::wallet::{Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::{Snapshotted, Store, StoreError, UnitOfWork};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::step::{begin_step, finish, let_go_of_refused, mark, refusal_settled, StepResult};

pub const PURCHASE_SAGA: &str = "purchase";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurchaseSaga {
    pub terms: PurchaseTerms,
}

/// Runs a command inside the step; a refusal comes back as its rule's code.
async fn attempt<A: Snapshotted<Services = ()>>(
    uow: &mut UnitOfWork,
    id: Uuid,
    command: A::Command,
) -> Result<Option<String>, StoreError>
where
    A::Error: domain::Rejection,
{
    let result = uow.execute::<A>(&id.to_string(), command, &()).await?;
    Ok(result.err().map(|refusal| domain::Rejection::code(&refusal).to_string()))
}

pub async fn settle(
    store: &Store,
    saga_id: Uuid,
    saga: &PurchaseSaga,
    attempt_number: i32,
) -> Result<StepResult, StoreError> {
    let mut uow = begin_step(store, PURCHASE_SAGA, saga_id, "settle", attempt_number).await?;
    match pay_and_deliver(&mut uow, &saga.terms).await? {
        None => match uow.execute::<Purchase>(&saga_id.to_string(), PurchaseCommand::Complete, &()).await? {
            Ok(_) => {
                finish(uow, saga_id, "completed").await?;
                Ok(StepResult::Completed)
            }
            Err(error) => settled_elsewhere(store, saga_id, uow, error).await,
        },
        Some(reason) => {
            let_go_of_refused(uow).await?;
            tracing::info!(%saga_id, reason, "purchase refused; releasing what it reserved");
            compensate(store, saga_id, &saga.terms, reason, attempt_number).await
        }
    }
}

/// Stages the settlement; returns the first refusal's code, if any (the caller then drops the
/// unit of work, so nothing of it is written).
async fn pay_and_deliver(uow: &mut UnitOfWork, terms: &PurchaseTerms) -> Result<Option<String>, StoreError> {
    let id = terms.purchase_id;
    let fee = Amount::new(terms.fee, terms.currency).ok();
    let carbon = terms.quantity;
    let buyer_pays = WalletCommand::CaptureHold { hold_id: id, capture_id: id, amount: terms.subtotal, fee };
    if let Some(refusal) = attempt::<Wallet>(uow, terms.buyer_cash_wallet_id, buyer_pays).await? {
        return Ok(Some(refusal));
    }
    // The hold held exactly the total: release the emptied hold.
    let emptied = WalletCommand::ReleaseHold { hold_id: id };
    if let Some(refusal) = attempt::<Wallet>(uow, terms.buyer_cash_wallet_id, emptied).await? {
        return Ok(Some(refusal));
    }
    let proceeds = WalletCommand::CreditPurchase { purchase_id: id, amount: terms.subtotal, currency: terms.currency };
    if let Some(refusal) = attempt::<Wallet>(uow, terms.seller_cash_wallet_id, proceeds).await? {
        return Ok(Some(refusal));
    }
    let seller_delivers =
        WalletCommand::CaptureHold { hold_id: terms.listing_id, capture_id: id, amount: carbon, fee: None };
    if let Some(refusal) = attempt::<Wallet>(uow, terms.seller_carbon_wallet_id, seller_delivers).await? {
        return Ok(Some(refusal));
    }
    let buyer_receives = WalletCommand::CreditPurchase { purchase_id: id, amount: carbon, currency: Currency::Carbon };
    if let Some(refusal) = attempt::<Wallet>(uow, terms.buyer_carbon_wallet_id, buyer_receives).await? {
        return Ok(Some(refusal));
    }
    attempt::<Listing>(uow, terms.listing_id, ListingCommand::ConfirmSale { purchase_id: id }).await
}

/// Releases the listing's reservation and the buyer's funds, and fails the purchase.
async fn compensate(
    store: &Store,
    saga_id: Uuid,
    terms: &PurchaseTerms,
    reason: String,
    attempt_number: i32,
) -> Result<StepResult, StoreError> {
    let mut uow = begin_step(store, PURCHASE_SAGA, saga_id, "compensate", attempt_number).await?;
    let release = ListingCommand::ReleaseReservation { purchase_id: saga_id, reason: reason.clone() };
    match uow.execute::<Listing>(&terms.listing_id.to_string(), release, &()).await? {
        Ok(listing) => {
            // A cancelled or expired listing holds only what purchases in flight may capture.
            let target = listing.aggregate.hold_target();
            let resize = WalletCommand::ResizeHold { hold_id: terms.listing_id, remaining: target };
            if let Some(refusal) = attempt::<Wallet>(&mut uow, terms.seller_carbon_wallet_id, resize).await? {
                return Err(StoreError::corrupt(format!(
                    "purchase {saga_id}: the seller's hold refused to shrink: {refusal}"
                )));
            }
        }
        // Nothing reserved to release: make sure of it before closing the purchase without.
        Err(_) => refusal_settled(&uow)?,
    }
    let release_funds = WalletCommand::ReleaseHold { hold_id: saga_id };
    if let Some(refusal) = attempt::<Wallet>(&mut uow, terms.buyer_cash_wallet_id, release_funds).await? {
        refusal_settled(&uow)?;
        tracing::warn!(%saga_id, refusal, "the buyer's hold was already gone");
    }
    match uow.execute::<Purchase>(&saga_id.to_string(), PurchaseCommand::Fail { reason }, &()).await? {
        Ok(_) => {
            finish(uow, saga_id, "failed").await?;
            Ok(StepResult::Failed)
        }
        Err(error) => settled_elsewhere(store, saga_id, uow, error).await,
    }
}

/// The purchase was settled by an earlier attempt: write nothing, close the saga row.
async fn settled_elsewhere(
    store: &Store,
    saga_id: Uuid,
    uow: UnitOfWork,
    error: PurchaseError,
) -> Result<StepResult, StoreError> {
    drop(uow);
    match error {
        PurchaseError::AlreadySettled => {
            mark(store, saga_id, "completed").await?;
            Ok(StepResult::AlreadySettled)
        }
        other => Err(StoreError::corrupt(format!("purchase {saga_id}: {other}"))),
    }
}
