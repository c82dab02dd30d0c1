use async_trait::async_trait;
use domain::wallet::WalletEvent;
use event_store::{RecordedEvent, StoreError};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::{occurred_at, stream_uuid, wallet_event, Projection};

/// `rm_wallets`: balance, held and frozen per wallet (available = balance - held).
pub struct Wallets;

#[async_trait]
impl Projection for Wallets {
    fn name(&self) -> &'static str {
        "wallets"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_wallets"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let Some(wallet_event) = wallet_event(event)? else { return Ok(()) };
        let wallet_id = stream_uuid(event)?;
        let at = occurred_at(event)?;
        if let WalletEvent::WalletOpened { owner_id, currency, .. } = &wallet_event {
            sqlx::query(
                "INSERT INTO rm_wallets (wallet_id, owner_id, currency, balance, held, opened_at, updated_at, position) \
                 VALUES ($1, $2, $3, 0, 0, $4, $4, $5)",
            )
            .bind(wallet_id)
            .bind(owner_id)
            .bind(currency.code())
            .bind(at)
            .bind(event.position)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        let Some(change) = change_of(&wallet_event) else { return Ok(()) };
        sqlx::query(
            "UPDATE rm_wallets SET balance = COALESCE($2, balance), held = held + $3, \
                    frozen = COALESCE($4, frozen), updated_at = $5, position = $6 \
             WHERE wallet_id = $1",
        )
        .bind(wallet_id)
        .bind(change.balance)
        .bind(change.held_delta)
        .bind(change.frozen)
        .bind(at)
        .bind(event.position)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// How an event changes a wallet row; `None` fields stay as they are.
struct Change {
    balance: Option<Decimal>,
    held_delta: Decimal,
    frozen: Option<bool>,
}

fn change_of(event: &WalletEvent) -> Option<Change> {
    let balance = |balance: Decimal| Change { balance: Some(balance), held_delta: Decimal::ZERO, frozen: None };
    let held = |delta: Decimal| Change { balance: None, held_delta: delta, frozen: None };
    let frozen = |frozen: bool| Change { balance: None, held_delta: Decimal::ZERO, frozen: Some(frozen) };
    match event {
        WalletEvent::Deposited { balance_after, .. }
        | WalletEvent::WithdrawalRequested { balance_after, .. }
        | WalletEvent::WithdrawalFailed { balance_after, .. }
        | WalletEvent::TransactionReversed { balance_after, .. }
        | WalletEvent::TransferDebited { balance_after, .. }
        | WalletEvent::TransferCredited { balance_after, .. }
        | WalletEvent::TransferReturned { balance_after, .. }
        | WalletEvent::PurchaseCredited { balance_after, .. } => Some(balance(*balance_after)),
        WalletEvent::HoldResized { held_delta, .. } => Some(held(*held_delta)),
        WalletEvent::HoldPlaced { amount, .. } => Some(held(amount.value())),
        WalletEvent::HoldCaptured { amount, fee, balance_after, .. } => {
            let captured = amount.value() + fee.map_or(Decimal::ZERO, |fee| fee.value());
            Some(Change { balance: Some(*balance_after), held_delta: -captured, frozen: None })
        }
        WalletEvent::HoldReleased { amount, .. } | WalletEvent::HoldExpired { amount, .. } => Some(held(-*amount)),
        WalletEvent::WalletFrozen { .. } => Some(frozen(true)),
        WalletEvent::WalletUnfrozen {} => Some(frozen(false)),
        WalletEvent::WalletOpened { .. } | WalletEvent::WithdrawalCompleted { .. } => None,
    }
}
