use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::purchase::PurchaseEvent;
use domain::transfer::TransferEvent;
use domain::wallet::WalletEvent;
use domain::{Amount, Currency};
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{occurred_at, purchase_event, stream_uuid, transfer_event, wallet_event, Projection};

/// `rm_transactions`: one history as the owner sees it: deposits, withdrawals, reversals and
/// both sides of transfers.
pub struct Transactions;

/// A new history line.
struct Line<'a> {
    transaction_id: Uuid,
    kind: &'static str,
    wallet_id: Uuid,
    currency: Currency,
    amount: &'a Amount,
    status: &'static str,
    reference: Option<&'a str>,
    destination: Option<&'a str>,
    reversal_of: Option<Uuid>,
    reason: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn new(transaction_id: Uuid, kind: &'static str, wallet_id: Uuid, currency: Currency, amount: &'a Amount) -> Self {
        Line {
            transaction_id,
            kind,
            wallet_id,
            currency,
            amount,
            status: "completed",
            reference: None,
            destination: None,
            reversal_of: None,
            reason: None,
        }
    }

    async fn insert(self, conn: &mut PgConnection, at: DateTime<Utc>, position: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rm_transactions (transaction_id, kind, wallet_id, currency, amount, status, reference, \
             destination, reversal_of, reason, created_at, updated_at, position, last_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $12)",
        )
        .bind(self.transaction_id)
        .bind(self.kind)
        .bind(self.wallet_id)
        .bind(self.currency.code())
        .bind(self.amount.value())
        .bind(self.status)
        .bind(self.reference)
        .bind(self.destination)
        .bind(self.reversal_of)
        .bind(self.reason)
        .bind(at)
        .bind(position)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Sets the status (and reason) of every line of a transaction.
async fn settle(
    conn: &mut PgConnection,
    transaction_id: Uuid,
    status: &str,
    reason: Option<&str>,
    at: DateTime<Utc>,
    position: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE rm_transactions SET status = $2, reason = COALESCE($3, reason), updated_at = $4, last_position = $5 \
         WHERE transaction_id = $1",
    )
    .bind(transaction_id)
    .bind(status)
    .bind(reason)
    .bind(at)
    .bind(position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Projection for Transactions {
    fn name(&self) -> &'static str {
        "transactions"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_transactions"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        if let Some(purchase) = purchase_event(event)? {
            return apply_purchase(conn, &purchase, occurred_at(event)?, event.position).await;
        }
        if let Some(transfer) = transfer_event(event)? {
            let at = occurred_at(event)?;
            return match transfer {
                TransferEvent::TransferInitiated(_) => Ok(()),
                TransferEvent::TransferCompleted(parties) => {
                    settle(conn, parties.transfer_id, "completed", None, at, event.position).await
                }
                TransferEvent::TransferFailed { parties, reason } => {
                    settle(conn, parties.transfer_id, "failed", Some(&reason), at, event.position).await
                }
            };
        }
        let Some(wallet_event) = wallet_event(event)? else { return Ok(()) };
        let wallet = stream_uuid(event)?;
        let (at, position) = (occurred_at(event)?, event.position);
        match &wallet_event {
            WalletEvent::Deposited { transaction_id, currency, amount, reference, .. } => {
                let line = Line::new(*transaction_id, "deposit", wallet, *currency, amount);
                Line { reference: Some(reference), ..line }.insert(conn, at, position).await
            }
            WalletEvent::WithdrawalRequested { withdrawal_id, currency, amount, reference, destination, .. } => {
                let line = Line::new(*withdrawal_id, "withdrawal", wallet, *currency, amount);
                let line =
                    Line { status: "pending", reference: Some(reference), destination: Some(destination), ..line };
                line.insert(conn, at, position).await
            }
            WalletEvent::WithdrawalCompleted { withdrawal_id, .. } => {
                settle(conn, *withdrawal_id, "completed", None, at, position).await
            }
            WalletEvent::WithdrawalFailed { withdrawal_id, reason, .. } => {
                settle(conn, *withdrawal_id, "failed", Some(reason), at, position).await
            }
            WalletEvent::TransactionReversed {
                reversal_id, original_transaction_id, currency, amount, reason, ..
            } => {
                let line = Line::new(*reversal_id, "reversal", wallet, *currency, amount);
                let line = Line { reversal_of: Some(*original_transaction_id), reason: Some(reason), ..line };
                line.insert(conn, at, position).await?;
                sqlx::query(
                    "UPDATE rm_transactions SET reversed_by = $2, updated_at = $3, last_position = $4 \
                     WHERE transaction_id = $1",
                )
                .bind(original_transaction_id)
                .bind(reversal_id)
                .bind(at)
                .bind(position)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
            WalletEvent::TransferDebited { transfer_id, currency, amount, .. } => {
                let line = Line::new(*transfer_id, "transfer_out", wallet, *currency, amount);
                Line { status: "pending", ..line }.insert(conn, at, position).await
            }
            WalletEvent::TransferCredited { transfer_id, currency, amount, .. } => {
                Line::new(*transfer_id, "transfer_in", wallet, *currency, amount).insert(conn, at, position).await
            }
            _ => Ok(()),
        }
    }
}

/// A purchase is the buyer's `purchase` line (the total) and the seller's `sale` line (the
/// subtotal), pending until it settles.
async fn apply_purchase(
    conn: &mut PgConnection,
    event: &PurchaseEvent,
    at: DateTime<Utc>,
    position: i64,
) -> Result<(), StoreError> {
    match event {
        PurchaseEvent::PurchaseInitiated(terms) => {
            let id = terms.purchase_id;
            let buyer = Line::new(id, "purchase", terms.buyer_cash_wallet_id, terms.currency, &terms.total);
            Line { status: "pending", ..buyer }.insert(conn, at, position).await?;
            let seller = Line::new(id, "sale", terms.seller_cash_wallet_id, terms.currency, &terms.subtotal);
            Line { status: "pending", ..seller }.insert(conn, at, position).await
        }
        PurchaseEvent::PurchaseCompleted(terms) => {
            settle(conn, terms.purchase_id, "completed", None, at, position).await
        }
        PurchaseEvent::PurchaseFailed { terms, reason } => {
            settle(conn, terms.purchase_id, "failed", Some(reason), at, position).await
        }
    }
}
