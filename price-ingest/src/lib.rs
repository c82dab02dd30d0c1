//! Price ingest: market prices from provider APIs as events.
//! Not built yet: the price-ingest issue brings it.
