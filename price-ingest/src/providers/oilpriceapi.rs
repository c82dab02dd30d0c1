//! The EU carbon allowance (EUA) price in EUR from an OilPriceAPI-style endpoint:
//! `GET /v1/prices/latest?by_code=EU_CARBON_EUR` with `Authorization: Token {key}`, answering
//! `{"status":"success","data":{"price":71.25,"formatted":"€71.25","currency":"EUR",
//! "code":"EU_CARBON_EUR","created_at":"2026-01-05T09:30:00.000Z","type":"spot_price"}}`.
//! Recorded as CARBON/EUR with index `EUA`.

use chrono::DateTime;
use domain::Currency;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{price_from_json, Provider, Quoted};
use crate::config::CarbonPriceConfig;
use crate::http::{FetchError, Http};
use crate::record::{Observation, Rejection};

pub const SOURCE: &str = "oilpriceapi";
/// The provider's code of the EU carbon allowance price in EUR.
pub const CODE: &str = "EU_CARBON_EUR";
/// The market index the price is recorded under.
pub const INDEX: &str = "EUA";
pub const PAIR: &str = "CARBON/EUR/EUA";

#[derive(Debug, Serialize, Deserialize)]
pub struct LatestResponse {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<LatestPrice>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LatestPrice {
    pub price: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    pub currency: Option<String>,
    pub code: Option<String>,
    /// When the provider took the price: RFC 3339.
    pub created_at: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

pub struct OilPriceApi {
    config: CarbonPriceConfig,
}

impl OilPriceApi {
    pub fn new(config: CarbonPriceConfig) -> OilPriceApi {
        OilPriceApi { config }
    }
}

impl Provider for OilPriceApi {
    fn source(&self) -> &'static str {
        SOURCE
    }

    async fn fetch_latest(&self, http: &Http) -> Result<Vec<Quoted>, FetchError> {
        let url = format!("{}/v1/prices/latest", self.config.base_url);
        let response: LatestResponse = http
            .get_json(SOURCE, |client| {
                let request = client.get(&url).query(&[("by_code", CODE)]).header("accept", "application/json");
                match &self.config.api_key {
                    Some(key) => request.header("authorization", format!("Token {}", key.expose())),
                    None => request,
                }
            })
            .await?;
        Ok(vec![parse_latest(&response)?])
    }
}

/// The EUA price of a `/v1/prices/latest` answer. An answer that is not a success, or about
/// another code or currency, is malformed as a whole.
pub fn parse_latest(response: &LatestResponse) -> Result<Quoted, FetchError> {
    let data = match (response.status.as_str(), &response.data) {
        ("success", Some(data)) => data,
        (status, _) => return Err(FetchError::Malformed(format!("status {status:?} without a price"))),
    };
    if data.code.as_deref() != Some(CODE) || data.currency.as_deref() != Some("EUR") {
        return Err(FetchError::Malformed(format!(
            "answered code {:?} in {:?}, asked {CODE} in EUR",
            data.code, data.currency
        )));
    }
    let result = price_from_json(data.price.as_deref()).and_then(|price| {
        let observed_at = data
            .created_at
            .as_deref()
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .ok_or(Rejection::ObservedAtInvalid)?
            .to_utc();
        Ok(Observation {
            base: "CARBON".into(),
            quote: Currency::Eur,
            index: Some(INDEX.into()),
            price,
            source: SOURCE.into(),
            observed_at,
        })
    });
    Ok(Quoted { pair: PAIR.into(), result })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use super::*;

    fn parse(body: &str) -> Result<Quoted, FetchError> {
        parse_latest(&serde_json::from_str(body).unwrap())
    }

    #[test]
    fn a_latest_answer_gives_the_eua_price_at_its_creation_time() {
        let body = r#"{"status":"success","data":{"price":71.25,"formatted":"€71.25","currency":"EUR",
            "code":"EU_CARBON_EUR","created_at":"2026-01-05T09:30:00.000Z","type":"spot_price"}}"#;
        let observation = parse(body).unwrap().result.unwrap();
        assert_eq!(observation.feed_id(), "CARBON/EUR/EUA");
        assert_eq!(observation.price, Decimal::from_str("71.25").unwrap());
        assert_eq!(observation.observed_at, DateTime::parse_from_rfc3339("2026-01-05T09:30:00Z").unwrap());
        assert_eq!(observation.source, "oilpriceapi");
    }

    #[test]
    fn errors_and_other_codes_are_malformed_and_bad_values_rejected() {
        assert!(parse(r#"{"status":"error","error":"Invalid API key"}"#).is_err());
        let other = r#"{"status":"success","data":{"price":82.1,"currency":"USD","code":"BRENT_CRUDE_USD","created_at":"2026-01-05T09:30:00Z"}}"#;
        assert!(parse(other).is_err());
        let zero = r#"{"status":"success","data":{"price":0,"currency":"EUR","code":"EU_CARBON_EUR","created_at":"2026-01-05T09:30:00Z"}}"#;
        assert_eq!(parse(zero).unwrap().result, Err(Rejection::Price(domain::price::PriceError::NotPositive)));
        let no_time = r#"{"status":"success","data":{"price":71,"currency":"EUR","code":"EU_CARBON_EUR","created_at":"yesterday"}}"#;
        assert_eq!(parse(no_time).unwrap().result, Err(Rejection::ObservedAtInvalid));
    }
}
