use async_trait::async_trait;
use domain::listing::{ListingEvent, Pricing};
use event_store::{RecordedEvent, StoreError};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::{listing_event, occurred_at, stream_uuid, Projection};

/// `rm_listings`: each listing's terms, what is sold and reserved, and its status.
pub struct Listings;

#[async_trait]
impl Projection for Listings {
    fn name(&self) -> &'static str {
        "listings"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_listings"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let Some(listing_event) = listing_event(event)? else { return Ok(()) };
        let id = stream_uuid(event)?;
        let (at, position) = (occurred_at(event)?, event.position);
        let (sold, reserved, status, quantity, unit_price) = match listing_event {
            ListingEvent::ListingCreated(terms) => {
                let (kind, unit_price, index, premium) = match &terms.pricing {
                    Pricing::Fixed { unit_price, .. } => ("fixed", Some(unit_price.value()), None, None),
                    Pricing::Market { index, premium_bps, .. } => {
                        ("market", None, Some(index.clone()), Some(*premium_bps))
                    }
                };
                sqlx::query(
                    "INSERT INTO rm_listings (listing_id, seller_id, quantity, sold, reserved, pricing_kind, currency, \
                     unit_price, price_index, premium_bps, min_fill, expires_at, project_id, registry, vintage, \
                     serial_range, status, created_at, updated_at, position, last_position) \
                     VALUES ($1, $2, $3, 0, 0, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'active', $15, $15, $16, $16)",
                )
                .bind(id)
                .bind(terms.seller_id)
                .bind(terms.quantity.value())
                .bind(kind)
                .bind(terms.pricing.currency().code())
                .bind(unit_price)
                .bind(index)
                .bind(premium)
                .bind(terms.min_fill.map(|m| m.value()))
                .bind(terms.expires_at)
                .bind(&terms.credit.project_id)
                .bind(&terms.credit.registry)
                .bind(terms.credit.vintage)
                .bind(&terms.credit.serial_range)
                .bind(at)
                .bind(position)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            ListingEvent::QuantityReserved { quantity, .. } => (Decimal::ZERO, quantity.value(), None, None, None),
            ListingEvent::SaleConfirmed { quantity, .. } => (quantity.value(), -quantity.value(), None, None, None),
            ListingEvent::ReservationReleased { quantity, .. } => (Decimal::ZERO, -quantity.value(), None, None, None),
            ListingEvent::ListingUpdated { unit_price, quantity } => {
                (Decimal::ZERO, Decimal::ZERO, None, Some(quantity.value()), unit_price.map(|p| p.value()))
            }
            ListingEvent::ListingCancelled { .. } => (Decimal::ZERO, Decimal::ZERO, Some("cancelled"), None, None),
            ListingEvent::ListingExpired { .. } => (Decimal::ZERO, Decimal::ZERO, Some("expired"), None, None),
        };
        sqlx::query(
            "UPDATE rm_listings SET sold = sold + $2, reserved = reserved + $3, status = COALESCE($4, status), \
             quantity = COALESCE($5, quantity), unit_price = COALESCE($6, unit_price), updated_at = $7, \
             last_position = $8 WHERE listing_id = $1",
        )
        .bind(id)
        .bind(sold)
        .bind(reserved)
        .bind(status)
        .bind(quantity)
        .bind(unit_price)
        .bind(at)
        .bind(position)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
