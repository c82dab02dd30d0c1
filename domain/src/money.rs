//! Money: currencies with fixed scales and validated positive amounts. Never a float.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Largest amount one command may move, in whole units of any currency. Chosen so that the
/// largest balance at ETH's 18 decimals still fits `Decimal`'s 96-bit mantissa (about 7.9e28).
pub const AMOUNT_UNITS_MAX: i64 = 10_000_000_000;
/// Largest balance a wallet may hold, in whole units; anything above is `balance_overflow`.
pub const BALANCE_UNITS_MAX: i64 = 50_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    Eur,
    Usd,
    Eth,
    Carbon,
}

impl Currency {
    pub const ALL: [Currency; 4] = [Currency::Eur, Currency::Usd, Currency::Eth, Currency::Carbon];

    /// Decimal places the ledger keeps for this currency (CARBON: 0.001 t CO2e).
    pub fn scale(self) -> u32 {
        match self {
            Currency::Eur | Currency::Usd => 2,
            Currency::Eth => 18,
            Currency::Carbon => 3,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::Eur => "EUR",
            Currency::Usd => "USD",
            Currency::Eth => "ETH",
            Currency::Carbon => "CARBON",
        }
    }

    /// Formats a value at this currency's scale ("10" in EUR prints "10.00").
    pub fn format(self, value: Decimal) -> String {
        let mut scaled = value;
        scaled.rescale(self.scale());
        scaled.to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown currency: {0}")]
pub struct UnknownCurrency(pub String);

impl FromStr for Currency {
    type Err = UnknownCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EUR" => Ok(Currency::Eur),
            "USD" => Ok(Currency::Usd),
            "ETH" => Ok(Currency::Eth),
            "CARBON" => Ok(Currency::Carbon),
            other => Err(UnknownCurrency(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a decimal string such as \"10.50\"")]
    Malformed,
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount has more decimals than the currency allows")]
    PrecisionExceeded,
    #[error("amount is larger than the ledger accepts")]
    Overflow,
}

impl AmountError {
    /// The stable machine-readable code the API answers with.
    pub fn code(self) -> &'static str {
        match self {
            AmountError::Malformed => "amount_malformed",
            AmountError::NotPositive => "amount_not_positive",
            AmountError::PrecisionExceeded => "amount_precision_exceeded",
            AmountError::Overflow => "amount_overflow",
        }
    }
}

/// A positive amount at its currency's scale. Construct with [`Amount::parse`] (input from
/// outside) or [`Amount::new`] (a value the platform computed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(#[serde(with = "rust_decimal::serde::str")] Decimal);

/// Longest amount string accepted; longer input is rejected before any arithmetic.
const AMOUNT_TEXT_LEN_MAX: usize = 40;

impl Amount {
    /// Parses `^[0-9]+(\.[0-9]+)?$` into an amount of `currency`, never rounding.
    pub fn parse(text: &str, currency: Currency) -> Result<Amount, AmountError> {
        if text.len() > AMOUNT_TEXT_LEN_MAX {
            return Err(if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                AmountError::Overflow
            } else {
                AmountError::Malformed
            });
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
            return Err(AmountError::Malformed);
        }
        let significant_decimals = fraction.map_or(0, |f| f.trim_end_matches('0').len());
        if significant_decimals > currency.scale() as usize {
            return Err(AmountError::PrecisionExceeded);
        }
        if whole.trim_start_matches('0').len() > 11 {
            return Err(AmountError::Overflow);
        }
        let value = Decimal::from_str(text).map_err(|_| AmountError::Overflow)?;
        Amount::new(value, currency)
    }

    /// Validates a computed value: positive, within scale and limits; rescaled to the currency.
    pub fn new(value: Decimal, currency: Currency) -> Result<Amount, AmountError> {
        if value <= Decimal::ZERO {
            return Err(AmountError::NotPositive);
        }
        if value.normalize().scale() > currency.scale() {
            return Err(AmountError::PrecisionExceeded);
        }
        if value > Decimal::from(AMOUNT_UNITS_MAX) {
            return Err(AmountError::Overflow);
        }
        let mut scaled = value;
        scaled.rescale(currency.scale());
        Ok(Amount(scaled))
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Largest balance as a decimal, see [`BALANCE_UNITS_MAX`].
pub fn balance_max() -> Decimal {
    Decimal::from(BALANCE_UNITS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        use AmountError::*;
        let cases: &[(&str, Currency, Result<&str, AmountError>)] = &[
            ("10", Currency::Eur, Ok("10.00")),
            ("10.5", Currency::Eur, Ok("10.50")),
            ("0.01", Currency::Eur, Ok("0.01")),
            ("10.500", Currency::Eur, Ok("10.50")),
            ("10.505", Currency::Eur, Err(PrecisionExceeded)),
            ("0.001", Currency::Carbon, Ok("0.001")),
            ("0.0001", Currency::Carbon, Err(PrecisionExceeded)),
            ("0.000000000000000001", Currency::Eth, Ok("0.000000000000000001")),
            ("0", Currency::Eur, Err(NotPositive)),
            ("0.00", Currency::Eur, Err(NotPositive)),
            ("-1", Currency::Eur, Err(Malformed)),
            ("+1", Currency::Eur, Err(Malformed)),
            ("1e3", Currency::Eur, Err(Malformed)),
            ("1.", Currency::Eur, Err(Malformed)),
            (".5", Currency::Eur, Err(Malformed)),
            ("", Currency::Eur, Err(Malformed)),
            (" 1", Currency::Eur, Err(Malformed)),
            ("NaN", Currency::Eur, Err(Malformed)),
            ("10000000000", Currency::Eur, Ok("10000000000.00")),
            ("10000000000.01", Currency::Eur, Err(Overflow)),
            ("99999999999999999999999999999999", Currency::Eur, Err(Overflow)),
            ("9999999999999999999999999999999999999999999", Currency::Eur, Err(Overflow)),
        ];
        for (text, currency, expected) in cases {
            let got = Amount::parse(text, *currency).map(|a| a.to_string());
            assert_eq!(got.as_deref().map_err(|e| *e), expected.map(|s| s), "{text} {currency}");
        }
    }

    #[test]
    fn amounts_serialize_as_strings_at_scale() {
        let amount = Amount::parse("7", Currency::Carbon).unwrap();
        assert_eq!(serde_json::to_string(&amount).unwrap(), "\"7.000\"");
        let back: Amount = serde_json::from_str("\"7.000\"").unwrap();
        assert_eq!(back, amount);
    }

    #[test]
    fn currency_codes_round_trip() {
        for currency in Currency::ALL {
            assert_eq!(currency.code().parse::<Currency>().unwrap(), currency);
            assert_eq!(serde_json::to_string(&currency).unwrap(), format!("\"{}\"", currency.code()));
        }
    }
}
