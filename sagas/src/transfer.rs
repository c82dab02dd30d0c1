//! A transfer's second step: credit the destination from `transit`, or return the money to
//! the source when the destination refuses it. The API runs it in the request's own unit of
//! work (a transfer settles in one transaction); the saga step is kept for transfers an
//! earlier version left pending in `sagas`.

use domain::transfer::{Transfer, TransferCommand, TransferError, TransferParties};
use domain::wallet::{Wallet, WalletCommand};
use event_store::{Store, StoreError, UnitOfWork};

use crate::step::{begin_step, finish, mark, refusal_settled, StepResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const TRANSFER_SAGA: &str = "transfer";

/// The saga row's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferSaga {
    pub parties: TransferParties,
}

/// How the second step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Completed,
    /// The destination refused the credit (its rule is the reason); the money went back.
    Failed {
        reason: String,
    },
    /// Settled before (another worker, an earlier attempt): nothing was staged.
    AlreadySettled,
}

/// Stages the second step of the transfer `parties` describes in `uow`: the destination's
/// credit from `transit` and the transfer's completion, or, when the destination refuses,
/// the source's money back and the transfer's failure.
pub async fn settle_in(uow: &mut UnitOfWork, parties: &TransferParties) -> Result<Settlement, StoreError> {
    let credit = WalletCommand::CreditFromTransfer {
        transfer_id: parties.transfer_id,
        from_wallet_id: parties.from_wallet_id,
        amount: parties.amount,
        currency: parties.currency,
    };
    let credited = uow.execute::<Wallet>(&parties.to_wallet_id.to_string(), credit, &()).await?;
    let (transfer_command, settlement) = match credited {
        Ok(_) => (TransferCommand::Complete, Settlement::Completed),
        Err(refusal) => {
            // The destination refused (it is frozen, its balance would overflow): the money goes
            // back, once that refusal is sure to hold.
            refusal_settled(uow)?;
            let reason = refusal.code().to_string();
            let back = WalletCommand::ReturnTransfer {
                transfer_id: parties.transfer_id,
                amount: parties.amount,
                currency: parties.currency,
                reason: reason.clone(),
            };
            if let Err(error) = uow.execute::<Wallet>(&parties.from_wallet_id.to_string(), back, &()).await? {
                return Err(StoreError::corrupt(format!(
                    "transfer {}: the source refused its money back: {error}",
                    parties.transfer_id
                )));
            }
            (TransferCommand::Fail { reason: reason.clone() }, Settlement::Failed { reason })
        }
    };
    match uow.execute::<Transfer>(&parties.transfer_id.to_string(), transfer_command, &()).await? {
        Ok(_) => Ok(settlement),
        Err(TransferError::AlreadySettled) => Ok(Settlement::AlreadySettled),
        Err(error) => Err(StoreError::corrupt(format!("transfer {}: {error}", parties.transfer_id))),
    }
}

/// Runs the settling step of the transfer saga `saga_id`, attempt `attempt`.
pub async fn settle(store: &Store, saga_id: Uuid, saga: &TransferSaga, attempt: i32) -> Result<StepResult, StoreError> {
    let mut uow = begin_step(store, TRANSFER_SAGA, saga_id, "settle", attempt).await?;
    let (status, result) = match settle_in(&mut uow, &saga.parties).await? {
        Settlement::Completed => ("completed", StepResult::Completed),
        Settlement::Failed { .. } => ("failed", StepResult::Failed),
        Settlement::AlreadySettled => {
            // What was staged here is dropped with the unit of work: an earlier attempt did it.
            drop(uow);
            mark(store, saga_id, "completed").await?;
            return Ok(StepResult::AlreadySettled);
        }
    };
    finish(uow, saga_id, status).await?;
    Ok(result)
}
