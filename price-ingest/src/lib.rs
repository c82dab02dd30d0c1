//! Price ingest: market prices from provider APIs (CoinGecko for ETH, an OilPriceAPI-style
//! endpoint for the EU carbon allowance), CSV history and CoinGecko backfills, recorded as
//! `PriceObserved` events on the PriceFeed aggregate through the event store, each
//! (feed, source, observed_at) once. Derived CARBON/ETH follows its inputs.
//!
//! Layers: `providers` speak each API's format and turn answers into observations; `http`
//! bounds and retries requests; `record` decides and records one observation; `ingest` runs
//! the polling tasks; `backfill` and `csv_import` record history; `fake` serves the providers'
//! formats for development.

pub mod backfill;
pub mod config;
pub mod csv_import;
pub mod derive;
pub mod fake;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod providers;
pub mod record;

pub use config::{ApiKey, CarbonPriceConfig, CoinGeckoConfig, CoinGeckoPlan, HttpConfig, IngestConfig};
pub use ingest::{Ingest, Tally};
pub use metrics::IngestMetrics;
pub use record::{record_observation, Observation, RecordOutcome, Rejection};
