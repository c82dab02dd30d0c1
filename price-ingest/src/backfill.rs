//! Backfilling ETH history from CoinGecko's market chart. Every point is recorded as history
//! (deduplicated like any observation); none replaces a newer latest, the aggregate sees to it.

use chrono::{DateTime, Utc};
use domain::Currency;
use event_store::Store;

use crate::config::CoinGeckoConfig;
use crate::http::{FetchError, Http};
use crate::ingest::{record_quotes, Tally};
use crate::metrics::IngestMetrics;
use crate::providers::coingecko::{CoinGecko, BACKFILL_RANGE_MAX, SOURCE};

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("--from must be before --to")]
    RangeEmpty,
    #[error("a backfill covers at most {} days; split the range", BACKFILL_RANGE_MAX.num_days())]
    RangeTooLong,
    #[error("CoinGecko has ETH history in EUR and USD only, not {0}")]
    QuoteNotSupported(Currency),
    #[error("CoinGecko: {0}")]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] event_store::StoreError),
}

/// Records ETH/`quote` history between `from` and `to`, without the jump check (history is not
/// compared with today's price; the price rules still apply).
pub async fn backfill_eth(
    store: &Store,
    http: &Http,
    config: &CoinGeckoConfig,
    quote: Currency,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Tally, BackfillError> {
    if from >= to {
        return Err(BackfillError::RangeEmpty);
    }
    if to - from > BACKFILL_RANGE_MAX {
        return Err(BackfillError::RangeTooLong);
    }
    if !matches!(quote, Currency::Eur | Currency::Usd) {
        return Err(BackfillError::QuoteNotSupported(quote));
    }
    let quotes = CoinGecko::new(config.clone()).history(http, quote, from, to).await?;
    Ok(record_quotes(store, &IngestMetrics::new(), SOURCE, quotes, None).await?)
}
