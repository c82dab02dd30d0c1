//! Derived pairs: CARBON/ETH = CARBON/EUR (EUA) ÷ ETH/EUR, recorded with `source: derived`
//! under the EUA index. Its `observed_at` is the older input's, so a derived price is never
//! fresher than what it was computed from.
//!
//! CARBON/USD is not derived: no configured provider gives EUR/USD (a rate implied through
//! ETH/USD ÷ ETH/EUR would be a crypto cross rate, not a currency rate).

use chrono::{DateTime, Utc};
use domain::price::{feed_id, PriceFeed, PriceObservation, PRICE_DECIMALS_MAX};
use domain::Currency;
use event_store::{Store, StoreError};
use rust_decimal::RoundingStrategy;

use crate::providers::oilpriceapi::INDEX;
use crate::record::{record_observation, Observation, RecordOutcome};

pub const DERIVED_SOURCE: &str = "derived";

/// The inputs a derived price was computed from: (CARBON/EUR, ETH/EUR), each as
/// (price, observed_at), to skip a recomputation when neither changed.
pub type DerivedFrom = (PriceObservation, PriceObservation);

/// CARBON/ETH from CARBON/EUR and ETH/EUR, rounded half-even to 18 decimals. `None` when
/// the division overflows (no real price does).
pub fn carbon_eth(carbon_eur: &PriceObservation, eth_eur: &PriceObservation) -> Option<Observation> {
    let price = carbon_eur
        .price
        .checked_div(eth_eur.price)?
        .round_dp_with_strategy(PRICE_DECIMALS_MAX, RoundingStrategy::MidpointNearestEven)
        .normalize();
    Some(Observation {
        base: "CARBON".into(),
        quote: Currency::Eth,
        index: Some(INDEX.into()),
        price,
        source: DERIVED_SOURCE.into(),
        observed_at: older(carbon_eur.observed_at, eth_eur.observed_at),
    })
}

fn older(a: DateTime<Utc>, b: DateTime<Utc>) -> DateTime<Utc> {
    a.min(b)
}

/// Recomputes CARBON/ETH from the feeds' latest prices, unless they are those of `last`.
/// Records it (a duplicate when an earlier computation had the same older input time: the
/// first value computed for that time stays, closest to when both inputs were current).
pub async fn derive_carbon_eth(
    store: &Store,
    last: &mut Option<DerivedFrom>,
) -> Result<Option<(Observation, RecordOutcome)>, StoreError> {
    let carbon = store.load_current::<PriceFeed>(&feed_id("CARBON", Currency::Eur, Some(INDEX))).await?;
    let eth = store.load_current::<PriceFeed>(&feed_id("ETH", Currency::Eur, None)).await?;
    let (Some(carbon), Some(eth)) = (carbon.aggregate.latest, eth.aggregate.latest) else { return Ok(None) };
    let inputs = (carbon, eth);
    if last.as_ref() == Some(&inputs) {
        return Ok(None);
    }
    let Some(observation) = carbon_eth(&inputs.0, &inputs.1) else { return Ok(None) };
    // No jump check: both inputs passed theirs, and a ratio of two moves may move further.
    let outcome = record_observation(store, &observation, None).await?;
    *last = Some(inputs);
    Ok(Some((observation, outcome)))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use super::*;

    fn observed(price: &str, unix: i64) -> PriceObservation {
        PriceObservation {
            price: Decimal::from_str(price).unwrap(),
            source: "x".into(),
            observed_at: DateTime::from_timestamp(unix, 0).unwrap(),
        }
    }

    #[test]
    fn carbon_in_eth_is_carbon_in_eur_over_eth_in_eur_at_the_older_time() {
        let derived = carbon_eth(&observed("71.25", 1_000), &observed("2952.12", 2_000)).unwrap();
        // 71.25 / 2952.12 = 0.024135197756188772... rounded half-even to 18 decimals.
        assert_eq!(derived.price.to_string(), "0.024135197756188773");
        assert_eq!(derived.observed_at.timestamp(), 1_000);
        assert_eq!(derived.feed_id(), "CARBON/ETH/EUA");
        assert_eq!(derived.source, "derived");
        let derived = carbon_eth(&observed("80", 3_000), &observed("2000", 2_000)).unwrap();
        assert_eq!((derived.price.to_string().as_str(), derived.observed_at.timestamp()), ("0.04", 2_000));
    }

    #[test]
    fn the_18th_decimal_rounds_half_to_even() {
        // 1 / (4 × 10^17) = 0.0000000000000000025 → ...02 (2 is even); 3 / (4 × 10^17) → ...08.
        let tiny = |numerator: &str| carbon_eth(&observed(numerator, 0), &observed("400000000000000000", 0)).unwrap();
        assert_eq!(tiny("1").price.to_string(), "0.000000000000000002");
        assert_eq!(tiny("3").price.to_string(), "0.000000000000000008");
    }
}
