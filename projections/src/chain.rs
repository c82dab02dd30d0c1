use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::accounts::SystemAccount;
use domain::chain::ChainMovementEvent;
use domain::user::UserEvent;
use domain::wallet::WalletEvent;
use domain::Currency;
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{chain_movement_event, occurred_at, stream_uuid, user_event, wallet_event, Projection};

/// The chain flows' read models: linked addresses (`rm_chain_addresses`), withdrawals to the
/// chain (`rm_chain_withdrawals`), retirements (`rm_retirements`), and chain facts without a
/// wallet's request (`rm_chain_movements`). `rm_chain_wallets` maps CARBON wallets to owners
/// so rows carry the user without reading another projection's table.
pub struct Chain;

/// When and where an event happened.
#[derive(Clone, Copy)]
struct At {
    time: DateTime<Utc>,
    position: i64,
}

#[async_trait]
impl Projection for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_chain_addresses", "rm_chain_wallets", "rm_chain_withdrawals", "rm_retirements", "rm_chain_movements"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let at = At { time: occurred_at(event)?, position: event.position };
        if let Some(UserEvent::ChainAddressLinked { address, usable_from }) = user_event(event)? {
            return link_address(conn, stream_uuid(event)?, &address, usable_from, at).await;
        }
        if let Some(wallet) = wallet_event(event)? {
            return apply_wallet(conn, stream_uuid(event)?, wallet, at).await;
        }
        if let Some(movement) = chain_movement_event(event)? {
            return apply_movement(conn, stream_uuid(event)?, movement, at).await;
        }
        Ok(())
    }
}

async fn link_address(
    conn: &mut PgConnection,
    user_id: Uuid,
    address: &str,
    usable_from: DateTime<Utc>,
    at: At,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rm_chain_addresses (address, user_id, usable_from, linked_at, position) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(address.to_ascii_lowercase())
    .bind(user_id)
    .bind(usable_from)
    .bind(at.time)
    .bind(at.position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_wallet(conn: &mut PgConnection, wallet_id: Uuid, event: WalletEvent, at: At) -> Result<(), StoreError> {
    match event {
        WalletEvent::WalletOpened { owner_id, currency: Currency::Carbon, .. } => {
            sqlx::query("INSERT INTO rm_chain_wallets (wallet_id, owner_id) VALUES ($1, $2)")
                .bind(wallet_id)
                .bind(owner_id)
                .execute(&mut *conn)
                .await?;
        }
        WalletEvent::ChainWithdrawalRequested { withdrawal_id, amount, address, .. } => {
            sqlx::query(
                "INSERT INTO rm_chain_withdrawals (withdrawal_id, wallet_id, user_id, amount, address, status, \
                 requested_at, updated_at, position, last_position) \
                 VALUES ($1, $2, (SELECT owner_id FROM rm_chain_wallets WHERE wallet_id = $2), $3, $4, 'pending', \
                         $5, $5, $6, $6)",
            )
            .bind(withdrawal_id)
            .bind(wallet_id)
            .bind(amount.value())
            .bind(address)
            .bind(at.time)
            .bind(at.position)
            .execute(&mut *conn)
            .await?;
        }
        WalletEvent::ChainWithdrawalMinted { withdrawal_id, tx_hash, block_number, .. } => {
            let block = i64::try_from(block_number).ok();
            settle_withdrawal(conn, withdrawal_id, "completed", None, Some(tx_hash), block, at).await?;
        }
        WalletEvent::ChainWithdrawalReturned { withdrawal_id, reason, .. } => {
            settle_withdrawal(conn, withdrawal_id, "failed", Some(reason), None, None, at).await?;
        }
        // A deposit from suspense shows on the suspense's row (its `SuspenseResolved`).
        WalletEvent::ChainDeposited {
            deposit_id,
            amount,
            tx_hash,
            log_index,
            counter_account: SystemAccount::Chain,
            ..
        } => {
            let deposit = Movement {
                id: deposit_id,
                kind: "deposit",
                status: "recorded",
                amount: amount.value(),
                tx_hash,
                log_index,
                account_ref: None,
                holder: None,
                cert_hash: None,
                wallet_id: Some(wallet_id),
            };
            insert_movement(conn, deposit, at).await?;
        }
        WalletEvent::CreditsRetired { retirement_id, amount, .. } => {
            sqlx::query(
                "INSERT INTO rm_retirements (retirement_id, wallet_id, user_id, amount, retired_at, position) \
                 VALUES ($1, $2, (SELECT owner_id FROM rm_chain_wallets WHERE wallet_id = $2), $3, $4, $5)",
            )
            .bind(retirement_id)
            .bind(wallet_id)
            .bind(amount.value())
            .bind(at.time)
            .bind(at.position)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

async fn settle_withdrawal(
    conn: &mut PgConnection,
    withdrawal_id: Uuid,
    status: &str,
    reason: Option<String>,
    tx_hash: Option<String>,
    block_number: Option<i64>,
    at: At,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE rm_chain_withdrawals SET status = $2, reason = $3, tx_hash = $4, block_number = $5, updated_at = $6, \
         last_position = $7 WHERE withdrawal_id = $1",
    )
    .bind(withdrawal_id)
    .bind(status)
    .bind(reason)
    .bind(tx_hash)
    .bind(block_number)
    .bind(at.time)
    .bind(at.position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A new `rm_chain_movements` row.
struct Movement {
    id: Uuid,
    kind: &'static str,
    status: &'static str,
    amount: rust_decimal::Decimal,
    tx_hash: String,
    log_index: u64,
    account_ref: Option<String>,
    holder: Option<String>,
    cert_hash: Option<String>,
    wallet_id: Option<Uuid>,
}

async fn insert_movement(conn: &mut PgConnection, movement: Movement, at: At) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rm_chain_movements (movement_id, kind, status, amount, tx_hash, log_index, account_ref, holder, \
         cert_hash, wallet_id, occurred_at, updated_at, position, last_position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $12)",
    )
    .bind(movement.id)
    .bind(movement.kind)
    .bind(movement.status)
    .bind(movement.amount)
    .bind(movement.tx_hash)
    .bind(i64::try_from(movement.log_index).ok())
    .bind(movement.account_ref)
    .bind(movement.holder)
    .bind(movement.cert_hash)
    .bind(movement.wallet_id)
    .bind(at.time)
    .bind(at.position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_movement(
    conn: &mut PgConnection,
    id: Uuid,
    event: ChainMovementEvent,
    at: At,
) -> Result<(), StoreError> {
    let movement = match event {
        ChainMovementEvent::BridgeInSuspended { amount, account_ref, tx_hash, log_index, .. } => Movement {
            id,
            kind: "suspense",
            status: "suspended",
            amount: amount.value(),
            tx_hash,
            log_index,
            account_ref: Some(account_ref),
            holder: None,
            cert_hash: None,
            wallet_id: None,
        },
        ChainMovementEvent::RetiredOnChain { amount, holder, cert_hash, tx_hash, log_index, .. } => Movement {
            id,
            kind: "on_chain_retirement",
            status: "recorded",
            amount: amount.value(),
            tx_hash,
            log_index,
            account_ref: None,
            holder: Some(holder),
            cert_hash: Some(cert_hash),
            wallet_id: None,
        },
        ChainMovementEvent::SuspenseResolved { wallet_id, .. } => {
            sqlx::query(
                "UPDATE rm_chain_movements SET status = 'resolved', wallet_id = $2, updated_at = $3, last_position = $4 \
                 WHERE movement_id = $1",
            )
            .bind(id)
            .bind(wallet_id)
            .bind(at.time)
            .bind(at.position)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
    };
    insert_movement(conn, movement, at).await
}
