use async_trait::async_trait;
use domain::transfer::TransferEvent;
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

use crate::{occurred_at, transfer_event, Projection};

/// `rm_transfers`: each transfer's parties and status.
pub struct Transfers;

#[async_trait]
impl Projection for Transfers {
    fn name(&self) -> &'static str {
        "transfers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_transfers"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let Some(transfer) = transfer_event(event)? else { return Ok(()) };
        let at = occurred_at(event)?;
        let (parties, status, reason) = match &transfer {
            TransferEvent::TransferInitiated(parties) => {
                sqlx::query(
                    "INSERT INTO rm_transfers (transfer_id, from_wallet_id, from_user_id, to_wallet_id, to_user_id, \
                     currency, amount, status, created_at, updated_at, position, last_position) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8, $9, $9)",
                )
                .bind(parties.transfer_id)
                .bind(parties.from_wallet_id)
                .bind(parties.from_user_id)
                .bind(parties.to_wallet_id)
                .bind(parties.to_user_id)
                .bind(parties.currency.code())
                .bind(parties.amount.value())
                .bind(at)
                .bind(event.position)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            TransferEvent::TransferCompleted(parties) => (parties, "completed", None),
            TransferEvent::TransferFailed { parties, reason } => (parties, "failed", Some(reason.as_str())),
        };
        sqlx::query(
            "UPDATE rm_transfers SET status = $2, reason = $3, updated_at = $4, last_position = $5 WHERE transfer_id = $1",
        )
        .bind(parties.transfer_id)
        .bind(status)
        .bind(reason)
        .bind(at)
        .bind(event.position)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
