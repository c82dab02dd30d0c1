//! The running ingest: one task per configured provider, each polling on its own schedule
//! and backing off alone when it keeps failing, and one task deriving CARBON/ETH whenever a
//! round recorded a new input.

use std::sync::Arc;
use std::time::Duration;

use event_store::{Store, StoreError};
use rust_decimal::Decimal;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::IngestConfig;
use crate::derive::{derive_carbon_eth, DerivedFrom, DERIVED_SOURCE};
use crate::http::{FetchError, Http};
use crate::metrics::IngestMetrics;
use crate::providers::coingecko::CoinGecko;
use crate::providers::oilpriceapi::OilPriceApi;
use crate::providers::{Provider, Quoted};
use crate::record::{record_observation, Observation, RecordOutcome};

/// Doublings of a failing provider's poll interval before the cap takes over anyway.
const BACKOFF_DOUBLINGS_MAX: u32 = 16;

/// What every task shares.
pub struct Ingest {
    store: Store,
    config: IngestConfig,
    http: Http,
    metrics: IngestMetrics,
    /// Wakes the deriver after a round that recorded something.
    inputs_changed: Notify,
}

/// A round that did not get through: no answer, or the ledger could not record it.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RoundError {
    fn reason(&self) -> &'static str {
        match self {
            RoundError::Fetch(error) => error.reason(),
            RoundError::Store(_) => "store",
        }
    }
}

/// Counts of one batch of observations (a poll round, a backfill, an import).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub recorded: usize,
    pub duplicates: usize,
    pub rejected: usize,
}

impl Ingest {
    pub fn new(store: Store, config: IngestConfig, metrics: IngestMetrics) -> Result<Arc<Ingest>, reqwest::Error> {
        let http = Http::new(config.http.clone())?;
        Ok(Arc::new(Ingest { store, config, http, metrics, inputs_changed: Notify::new() }))
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    /// Starts a task per configured provider, and the deriver when any is configured.
    pub fn spawn(self: &Arc<Ingest>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(config) = &self.config.coingecko {
            tasks.push(tokio::spawn(self.clone().poll_forever(CoinGecko::new(config.clone()))));
        }
        if let Some(config) = &self.config.carbon {
            tasks.push(tokio::spawn(self.clone().poll_forever(OilPriceApi::new(config.clone()))));
        }
        match tasks.is_empty() {
            true => tracing::info!("no price provider configured: prices come from admins and imports only"),
            false => tasks.push(tokio::spawn(self.clone().derive_forever())),
        }
        tasks
    }

    async fn poll_forever<P: Provider>(self: Arc<Ingest>, provider: P) {
        let source = provider.source();
        let mut failures = 0_u32;
        loop {
            let delay = match self.poll_round(&provider).await {
                Ok(tally) => {
                    failures = 0;
                    if tally.recorded > 0 {
                        self.inputs_changed.notify_one();
                    }
                    self.config.poll_interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.metrics.failed(source, error.reason());
                    let retry_after = match &error {
                        RoundError::Fetch(fetch) => fetch.retry_after(),
                        RoundError::Store(_) => None,
                    };
                    let delay = failure_delay(&self.config, failures, retry_after);
                    tracing::warn!(source, failures, reason = error.reason(), %error, next_poll_secs = delay.as_secs_f64(), "price poll failed");
                    delay
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// One poll of `provider`: fetch, then record each pair's price with the jump check.
    pub async fn poll_round<P: Provider>(&self, provider: &P) -> Result<Tally, RoundError> {
        let quotes = provider.fetch_latest(&self.http).await?;
        let tally = self.record_all(provider.source(), quotes, Some(self.config.jump_max_pct)).await?;
        tracing::debug!(source = provider.source(), ?tally, "price poll round");
        Ok(tally)
    }

    /// Records `quotes` in order, logging and counting each rejection.
    pub async fn record_all(
        &self,
        source: &str,
        quotes: Vec<Quoted>,
        jump_max_pct: Option<Decimal>,
    ) -> Result<Tally, StoreError> {
        record_quotes(&self.store, &self.metrics, source, quotes, jump_max_pct).await
    }

    async fn derive_forever(self: Arc<Ingest>) {
        let mut last: Option<DerivedFrom> = None;
        loop {
            match derive_carbon_eth(&self.store, &mut last).await {
                Ok(Some((observation, outcome))) => self.report_derived(&observation, &outcome),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "deriving CARBON/ETH failed; retrying after the next round"),
            }
            self.inputs_changed.notified().await;
        }
    }

    fn report_derived(&self, observation: &Observation, outcome: &RecordOutcome) {
        let (source, price, observed_at) = (DERIVED_SOURCE, observation.price, observation.observed_at);
        match outcome {
            RecordOutcome::Recorded { .. } => {
                self.metrics.observed(source, "recorded");
                tracing::info!(pair = "CARBON/ETH/EUA", %price, %observed_at, "derived price recorded");
            }
            // Already derived for this older input's time: the first value stays.
            RecordOutcome::Duplicate => {
                self.metrics.observed(source, "duplicate");
                tracing::debug!(%price, %observed_at, "derived price known");
            }
            RecordOutcome::Rejected(rejection) => {
                self.metrics.rejected(source, rejection.code());
                tracing::warn!(pair = "CARBON/ETH/EUA", %price, reason = rejection.code(), %rejection, "derived price rejected");
            }
        }
    }
}

/// Records `quotes` of `source` in order; rejections are logged (provider, pair, reason),
/// counted, and never recorded.
pub async fn record_quotes(
    store: &Store,
    metrics: &IngestMetrics,
    source: &str,
    quotes: Vec<Quoted>,
    jump_max_pct: Option<Decimal>,
) -> Result<Tally, StoreError> {
    let mut tally = Tally::default();
    for quoted in quotes {
        let outcome = match &quoted.result {
            Ok(observation) => record_observation(store, observation, jump_max_pct).await?,
            Err(rejection) => RecordOutcome::Rejected(rejection.clone()),
        };
        match &outcome {
            RecordOutcome::Recorded { .. } => tally.recorded += 1,
            RecordOutcome::Duplicate => tally.duplicates += 1,
            RecordOutcome::Rejected(rejection) => {
                tally.rejected += 1;
                metrics.rejected(source, rejection.code());
                tracing::warn!(provider = source, pair = %quoted.pair, reason = rejection.code(), %rejection, "price rejected");
                continue;
            }
        }
        metrics.observed(source, outcome_label(&outcome));
    }
    Ok(tally)
}

fn outcome_label(outcome: &RecordOutcome) -> &'static str {
    match outcome {
        RecordOutcome::Recorded { .. } => "recorded",
        RecordOutcome::Duplicate => "duplicate",
        RecordOutcome::Rejected(_) => "rejected",
    }
}

/// The wait before a failing provider's next poll: the poll interval doubled per failure in a
/// row, capped, and never shorter than the provider's `Retry-After`.
pub fn failure_delay(config: &IngestConfig, failures: u32, retry_after: Option<Duration>) -> Duration {
    let doublings = failures.min(BACKOFF_DOUBLINGS_MAX);
    let grown = config.poll_interval.saturating_mul(2_u32.pow(doublings)).min(config.failure_backoff_max);
    grown.max(config.poll_interval).max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_provider_waits_longer_each_time_up_to_the_cap() {
        let config = IngestConfig {
            poll_interval: Duration::from_secs(60),
            failure_backoff_max: Duration::from_secs(900),
            ..IngestConfig::default()
        };
        let delays: Vec<u64> = (1..=6).map(|failures| failure_delay(&config, failures, None).as_secs()).collect();
        assert_eq!(delays, vec![120, 240, 480, 900, 900, 900]);
        assert_eq!(failure_delay(&config, u32::MAX, None).as_secs(), 900, "no overflow");
        let asked = Some(Duration::from_secs(1800));
        assert_eq!(failure_delay(&config, 1, asked).as_secs(), 1800, "Retry-After wins");
    }
}
