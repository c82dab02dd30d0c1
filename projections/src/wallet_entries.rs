use async_trait::async_trait;
use domain::wallet::WalletEvent;
use event_store::{RecordedEvent, StoreError};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{occurred_at, stream_uuid, wallet_event, Projection};

/// `rm_wallet_entries`: statement lines, one per balance-changing event, with the running
/// balance and the event's global position.
pub struct WalletEntries;

#[async_trait]
impl Projection for WalletEntries {
    fn name(&self) -> &'static str {
        "wallet_entries"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_wallet_entries"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let Some(wallet_event) = wallet_event(event)? else { return Ok(()) };
        let Some((transaction_id, kind, balance_after)) = entry_of(&wallet_event) else { return Ok(()) };
        let wallet_id = stream_uuid(event)?;
        let amount = wallet_event.balance_delta(wallet_id);
        sqlx::query(
            "INSERT INTO rm_wallet_entries (wallet_id, position, transaction_id, kind, amount, balance_after, occurred_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(wallet_id)
        .bind(event.position)
        .bind(transaction_id)
        .bind(kind)
        .bind(amount)
        .bind(balance_after)
        .bind(occurred_at(event)?)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn apply_batch(&self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let mut rows = EntryRows::default();
        for event in events {
            let Some(wallet_event) = wallet_event(event)? else { continue };
            let Some((transaction_id, kind, balance_after)) = entry_of(&wallet_event) else { continue };
            let wallet_id = stream_uuid(event)?;
            rows.wallets.push(wallet_id);
            rows.positions.push(event.position);
            rows.transactions.push(transaction_id);
            rows.kinds.push(kind);
            rows.amounts.push(wallet_event.balance_delta(wallet_id));
            rows.balances.push(balance_after);
            rows.occurred_at.push(occurred_at(event)?);
        }
        if rows.positions.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO rm_wallet_entries (wallet_id, position, transaction_id, kind, amount, balance_after, occurred_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::numeric[], $6::numeric[], \
                                  $7::timestamptz[])",
        )
        .bind(rows.wallets)
        .bind(rows.positions)
        .bind(rows.transactions)
        .bind(rows.kinds)
        .bind(rows.amounts)
        .bind(rows.balances)
        .bind(rows.occurred_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Column arrays of a batch of statement lines.
#[derive(Default)]
struct EntryRows {
    wallets: Vec<Uuid>,
    positions: Vec<i64>,
    transactions: Vec<Uuid>,
    kinds: Vec<&'static str>,
    amounts: Vec<Decimal>,
    balances: Vec<Decimal>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
}

/// The statement line of an event: its transaction id, kind and the balance after it.
fn entry_of(event: &WalletEvent) -> Option<(Uuid, &'static str, Decimal)> {
    match event {
        WalletEvent::Deposited { transaction_id, balance_after, .. } => {
            Some((*transaction_id, "deposit", *balance_after))
        }
        WalletEvent::WithdrawalRequested { withdrawal_id, balance_after, .. } => {
            Some((*withdrawal_id, "withdrawal", *balance_after))
        }
        WalletEvent::WithdrawalFailed { withdrawal_id, balance_after, .. } => {
            Some((*withdrawal_id, "withdrawal_returned", *balance_after))
        }
        WalletEvent::TransactionReversed { reversal_id, balance_after, .. } => {
            Some((*reversal_id, "reversal", *balance_after))
        }
        WalletEvent::HoldCaptured { capture_id, balance_after, .. } => Some((*capture_id, "capture", *balance_after)),
        WalletEvent::TransferDebited { transfer_id, balance_after, .. } => {
            Some((*transfer_id, "transfer_out", *balance_after))
        }
        WalletEvent::TransferCredited { transfer_id, balance_after, .. } => {
            Some((*transfer_id, "transfer_in", *balance_after))
        }
        WalletEvent::TransferReturned { transfer_id, balance_after, .. } => {
            Some((*transfer_id, "transfer_returned", *balance_after))
        }
        WalletEvent::PurchaseCredited { purchase_id, currency, balance_after, .. } => {
            let kind = if *currency == domain::Currency::Carbon { "credits_received" } else { "sale_proceeds" };
            Some((*purchase_id, kind, *balance_after))
        }
        WalletEvent::ChainWithdrawalRequested { withdrawal_id, balance_after, .. } => {
            Some((*withdrawal_id, "chain_withdrawal", *balance_after))
        }
        WalletEvent::ChainWithdrawalReturned { withdrawal_id, balance_after, .. } => {
            Some((*withdrawal_id, "chain_withdrawal_returned", *balance_after))
        }
        WalletEvent::ChainDeposited { deposit_id, balance_after, .. } => {
            Some((*deposit_id, "chain_deposit", *balance_after))
        }
        WalletEvent::CreditsRetired { retirement_id, balance_after, .. } => {
            Some((*retirement_id, "retirement", *balance_after))
        }
        // Listed so a new balance-changing event cannot be dropped by a wildcard unnoticed.
        WalletEvent::WalletOpened { .. }
        | WalletEvent::WithdrawalCompleted { .. }
        | WalletEvent::WalletFrozen { .. }
        | WalletEvent::WalletUnfrozen { .. }
        | WalletEvent::HoldPlaced { .. }
        | WalletEvent::HoldResized { .. }
        | WalletEvent::HoldReleased { .. }
        | WalletEvent::HoldExpired { .. }
        | WalletEvent::ChainWithdrawalMinted { .. } => None,
    }
}
