use async_trait::async_trait;
use domain::wallet::WalletEvent;
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

use crate::{occurred_at, stream_uuid, wallet_event, Projection};

/// `rm_transactions`: deposits, withdrawals and reversals as their owner sees them.
pub struct Transactions;

#[async_trait]
impl Projection for Transactions {
    fn name(&self) -> &'static str {
        "transactions"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_transactions"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let Some(wallet_event) = wallet_event(event)? else { return Ok(()) };
        let wallet_id = stream_uuid(event)?;
        let at = occurred_at(event)?;
        let insert = "INSERT INTO rm_transactions (transaction_id, kind, wallet_id, currency, amount, status, \
                      reference, destination, reversal_of, reason, created_at, updated_at, position, last_position) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $12)";
        let settle = "UPDATE rm_transactions SET status = $2, reason = COALESCE($3, reason), updated_at = $4, \
                      last_position = $5 WHERE transaction_id = $1";
        match wallet_event {
            WalletEvent::Deposited { transaction_id, currency, amount, reference, .. } => {
                sqlx::query(insert)
                    .bind(transaction_id)
                    .bind("deposit")
                    .bind(wallet_id)
                    .bind(currency.code())
                    .bind(amount.value())
                    .bind("completed")
                    .bind(reference)
                    .bind(None::<String>)
                    .bind(None::<uuid::Uuid>)
                    .bind(None::<String>)
                    .bind(at)
                    .bind(event.position)
                    .execute(&mut *conn)
                    .await?;
            }
            WalletEvent::WithdrawalRequested { withdrawal_id, currency, amount, reference, destination, .. } => {
                sqlx::query(insert)
                    .bind(withdrawal_id)
                    .bind("withdrawal")
                    .bind(wallet_id)
                    .bind(currency.code())
                    .bind(amount.value())
                    .bind("pending")
                    .bind(reference)
                    .bind(destination)
                    .bind(None::<uuid::Uuid>)
                    .bind(None::<String>)
                    .bind(at)
                    .bind(event.position)
                    .execute(&mut *conn)
                    .await?;
            }
            WalletEvent::WithdrawalCompleted { withdrawal_id, .. } => {
                sqlx::query(settle)
                    .bind(withdrawal_id)
                    .bind("completed")
                    .bind(None::<String>)
                    .bind(at)
                    .bind(event.position)
                    .execute(&mut *conn)
                    .await?;
            }
            WalletEvent::WithdrawalFailed { withdrawal_id, reason, .. } => {
                sqlx::query(settle)
                    .bind(withdrawal_id)
                    .bind("failed")
                    .bind(reason)
                    .bind(at)
                    .bind(event.position)
                    .execute(&mut *conn)
                    .await?;
            }
            WalletEvent::TransactionReversed {
                reversal_id, original_transaction_id, currency, amount, reason, ..
            } => {
                sqlx::query(insert)
                    .bind(reversal_id)
                    .bind("reversal")
                    .bind(wallet_id)
                    .bind(currency.code())
                    .bind(amount.value())
                    .bind("completed")
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(original_transaction_id)
                    .bind(reason)
                    .bind(at)
                    .bind(event.position)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "UPDATE rm_transactions SET reversed_by = $2, updated_at = $3, last_position = $4 WHERE transaction_id = $1",
                )
                .bind(original_transaction_id)
                .bind(reversal_id)
                .bind(at)
                .bind(event.position)
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
