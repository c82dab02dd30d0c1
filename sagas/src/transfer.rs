//! The transfer saga's second step: credit the destination from `transit`, or return the
//! money to the source when the destination refuses it.

use domain::transfer::{Transfer, TransferCommand, TransferError, TransferParties};
use domain::wallet::{Wallet, WalletCommand};
use event_store::{Begun, CommandContext, Outcome, Store, StoreError, UnitOfWork};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const TRANSFER_SAGA: &str = "transfer";
/// Namespace of saga step command ids: UUIDv5(saga id, step, attempt).
const STEP_NAMESPACE: Uuid = Uuid::from_u128(0x5a6a_0001_7e55_4e3a_9c1f_2b0d_6d8e_4f21);

/// The saga row's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferSaga {
    pub parties: TransferParties,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    Completed,
    Failed,
    /// Another worker (or an earlier attempt) already settled the transfer.
    AlreadySettled,
}

/// Runs the settling step of the transfer saga `saga_id`, attempt `attempt`.
pub async fn settle(store: &Store, saga_id: Uuid, saga: &TransferSaga, attempt: i32) -> Result<StepResult, StoreError> {
    let parties = &saga.parties;
    let context = CommandContext {
        command_id: Uuid::new_v5(&STEP_NAMESPACE, format!("{saga_id}/settle/{attempt}").as_bytes()),
        correlation_id: saga_id,
        causation_id: Some(saga_id),
        ..CommandContext::new(format!("saga:{TRANSFER_SAGA}"))
    };
    let Begun::Fresh(mut uow) = store.begin(context, None).await? else {
        unreachable!("a step without an idempotency key is always fresh")
    };
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
    finish(*uow, saga_id, if result == StepResult::Completed { "completed" } else { "failed" }).await?;
    Ok(result)
}

/// Commits the step together with the saga row's new status.
async fn finish(mut uow: UnitOfWork, saga_id: Uuid, status: &'static str) -> Result<(), StoreError> {
    use sqlx::Arguments;
    let mut arguments = sqlx::postgres::PgArguments::default();
    arguments.add(saga_id).and_then(|_| arguments.add(status)).map_err(StoreError::corrupt)?;
    uow.stage_statement(
        "UPDATE sagas SET status = $2, last_error = NULL, updated_at = now() WHERE saga_id = $1",
        arguments,
    );
    uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await?;
    Ok(())
}

async fn mark(store: &Store, saga_id: Uuid, status: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE sagas SET status = $2, updated_at = now() WHERE saga_id = $1 AND status = 'pending'")
        .bind(saga_id)
        .bind(status)
        .execute(store.pool())
        .await?;
    Ok(())
}
