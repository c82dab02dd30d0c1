//! CoinGecko (API v3): ETH/EUR and ETH/USD now, from `/simple/price`, and ETH history from
//! `/coins/{id}/market_chart/range`. The key, when configured, goes in the plan's header.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use domain::Currency;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{price_from_json, Provider, Quoted};
use crate::config::CoinGeckoConfig;
use crate::http::{FetchError, Http};
use crate::record::{Observation, Rejection};

pub const SOURCE: &str = "coingecko";
/// CoinGecko's id of ether.
pub const COIN_ID: &str = "ethereum";
/// The quotes polled, as CoinGecko names them in `vs_currencies`.
pub const QUOTES: [(Currency, &str); 2] = [(Currency::Eur, "eur"), (Currency::Usd, "usd")];
/// Longest backfill range in one request (the demo plan serves 365 days of history).
pub const BACKFILL_RANGE_MAX: TimeDelta = TimeDelta::days(365);
/// Most points of history taken from one answer (hourly over 365 days is 8,760).
pub const BACKFILL_POINTS_MAX: usize = 20_000;

/// `/simple/price`: prices by coin id, then by `vs_currency`, with `last_updated_at` in Unix
/// seconds: `{"ethereum":{"eur":2952.12,"usd":3410.55,"last_updated_at":1767605400}}`.
pub type SimplePriceResponse = BTreeMap<String, SimplePrice>;

#[derive(Debug, Serialize, Deserialize)]
pub struct SimplePrice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eur: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<i64>,
}

/// `/coins/{id}/market_chart/range`: `[unix milliseconds, value]` pairs.
#[derive(Debug, Serialize, Deserialize)]
pub struct MarketChartResponse {
    pub prices: Vec<(i64, Box<RawValue>)>,
    #[serde(default)]
    pub market_caps: Vec<(i64, Box<RawValue>)>,
    #[serde(default)]
    pub total_volumes: Vec<(i64, Box<RawValue>)>,
}

pub struct CoinGecko {
    config: CoinGeckoConfig,
}

impl CoinGecko {
    pub fn new(config: CoinGeckoConfig) -> CoinGecko {
        CoinGecko { config }
    }

    fn get(&self, client: &reqwest::Client, path: &str, query: &[(&str, String)]) -> reqwest::RequestBuilder {
        let request =
            client.get(format!("{}{path}", self.config.base_url)).query(query).header("accept", "application/json");
        match &self.config.api_key {
            Some(key) => request.header(self.config.plan.key_header(), key.expose()),
            None => request,
        }
    }

    /// ETH history against `quote` (EUR or USD) between `from` and `to`, as CoinGecko's
    /// granularity gives it (5-minutely up to a day, hourly up to 90 days, daily beyond).
    pub async fn history(
        &self,
        http: &Http,
        quote: Currency,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Quoted>, FetchError> {
        let vs_currency = vs_currency(quote).ok_or_else(|| FetchError::Malformed(format!("no ETH/{quote} history")))?;
        let query = [
            ("vs_currency", vs_currency.to_string()),
            ("from", from.timestamp().to_string()),
            ("to", to.timestamp().to_string()),
        ];
        let path = format!("/coins/{COIN_ID}/market_chart/range");
        let response: MarketChartResponse = http.get_json(SOURCE, |client| self.get(client, &path, &query)).await?;
        if response.prices.len() > BACKFILL_POINTS_MAX {
            return Err(FetchError::Malformed(format!(
                "{} points, at most {BACKFILL_POINTS_MAX}",
                response.prices.len()
            )));
        }
        Ok(parse_market_chart(&response, quote))
    }
}

impl Provider for CoinGecko {
    fn source(&self) -> &'static str {
        SOURCE
    }

    async fn fetch_latest(&self, http: &Http) -> Result<Vec<Quoted>, FetchError> {
        let query = [
            ("ids", COIN_ID.to_string()),
            ("vs_currencies", QUOTES.map(|(_, name)| name).join(",")),
            ("include_last_updated_at", "true".to_string()),
        ];
        let response: SimplePriceResponse =
            http.get_json(SOURCE, |client| self.get(client, "/simple/price", &query)).await?;
        parse_simple_price(&response)
    }
}

fn vs_currency(quote: Currency) -> Option<&'static str> {
    QUOTES.iter().find(|(currency, _)| *currency == quote).map(|(_, name)| *name)
}

fn eth(quote: Currency, price: Result<rust_decimal::Decimal, Rejection>, observed_at: Option<DateTime<Utc>>) -> Quoted {
    let result = price.and_then(|price| {
        let observed_at = observed_at.ok_or(Rejection::ObservedAtInvalid)?;
        Ok(Observation { base: "ETH".into(), quote, index: None, price, source: SOURCE.into(), observed_at })
    });
    Quoted { pair: format!("ETH/{quote}"), result }
}

/// ETH/EUR and ETH/USD from a `/simple/price` answer; an answer without ether is malformed.
pub fn parse_simple_price(response: &SimplePriceResponse) -> Result<Vec<Quoted>, FetchError> {
    let prices = response.get(COIN_ID).ok_or_else(|| FetchError::Malformed(format!("no {COIN_ID:?} in the answer")))?;
    let observed_at = prices.last_updated_at.and_then(|seconds| DateTime::from_timestamp(seconds, 0));
    let quoted = QUOTES
        .iter()
        .map(|(quote, _)| {
            let raw = match quote {
                Currency::Eur => prices.eur.as_deref(),
                _ => prices.usd.as_deref(),
            };
            eth(*quote, price_from_json(raw), observed_at)
        })
        .collect();
    Ok(quoted)
}

/// One observation per `[milliseconds, price]` point of a market chart.
pub fn parse_market_chart(response: &MarketChartResponse, quote: Currency) -> Vec<Quoted> {
    response
        .prices
        .iter()
        .map(|(millis, raw)| eth(quote, price_from_json(Some(raw)), DateTime::from_timestamp_millis(*millis)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use super::*;

    #[test]
    fn a_simple_price_answer_gives_eth_in_eur_and_usd_at_its_update_time() {
        let body = r#"{"ethereum":{"eur":2952.12,"usd":3410.55,"last_updated_at":1767605400}}"#;
        let quoted = parse_simple_price(&serde_json::from_str(body).unwrap()).unwrap();
        let at = DateTime::from_timestamp(1_767_605_400, 0).unwrap();
        let prices: Vec<_> =
            quoted.iter().map(|q| q.result.clone().map(|o| (o.quote, o.price, o.observed_at))).collect();
        assert_eq!(
            prices,
            vec![
                Ok((Currency::Eur, Decimal::from_str("2952.12").unwrap(), at)),
                Ok((Currency::Usd, Decimal::from_str("3410.55").unwrap(), at))
            ]
        );
        assert_eq!(quoted[0].pair, "ETH/EUR");
    }

    #[test]
    fn a_missing_or_bad_price_rejects_only_its_pair() {
        let body = r#"{"ethereum":{"eur":-3,"last_updated_at":1767605400}}"#;
        let quoted = parse_simple_price(&serde_json::from_str(body).unwrap()).unwrap();
        assert_eq!(quoted[0].result, Err(Rejection::Price(domain::price::PriceError::NotPositive)));
        assert_eq!(quoted[1].result, Err(Rejection::PriceMissing));
        let body = r#"{"ethereum":{"eur":2952.12}}"#;
        let quoted = parse_simple_price(&serde_json::from_str(body).unwrap()).unwrap();
        assert_eq!(quoted[0].result, Err(Rejection::ObservedAtInvalid));
        assert!(parse_simple_price(&serde_json::from_str("{}").unwrap()).is_err());
    }

    #[test]
    fn a_market_chart_gives_one_observation_per_point() {
        let body = r#"{"prices":[[1767225600000,2801.5],[1767229200000,2810.25]],
            "market_caps":[[1767225600000,338000000000.1]],"total_volumes":[[1767225600000,12000000000.5]]}"#;
        let quoted = parse_market_chart(&serde_json::from_str(body).unwrap(), Currency::Eur);
        let times: Vec<_> = quoted.iter().map(|q| q.result.as_ref().unwrap().observed_at.timestamp()).collect();
        assert_eq!(times, vec![1_767_225_600, 1_767_229_200]);
        assert_eq!(quoted[1].result.as_ref().unwrap().price, Decimal::from_str("2810.25").unwrap());
    }
}
