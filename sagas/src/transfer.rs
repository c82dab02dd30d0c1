//! The transfer saga's second step: credit the destination from `transit`, or return the
//! money to the source when the destination refuses it.

use domain::transfer::{Transfer, TransferCommand, TransferError, TransferParties};
use domain::wallet::{Wallet, WalletCommand};
use event_store::{Store, StoreError};

use crate::step::{begin_step, finish, mark, StepResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const TRANSFER_SAGA: &str = "transfer";

/// The saga row's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferSaga {
    pub parties: TransferParties,
}

/// Runs the settling step of the transfer saga `saga_id`, attempt `attempt`.
pub async fn settle(store: &Store, saga_id: Uuid, saga: &TransferSaga, attempt: i32) -> Result<StepResult, StoreError> {
    let parties = &saga.parties;
    let mut uow = begin_step(store, TRANSFER_SAGA, saga_id, "settle", attempt).await?;
    let credit = WalletCommand::CreditFromTransfer {
        transfer_id: parties.transfer_id,
        from_wallet_id: parties.from_wallet_id,
        amount: parties.amount,
        currency: parties.currency,
    };
    let credited = uow.execute::<Wallet>(&parties.to_wallet_id.to_string(), credit, &()).await?;
    let (transfer_command, result) = match credited {
        Ok(_) => (TransferCommand::Complete, StepResult::Completed),
        Err(refusal) => {
            // The destination refused (say its balance would overflow): the money goes back.
            let reason = refusal.code().to_string();
            let back = WalletCommand::ReturnTransfer {
                transfer_id: parties.transfer_id,
                amount: parties.amount,
                currency: parties.currency,
                reason: reason.clone(),
            };
            if let Err(error) = uow.execute::<Wallet>(&parties.from_wallet_id.to_string(), back, &()).await? {
                return Err(StoreError::corrupt(format!(
                    "transfer {saga_id}: the source refused its money back: {error}"
                )));
            }
            (TransferCommand::Fail { reason }, StepResult::Failed)
        }
    };
    match uow.execute::<Transfer>(&parties.transfer_id.to_string(), transfer_command, &()).await? {
        Ok(_) => {}
        Err(TransferError::AlreadySettled) => {
            drop(uow);
            mark(store, saga_id, "completed").await?;
            return Ok(StepResult::AlreadySettled);
        }
        Err(error) => return Err(StoreError::corrupt(format!("transfer {saga_id}: {error}"))),
    }
    finish(uow, saga_id, if result == StepResult::Completed { "completed" } else { "failed" }).await?;
    Ok(result)
}
