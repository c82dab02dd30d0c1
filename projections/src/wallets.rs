use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::wallet::WalletEvent;
use event_store::{RecordedEvent, StoreError};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

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
        Wallets::write_batch(conn, std::slice::from_ref(event)).await
    }

    async fn apply_batch(&self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        Wallets::write_batch(conn, events).await
    }
}

impl Wallets {
    /// Opens the batch's new wallets, then applies every other change summed per wallet: the
    /// last balance, the sum of held changes, the last freeze, the last time and position.
    async fn write_batch(conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let mut opened = Vec::new();
        let mut changes: BTreeMap<Uuid, (Change, DateTime<Utc>, i64)> = BTreeMap::new();
        for event in events {
            let Some(wallet_event) = wallet_event(event)? else { continue };
            if let WalletEvent::WalletOpened { .. } = wallet_event {
                opened.push(event);
                continue;
            }
            let Some(change) = change_of(&wallet_event) else { continue };
            let at = occurred_at(event)?;
            let merged = changes.entry(stream_uuid(event)?).or_insert((Change::none(), at, event.position));
            merged.0 = Change {
                balance: change.balance.or(merged.0.balance),
                held_delta: merged.0.held_delta + change.held_delta,
                frozen: change.frozen.or(merged.0.frozen),
            };
            (merged.1, merged.2) = (at, event.position);
        }
        for event in opened {
            open_wallet(conn, event).await?;
        }
        if changes.is_empty() {
            return Ok(());
        }
        let mut columns = ChangeColumns::default();
        for (wallet_id, (change, at, position)) in changes {
            columns.wallets.push(wallet_id);
            columns.balances.push(change.balance);
            columns.held_deltas.push(change.held_delta);
            columns.frozen.push(change.frozen);
            columns.at.push(at);
            columns.positions.push(position);
        }
        sqlx::query(
            "UPDATE rm_wallets w SET balance = COALESCE(c.balance, w.balance), held = round(w.held + c.held_delta, ledger_scale(w.currency)), \
                    frozen = COALESCE(c.frozen, w.frozen), updated_at = c.at, position = c.position \
             FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::boolean[], $5::timestamptz[], $6::bigint[]) \
                  AS c(wallet_id, balance, held_delta, frozen, at, position) \
             WHERE w.wallet_id = c.wallet_id AND w.wallet_id = ANY($1)",
        )
        .bind(columns.wallets)
        .bind(columns.balances)
        .bind(columns.held_deltas)
        .bind(columns.frozen)
        .bind(columns.at)
        .bind(columns.positions)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Inserts a newly opened wallet, its balances zero at its currency's scale.
async fn open_wallet(conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
    let Some(WalletEvent::WalletOpened { owner_id, currency, .. }) = wallet_event(event)? else { return Ok(()) };
    sqlx::query(
        "INSERT INTO rm_wallets (wallet_id, owner_id, currency, balance, held, opened_at, updated_at, position) \
         VALUES ($1, $2, $3, round(0, ledger_scale($3)), round(0, ledger_scale($3)), $4, $4, $5)",
    )
    .bind(stream_uuid(event)?)
    .bind(owner_id)
    .bind(currency.code())
    .bind(occurred_at(event)?)
    .bind(event.position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Default)]
struct ChangeColumns {
    wallets: Vec<Uuid>,
    balances: Vec<Option<Decimal>>,
    held_deltas: Vec<Decimal>,
    frozen: Vec<Option<bool>>,
    at: Vec<DateTime<Utc>>,
    positions: Vec<i64>,
}

impl Change {
    fn none() -> Change {
        Change { balance: None, held_delta: Decimal::ZERO, frozen: None }
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
        | WalletEvent::PurchaseCredited { balance_after, .. }
        | WalletEvent::ChainWithdrawalRequested { balance_after, .. }
        | WalletEvent::ChainWithdrawalReturned { balance_after, .. }
        | WalletEvent::ChainDeposited { balance_after, .. }
        | WalletEvent::CreditsRetired { balance_after, .. } => Some(balance(*balance_after)),
        WalletEvent::HoldResized { held_delta, .. } => Some(held(*held_delta)),
        WalletEvent::HoldPlaced { amount, .. } => Some(held(amount.value())),
        WalletEvent::HoldCaptured { amount, fee, balance_after, .. } => {
            let captured = amount.value() + fee.map_or(Decimal::ZERO, |fee| fee.value());
            Some(Change { balance: Some(*balance_after), held_delta: -captured, frozen: None })
        }
        WalletEvent::HoldReleased { amount, .. } | WalletEvent::HoldExpired { amount, .. } => Some(held(-*amount)),
        WalletEvent::WalletFrozen { .. } => Some(frozen(true)),
        WalletEvent::WalletUnfrozen {} => Some(frozen(false)),
        WalletEvent::WalletOpened { .. }
        | WalletEvent::WithdrawalCompleted { .. }
        | WalletEvent::ChainWithdrawalMinted { .. } => None,
    }
}
