//! PriceFeed: market prices recorded as events, one stream per pair and index
//! (`CARBON/EUR/EUA`, `ETH/EUR/-`), so a purchase at market price reads the price it used from
//! the ledger itself and a replay sees the same one.
//!
//! Every accepted observation is recorded, older ones included (they are history); only the
//! observation with the newest `observed_at` is the feed's latest; a tie goes to the source first
//! in [`SOURCE_PRIORITY`], and between sources of equal rank the first recorded stays.
//! The state stays bounded: the latest observation, and the newest `observed_at` of at most
//! [`SOURCES_TRACKED_MAX`] sources for the duplicate check.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Currency;

/// What can be priced: CARBON credits and ETH.
pub const BASES: [Currency; 2] = [Currency::Carbon, Currency::Eth];
/// Most decimals a price may carry.
pub const PRICE_DECIMALS_MAX: u32 = 18;
/// Largest price accepted, in units of the quote currency.
pub const PRICE_UNITS_MAX: i64 = 1_000_000_000_000;
/// How far an observation may lie ahead of its reception (clock skew between provider and us).
pub const OBSERVED_AHEAD_MAX: TimeDelta = TimeDelta::minutes(5);
/// Sources whose newest observation the feed remembers for the duplicate check; beyond it the
/// source with the oldest observation is forgotten.
pub const SOURCES_TRACKED_MAX: usize = 32;
/// Longest index name (`EUA`, `CCA_2026`): `[A-Z0-9_]{1,16}`.
pub const INDEX_LEN_MAX: usize = 16;
/// Longest source name (`manual`, a provider's name): `[a-z0-9_.-]{1,32}`.
pub const SOURCE_LEN_MAX: usize = 32;
/// Longest price text parsed; a longer well-formed number is out of range.
const PRICE_TEXT_LEN_MAX: usize = 48;

/// Which source wins when two observations of a feed share the newest `observed_at`: the one
/// listed first; sources not listed rank after every listed one, and between two of equal rank
/// the first recorded stays. Fixed in code, not a setting: the feed aggregate (what purchases
/// price from), the `prices` read model and every replay must agree on the latest, and a
/// setting could differ between processes or between a run and a later replay.
pub const SOURCE_PRIORITY: &[&str] = &["manual", "coingecko", "oilpriceapi", "csv", "derived"];

/// A source's rank in [`SOURCE_PRIORITY`] (lower wins).
pub fn source_rank(source: &str) -> usize {
    SOURCE_PRIORITY.iter().position(|listed| *listed == source).unwrap_or(SOURCE_PRIORITY.len())
}

/// The stream id of a feed: `BASE/QUOTE/INDEX`, `-` without an index.
pub fn feed_id(base: &str, quote: Currency, index: Option<&str>) -> String {
    format!("{base}/{quote}/{}", index.unwrap_or("-"))
}

/// Kind of the uniqueness claim every recorded observation takes, so one (feed, source,
/// observed_at) is recorded once whatever path it comes by (provider poll, backfill, CSV
/// import, admin entry); the aggregate alone remembers only each source's newest.
pub const OBSERVATION_CLAIM_KIND: &str = "price_observation";

/// The claim value of an observation: `{feed}|{source}|{observed_at}`, the time in RFC 3339
/// with microseconds (what the event keeps), so `09:30:00Z` and `09:30:00.000000Z` are one.
pub fn observation_claim(feed: &str, source: &str, observed_at: DateTime<Utc>) -> String {
    let observed_at = observed_at.trunc_subsecs(6).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!("{feed}|{source}|{observed_at}")
}

/// One price as a purchase uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceObservation {
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub source: String,
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceFeedCommand {
    /// `received_at` is the command's time; `observed_at` the provider's (or the admin's).
    RecordPrice {
        base: String,
        quote: Currency,
        index: Option<String>,
        price: Decimal,
        source: String,
        observed_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PriceFeedEvent {
    PriceObserved {
        base: String,
        quote: Currency,
        index: Option<String>,
        #[serde(with = "rust_decimal::serde::str")]
        price: Decimal,
        source: String,
        observed_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    },
}

impl DomainEvent for PriceFeedEvent {
    fn event_type(&self) -> String {
        match self {
            PriceFeedEvent::PriceObserved { .. } => "PriceObserved".to_string(),
        }
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("price must be a decimal string such as \"71.25\"")]
    Malformed,
    #[error("price must be greater than zero")]
    NotPositive,
    #[error("price must have at most 18 decimals and be at most 1000000000000")]
    OutOfRange,
    #[error("observed_at lies more than 5 minutes after the price was received")]
    ObservedInFuture,
    #[error("this source's price at this observed_at is already recorded")]
    Exists,
    #[error("base must be CARBON or ETH")]
    BaseNotSupported,
    #[error("quote must differ from base")]
    PairInvalid,
    #[error("index must be 1 to 16 of A-Z, 0-9 and _")]
    IndexInvalid,
    #[error("source must be 1 to 32 of a-z, 0-9, _, . and -")]
    SourceInvalid,
    #[error("the command's pair and index do not match the feed")]
    FeedMismatch,
}

impl PriceError {
    /// The stable machine-readable code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            PriceError::Malformed => "price_malformed",
            PriceError::NotPositive => "price_not_positive",
            PriceError::OutOfRange => "price_out_of_range",
            PriceError::ObservedInFuture => "observed_in_future",
            PriceError::Exists => "price_exists",
            PriceError::BaseNotSupported => "base_not_supported",
            PriceError::PairInvalid => "pair_invalid",
            PriceError::IndexInvalid => "index_invalid",
            PriceError::SourceInvalid => "source_invalid",
            PriceError::FeedMismatch => "feed_mismatch",
        }
    }
}

/// Parses a price string, `^[0-9]+(\.[0-9]+)?$`, never rounding; returns it normalised
/// (`71.250` is `71.25`). A well-formed negative number is `price_not_positive`.
pub fn parse_price(text: &str) -> Result<Decimal, PriceError> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(PriceError::Malformed);
    }
    if negative {
        return Err(PriceError::NotPositive);
    }
    let decimals = fraction.map_or(0, |f| f.trim_end_matches('0').len());
    // 13 digits is already above the largest price: reject before any arithmetic.
    if text.len() > PRICE_TEXT_LEN_MAX
        || decimals > PRICE_DECIMALS_MAX as usize
        || whole.trim_start_matches('0').len() > 13
    {
        return Err(PriceError::OutOfRange);
    }
    // Exact, or refused: `from_str` would round digits beyond Decimal's 28.
    let value = Decimal::from_str_exact(digits).map_err(|_| PriceError::OutOfRange)?.normalize();
    check_price(value)?;
    Ok(value)
}

/// A price at least at its quote currency's scale: 71 EUR prints `71.00`, 0.0421 EUR `0.0421`.
pub fn format_price(price: Decimal, quote: Currency) -> String {
    let mut value = price.normalize();
    if value.scale() < quote.scale() {
        value.rescale(quote.scale());
    }
    value.to_string()
}

fn check_price(price: Decimal) -> Result<(), PriceError> {
    if price <= Decimal::ZERO {
        return Err(PriceError::NotPositive);
    }
    if price.normalize().scale() > PRICE_DECIMALS_MAX || price > Decimal::from(PRICE_UNITS_MAX) {
        return Err(PriceError::OutOfRange);
    }
    Ok(())
}

fn check_pair(base: &str, quote: Currency, index: Option<&str>) -> Result<(), PriceError> {
    let base = Currency::from_str(base).ok().filter(|c| BASES.contains(c)).ok_or(PriceError::BaseNotSupported)?;
    if base == quote {
        return Err(PriceError::PairInvalid);
    }
    let index_valid = |index: &str| {
        (1..=INDEX_LEN_MAX).contains(&index.len())
            && index.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    match index {
        Some(index) if !index_valid(index) => Err(PriceError::IndexInvalid),
        _ => Ok(()),
    }
}

fn check_source(source: &str) -> Result<(), PriceError> {
    let valid = (1..=SOURCE_LEN_MAX).contains(&source.len())
        && source.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    match valid {
        true => Ok(()),
        false => Err(PriceError::SourceInvalid),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PriceFeed {
    /// The feed's id, from its first observation.
    pub feed: Option<String>,
    /// The observation with the newest `observed_at`.
    pub latest: Option<PriceObservation>,
    /// Newest `observed_at` per source, at most [`SOURCES_TRACKED_MAX`] sources: a source
    /// sending its newest observation again is `price_exists`.
    pub source_latest: BTreeMap<String, DateTime<Utc>>,
}

impl PriceFeed {
    fn decide(&self, command: PriceFeedCommand) -> Result<PriceFeedEvent, PriceError> {
        let PriceFeedCommand::RecordPrice { base, quote, index, price, source, observed_at, received_at } = command;
        // Postgres keeps microseconds: the event carries exactly what the read models compare.
        let (observed_at, received_at) = (observed_at.trunc_subsecs(6), received_at.trunc_subsecs(6));
        check_pair(&base, quote, index.as_deref())?;
        check_source(&source)?;
        check_price(price)?;
        if observed_at > received_at + OBSERVED_AHEAD_MAX {
            return Err(PriceError::ObservedInFuture);
        }
        if self.feed.as_ref().is_some_and(|feed| *feed != feed_id(&base, quote, index.as_deref())) {
            return Err(PriceError::FeedMismatch);
        }
        if self.source_latest.get(&source) == Some(&observed_at) {
            return Err(PriceError::Exists);
        }
        Ok(PriceFeedEvent::PriceObserved { base, quote, index, price, source, observed_at, received_at })
    }
}

impl Aggregate for PriceFeed {
    const TYPE: &'static str = "PriceFeed";
    type Command = PriceFeedCommand;
    type Event = PriceFeedEvent;
    type Error = PriceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let PriceFeedEvent::PriceObserved { base, quote, index, price, source, observed_at, .. } = event;
        self.feed.get_or_insert_with(|| feed_id(&base, quote, index.as_deref()));
        let newest = self.source_latest.entry(source.clone()).or_insert(observed_at);
        *newest = (*newest).max(observed_at);
        if self.source_latest.len() > SOURCES_TRACKED_MAX {
            let oldest = self.source_latest.iter().min_by_key(|(_, at)| **at).map(|(name, _)| name.clone());
            self.source_latest.remove(&oldest.expect("the map is not empty"));
        }
        let replaces = |latest: &PriceObservation| {
            observed_at > latest.observed_at
                || (observed_at == latest.observed_at && source_rank(&source) < source_rank(&latest.source))
        };
        if self.latest.as_ref().is_none_or(replaces) {
            self.latest = Some(PriceObservation { price, source, observed_at });
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + minute * 60, 0).unwrap()
    }

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    /// A CARBON/EUR/EUA price from `source`, observed at minute `observed`, received at 10.
    fn record(price: &str, source: &str, observed: i64) -> PriceFeedCommand {
        PriceFeedCommand::RecordPrice {
            base: "CARBON".into(),
            quote: Currency::Eur,
            index: Some("EUA".into()),
            price: dec(price),
            source: source.into(),
            observed_at: at(observed),
            received_at: at(10),
        }
    }

    fn observed(price: &str, source: &str, observed: i64) -> PriceFeedEvent {
        let PriceFeedCommand::RecordPrice { base, quote, index, price, source, observed_at, received_at } =
            record(price, source, observed);
        PriceFeedEvent::PriceObserved { base, quote, index, price, source, observed_at, received_at }
    }

    fn with_time(event: PriceFeedEvent, ahead: TimeDelta) -> PriceFeedEvent {
        let PriceFeedEvent::PriceObserved { base, quote, index, price, source, observed_at, received_at } = event;
        let observed_at = observed_at + ahead;
        PriceFeedEvent::PriceObserved { base, quote, index, price, source, observed_at, received_at }
    }

    fn with(command: PriceFeedCommand, change: impl FnOnce(&mut PriceFeedCommand)) -> PriceFeedCommand {
        let mut command = command;
        change(&mut command);
        command
    }

    /// One scenario: given these events, when this command, then these events or this error.
    type Case = (Vec<PriceFeedEvent>, PriceFeedCommand, Result<Vec<PriceFeedEvent>, PriceError>);

    #[test]
    fn price_feed_rules() {
        use PriceError::*;
        let base = |b: &str| {
            let b = b.to_string();
            move |c: &mut PriceFeedCommand| {
                let PriceFeedCommand::RecordPrice { base, .. } = c;
                *base = b;
            }
        };
        let quote = |q: Currency| {
            move |c: &mut PriceFeedCommand| {
                let PriceFeedCommand::RecordPrice { quote, .. } = c;
                *quote = q;
            }
        };
        let index = |i: Option<&str>| {
            let i = i.map(str::to_string);
            move |c: &mut PriceFeedCommand| {
                let PriceFeedCommand::RecordPrice { index, .. } = c;
                *index = i;
            }
        };
        let cases: Vec<Case> = vec![
            (vec![], record("71.25", "manual", 9), Ok(vec![observed("71.25", "manual", 9)])),
            (
                vec![],
                record("0.000000000000000001", "manual", 9),
                Ok(vec![observed("0.000000000000000001", "manual", 9)]),
            ),
            (vec![], record("1000000000000", "manual", 9), Ok(vec![observed("1000000000000", "manual", 9)])),
            (vec![], record("0", "manual", 9), Err(NotPositive)),
            (vec![], record("-1", "manual", 9), Err(NotPositive)),
            (vec![], record("0.0000000000000000001", "manual", 9), Err(OutOfRange)),
            (vec![], record("1000000000000.01", "manual", 9), Err(OutOfRange)),
            // Five minutes ahead of reception is clock skew; more is refused.
            (vec![], record("71", "manual", 15), Ok(vec![observed("71", "manual", 15)])),
            (vec![], record("71", "manual", 16), Err(ObservedInFuture)),
            (
                vec![],
                with(record("71", "manual", 9), |c| {
                    let PriceFeedCommand::RecordPrice { observed_at, .. } = c;
                    *observed_at += TimeDelta::nanoseconds(1_999);
                }),
                Ok(vec![with_time(observed("71", "manual", 9), TimeDelta::microseconds(1))]),
            ),
            (vec![observed("71", "manual", 9)], record("72", "manual", 9), Err(Exists)),
            (vec![observed("71", "manual", 9)], record("71", "manual", 9), Err(Exists)),
            (vec![observed("71", "manual", 9)], record("71", "icap", 9), Ok(vec![observed("71", "icap", 9)])),
            (vec![observed("71", "manual", 9)], record("70", "manual", 8), Ok(vec![observed("70", "manual", 8)])),
            (vec![], with(record("71", "manual", 9), base("EUR")), Err(BaseNotSupported)),
            (vec![], with(record("71", "manual", 9), base("carbon")), Err(BaseNotSupported)),
            (vec![], with(record("71", "manual", 9), base("GOLD")), Err(BaseNotSupported)),
            (vec![], with(record("71", "manual", 9), quote(Currency::Carbon)), Err(PairInvalid)),
            (vec![], with(record("71", "manual", 9), index(Some("eua"))), Err(IndexInvalid)),
            (vec![], with(record("71", "manual", 9), index(Some(""))), Err(IndexInvalid)),
            (vec![], with(record("71", "manual", 9), index(Some("A234567890123456X"))), Err(IndexInvalid)),
            (vec![], record("71", "Manual", 9), Err(SourceInvalid)),
            (vec![], record("71", "", 9), Err(SourceInvalid)),
            (vec![observed("71", "manual", 9)], with(record("71", "manual", 10), index(None)), Err(FeedMismatch)),
        ];
        for (given, when, then) in cases {
            let validator = TestFramework::<PriceFeed>::with(()).given(given).when(when);
            match then {
                Ok(events) => validator.then_expect_events(events),
                Err(error) => validator.then_expect_error(error),
            }
        }
    }

    fn fold(events: Vec<PriceFeedEvent>) -> PriceFeed {
        let mut feed = PriceFeed::default();
        for event in events {
            feed.apply(event);
        }
        feed
    }

    #[test]
    fn latest_is_the_newest_observation_and_ties_go_to_the_higher_priority_source() {
        /// Given these events, the latest is this (price, source, minute), or none.
        type LatestCase = (Vec<PriceFeedEvent>, Option<(&'static str, &'static str, i64)>);
        let cases: Vec<LatestCase> = vec![
            (vec![], None),
            (vec![observed("71", "manual", 9)], Some(("71", "manual", 9))),
            (vec![observed("71", "manual", 9), observed("72", "manual", 10)], Some(("72", "manual", 10))),
            (vec![observed("71", "manual", 9), observed("70", "manual", 8)], Some(("71", "manual", 9))),
            (vec![observed("71", "manual", 9), observed("73", "icap", 9)], Some(("71", "manual", 9))),
            // Tie: the higher-priority source wins whichever came first; unlisted ones keep the first.
            (vec![observed("73", "derived", 9), observed("71", "coingecko", 9)], Some(("71", "coingecko", 9))),
            (vec![observed("71", "coingecko", 9), observed("73", "derived", 9)], Some(("71", "coingecko", 9))),
            (vec![observed("73", "icap", 9), observed("71", "other", 9)], Some(("73", "icap", 9))),
            (vec![observed("73", "icap", 9), observed("71", "csv", 9)], Some(("71", "csv", 9))),
            (vec![observed("71", "a", 9), observed("70", "b", 8), observed("74", "b", 11)], Some(("74", "b", 11))),
        ];
        for (given, expected) in cases {
            let feed = fold(given.clone());
            let expected = expected.map(|(price, source, minute)| PriceObservation {
                price: dec(price),
                source: source.into(),
                observed_at: at(minute),
            });
            assert_eq!(feed.latest, expected, "{given:?}");
        }
        assert_eq!(fold(vec![observed("71", "manual", 9)]).feed.as_deref(), Some("CARBON/EUR/EUA"));
    }

    #[test]
    fn the_duplicate_check_remembers_a_bounded_number_of_sources() {
        let events: Vec<_> = (0..SOURCES_TRACKED_MAX as i64 + 5).map(|i| observed("71", &format!("s{i}"), i)).collect();
        let feed = fold(events);
        assert_eq!(feed.source_latest.len(), SOURCES_TRACKED_MAX);
        assert!(!feed.source_latest.contains_key("s0"), "the source with the oldest observation is forgotten");
        assert!(feed.source_latest.contains_key(&format!("s{}", SOURCES_TRACKED_MAX + 4)));
        // A source keeps its newest observation, not its last.
        let feed = fold(vec![observed("71", "manual", 9), observed("70", "manual", 8)]);
        assert_eq!(feed.source_latest["manual"], at(9));
    }

    #[test]
    fn parse_price_table() {
        use PriceError::*;
        let cases: &[(&str, Result<&str, PriceError>)] = &[
            ("71.25", Ok("71.25")),
            ("71.250", Ok("71.25")),
            ("071", Ok("71")),
            ("0.000000000000000001", Ok("0.000000000000000001")),
            ("1000000000000", Ok("1000000000000")),
            ("1000000000000.000", Ok("1000000000000")),
            ("1000000000000.001", Err(OutOfRange)),
            ("10000000000000", Err(OutOfRange)),
            ("0.0000000000000000001", Err(OutOfRange)),
            ("123456789012.123456789012345678", Err(OutOfRange)),
            ("99999999999999999999999999999999999999999999999999", Err(OutOfRange)),
            ("0", Err(NotPositive)),
            ("0.00", Err(NotPositive)),
            ("-1", Err(NotPositive)),
            ("-0.5", Err(NotPositive)),
            ("abc", Err(Malformed)),
            ("", Err(Malformed)),
            ("-", Err(Malformed)),
            ("1e3", Err(Malformed)),
            ("+1", Err(Malformed)),
            ("1.", Err(Malformed)),
            (".5", Err(Malformed)),
            (" 1", Err(Malformed)),
            ("--1", Err(Malformed)),
        ];
        for (text, expected) in cases {
            let got = parse_price(text).map(|p| p.to_string());
            assert_eq!(got.as_deref().map_err(|e| *e), expected.map(|s| s), "{text}");
        }
    }

    #[test]
    fn prices_print_at_least_at_the_quote_scale() {
        assert_eq!(format_price(dec("71"), Currency::Eur), "71.00");
        assert_eq!(format_price(dec("71.250"), Currency::Eur), "71.25");
        assert_eq!(format_price(dec("0.0421"), Currency::Usd), "0.0421");
        assert_eq!(format_price(dec("0.05"), Currency::Eth), "0.050000000000000000");
    }

    #[test]
    fn error_codes_are_distinct() {
        use PriceError::*;
        let errors = [
            Malformed,
            NotPositive,
            OutOfRange,
            ObservedInFuture,
            Exists,
            BaseNotSupported,
            PairInvalid,
            IndexInvalid,
            SourceInvalid,
            FeedMismatch,
        ];
        let mut codes: Vec<&str> = errors.iter().map(PriceError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
    }

    #[test]
    fn feed_ids_name_pair_and_index() {
        assert_eq!(feed_id("CARBON", Currency::Eur, Some("EUA")), "CARBON/EUR/EUA");
        assert_eq!(feed_id("ETH", Currency::Eur, None), "ETH/EUR/-");
    }

    #[test]
    fn an_observation_claims_its_feed_source_and_time_to_the_microsecond() {
        let at_nanos = at(9) + TimeDelta::nanoseconds(1_500);
        assert_eq!(
            observation_claim("CARBON/EUR/EUA", "manual", at_nanos),
            "CARBON/EUR/EUA|manual|2026-01-01T00:09:00.000001Z"
        );
        assert_eq!(
            observation_claim("ETH/EUR/-", "coingecko", at(9)),
            "ETH/EUR/-|coingecko|2026-01-01T00:09:00.000000Z"
        );
    }

    #[test]
    fn events_refuse_unknown_fields_and_keep_prices_as_strings() {
        let event = observed("71.25", "manual", 9);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["PriceObserved"]["price"], "71.25");
        assert_eq!(serde_json::from_value::<PriceFeedEvent>(json.clone()).unwrap(), event);
        let mut extra = json;
        extra["PriceObserved"]["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<PriceFeedEvent>(extra).is_err());
    }
}
