//! The providers polled for prices, each speaking its real API's format.

pub mod coingecko;
pub mod oilpriceapi;

use std::future::Future;

use domain::price::parse_price;
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use crate::http::{FetchError, Http};
use crate::record::{Observation, Rejection};

/// One pair's price from a response: parsed into an observation, or why it could not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    /// `BASE/QUOTE` or `BASE/QUOTE/INDEX`, for logs.
    pub pair: String,
    pub result: Result<Observation, Rejection>,
}

/// A provider polled on an interval by its own task.
pub trait Provider: Send + Sync + 'static {
    /// The `source` its observations are recorded with.
    fn source(&self) -> &'static str;

    /// The provider's current prices.
    fn fetch_latest(&self, http: &Http) -> impl Future<Output = Result<Vec<Quoted>, FetchError>> + Send;
}

/// A price from a JSON number kept as its text (never through `f64`): `71.25`, or with an
/// exponent (`7.125e1`, valid JSON), converted exactly. Anything else, `null` and strings
/// included, is malformed; then the price rules of [`parse_price`].
pub fn price_from_json(raw: Option<&RawValue>) -> Result<Decimal, Rejection> {
    let text = raw.ok_or(Rejection::PriceMissing)?.get().trim();
    if text == "null" {
        return Err(Rejection::PriceMissing);
    }
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(Rejection::Price(domain::price::PriceError::Malformed));
    }
    if text.contains(['e', 'E']) {
        // Exact: the mantissa's digits are kept and the exponent moves the point. An
        // exponent beyond Decimal's 28 digits is out of any price's range.
        let value = Decimal::from_scientific(text).map_err(|_| domain::price::PriceError::OutOfRange)?;
        return Ok(parse_price(&value.normalize().to_string())?);
    }
    Ok(parse_price(text)?)
}

/// Reads `text` as JSON into a raw value (tests and the fake provider).
pub fn raw_number(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string()).expect("a JSON number")
}

#[cfg(test)]
mod tests {
    use domain::price::PriceError;

    use super::*;

    #[test]
    fn json_numbers_become_prices_without_floats() {
        use PriceError::*;
        let cases: &[(&str, Result<&str, Rejection>)] = &[
            ("71.25", Ok("71.25")),
            ("2952.123456789012345678", Ok("2952.123456789012345678")),
            ("2952.1234567890123456789", Err(Rejection::Price(OutOfRange))),
            ("0.000000000000000001", Ok("0.000000000000000001")),
            ("0.1", Ok("0.1")),
            ("7.125e1", Ok("71.25")),
            ("1E-18", Ok("0.000000000000000001")),
            ("1e-19", Err(Rejection::Price(OutOfRange))),
            ("1e40", Err(Rejection::Price(OutOfRange))),
            ("0", Err(Rejection::Price(NotPositive))),
            ("-71.25", Err(Rejection::Price(NotPositive))),
            ("-1e2", Err(Rejection::Price(NotPositive))),
            ("null", Err(Rejection::PriceMissing)),
            ("\"71.25\"", Err(Rejection::Price(Malformed))),
            ("true", Err(Rejection::Price(Malformed))),
            ("{}", Err(Rejection::Price(Malformed))),
        ];
        for (text, expected) in cases {
            let raw = RawValue::from_string(text.to_string()).unwrap();
            let got = price_from_json(Some(&raw)).map(|p| p.to_string());
            assert_eq!(got.as_deref().map_err(Clone::clone), expected.clone(), "{text}");
        }
        assert_eq!(price_from_json(None), Err(Rejection::PriceMissing));
    }
}
