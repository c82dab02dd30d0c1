use async_trait::async_trait;
use domain::purchase::PurchaseEvent;
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

use crate::{occurred_at, purchase_event, Projection};

/// `rm_purchases`: each purchase's price, its source and time, fee, total and status.
pub struct Purchases;

#[async_trait]
impl Projection for Purchases {
    fn name(&self) -> &'static str {
        "purchases"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_purchases"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let Some(purchase_event) = purchase_event(event)? else { return Ok(()) };
        let (at, position) = (occurred_at(event)?, event.position);
        let (terms, status, reason) = match &purchase_event {
            PurchaseEvent::PurchaseInitiated(t) => {
                sqlx::query(
                    "INSERT INTO rm_purchases (purchase_id, listing_id, buyer_id, seller_id, quantity, currency, \
                     unit_price, price_source, price_observed_at, subtotal, fee_bps, fee, total, status, created_at, \
                     updated_at, position, last_position) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending', $14, $14, $15, $15)",
                )
                .bind(t.purchase_id)
                .bind(t.listing_id)
                .bind(t.buyer_id)
                .bind(t.seller_id)
                .bind(t.quantity.value())
                .bind(t.currency.code())
                .bind(t.unit_price)
                .bind(&t.price_source)
                .bind(t.price_observed_at)
                .bind(t.subtotal.value())
                .bind(t.fee_bps as i32)
                .bind(t.fee)
                .bind(t.total.value())
                .bind(at)
                .bind(position)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            PurchaseEvent::PurchaseCompleted(terms) => (terms, "completed", None),
            PurchaseEvent::PurchaseFailed { terms, reason } => (terms, "failed", Some(reason.as_str())),
        };
        sqlx::query(
            "UPDATE rm_purchases SET status = $2, reason = $3, updated_at = $4, last_position = $5 WHERE purchase_id = $1",
        )
        .bind(terms.purchase_id)
        .bind(status)
        .bind(reason)
        .bind(at)
        .bind(position)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
