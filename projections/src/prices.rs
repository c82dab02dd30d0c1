use async_trait::async_trait;
use domain::price::{PriceFeed, PriceFeedEvent};
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

use crate::Projection;

/// Which source wins a tie of `observed_at`: the domain's list, which the PriceFeed aggregate
/// (what purchases price from) uses too.
pub const PRICE_SOURCE_PRIORITY: &[&str] = domain::price::SOURCE_PRIORITY;

/// The Postgres channel the projection notifies when an observation became a feed's latest,
/// so API processes streaming prices look at `rm_price_updates` at once instead of at their
/// next poll.
pub const PRICE_UPDATES_CHANNEL: &str = "ecoledger_price_updates";

/// `rm_prices`: the latest observation per feed; `rm_price_history`: every observation;
/// `rm_price_updates`: each observation that became its feed's latest, by position (what the
/// SSE stream sends).
pub struct Prices {
    source_priority: Vec<String>,
}

impl Default for Prices {
    fn default() -> Self {
        Prices::with_source_priority(PRICE_SOURCE_PRIORITY.iter().map(|s| s.to_string()).collect())
    }
}

impl Prices {
    /// The projection with a tie-break order of sources, highest priority first. Live
    /// projector and replays must use the same list, or their `rm_prices` may differ on ties.
    pub fn with_source_priority(source_priority: Vec<String>) -> Prices {
        Prices { source_priority }
    }
}

#[async_trait]
impl Projection for Prices {
    fn name(&self) -> &'static str {
        "prices"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_prices", "rm_price_history", "rm_price_updates"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        if event.aggregate_type != <PriceFeed as cqrs_es::Aggregate>::TYPE {
            return Ok(());
        }
        let PriceFeedEvent::PriceObserved { base, quote, index, price, source, observed_at, received_at } =
            event_store::store::decode_event_shared::<PriceFeed>(event)?;
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
        // Only a newer observation, or one as new from a higher-priority source, replaces the
        // latest; when it does, it is also a streamed update, and listeners are woken (a
        // NOTIFY is delivered at commit, so they never look before the row is visible).
        // Identical notifications of one transaction fold into one.
        sqlx::query(
            "WITH latest AS ( \
               INSERT INTO rm_prices (feed_id, base, quote, index, price, source, observed_at, received_at, position) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
               ON CONFLICT (feed_id) DO UPDATE SET price = EXCLUDED.price, source = EXCLUDED.source, \
                 observed_at = EXCLUDED.observed_at, received_at = EXCLUDED.received_at, position = EXCLUDED.position \
               WHERE rm_prices.observed_at < EXCLUDED.observed_at \
                  OR (rm_prices.observed_at = EXCLUDED.observed_at \
                      AND COALESCE(array_position($10::text[], EXCLUDED.source), $11) \
                        < COALESCE(array_position($10::text[], rm_prices.source), $11)) \
               RETURNING position, feed_id, base, quote, index, price, source, observed_at \
             ), streamed AS ( \
               INSERT INTO rm_price_updates (position, feed_id, base, quote, index, price, source, observed_at) \
               SELECT position, feed_id, base, quote, index, price, source, observed_at FROM latest \
               ON CONFLICT (position) DO NOTHING RETURNING position \
             ) \
             SELECT pg_notify($12, '') FROM streamed",
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
        .bind(&self.source_priority)
        .bind(self.source_priority.len() as i32 + 1)
        .bind(PRICE_UPDATES_CHANNEL)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
