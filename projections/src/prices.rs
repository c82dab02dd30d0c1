use async_trait::async_trait;
use domain::price::{PriceFeed, PriceFeedEvent};
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

use crate::Projection;

/// `rm_prices`: the latest observation per feed; `rm_price_history`: every observation.
pub struct Prices;

#[async_trait]
impl Projection for Prices {
    fn name(&self) -> &'static str {
        "prices"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_prices", "rm_price_history"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        if event.aggregate_type != <PriceFeed as cqrs_es::Aggregate>::TYPE {
            return Ok(());
        }
        let PriceFeedEvent::PriceObserved { base, quote, index, price, source, observed_at, received_at } =
            event_store::store::decode_event::<PriceFeed>(event)?;
        // The aggregate refuses a source's newest observation twice but forgets older ones:
        // a repeat of an older observation keeps the first row.
        sqlx::query(
            "INSERT INTO rm_price_history (feed_id, observed_at, source, price, received_at, position) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (feed_id, observed_at, source) DO NOTHING",
        )
        .bind(&event.aggregate_id)
        .bind(observed_at)
        .bind(&source)
        .bind(price)
        .bind(received_at)
        .bind(event.position)
        .execute(&mut *conn)
        .await?;
        // As in the aggregate: only a strictly newer observation replaces the latest.
        sqlx::query(
            "INSERT INTO rm_prices (feed_id, base, quote, index, price, source, observed_at, received_at, position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (feed_id) DO UPDATE SET price = EXCLUDED.price, source = EXCLUDED.source, \
               observed_at = EXCLUDED.observed_at, received_at = EXCLUDED.received_at, position = EXCLUDED.position \
             WHERE rm_prices.observed_at < EXCLUDED.observed_at",
        )
        .bind(&event.aggregate_id)
        .bind(&base)
        .bind(quote.code())
        .bind(&index)
        .bind(price)
        .bind(&source)
        .bind(observed_at)
        .bind(received_at)
        .bind(event.position)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
