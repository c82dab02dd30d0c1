//! Importing historical prices from CSV in the format the older price service scraped from
//! Investing.com's "historical data" table: a header naming at least `Date`, `Price` and
//! `Change %` (other columns such as `Open`, `High`, `Low`, `Vol.` are ignored), then one row
//! per day, newest first or in any order:
//!
//! ```text
//! "Date","Price","Open","High","Low","Vol.","Change %"
//! "Jan 05, 2026","71.25","70.10","71.90","69.80","","1.64%"
//! ```
//!
//! Dates as the page shows them (`Jan 05, 2026`), as its CSV download writes them
//! (`01/05/2026`, month first), or ISO (`2026-01-05`, or a full RFC 3339 time). A date alone is
//! observed at 00:00 UTC that day. Prices may carry thousands separators (`1,234.50`).
//! Each bad row is reported with its line number and skipped; good rows are recorded.

use chrono::{DateTime, NaiveDate, Utc};
use domain::price::{parse_price, BASES};
use domain::Currency;
use event_store::{Store, StoreError};

use crate::metrics::IngestMetrics;
use crate::record::{record_observation, Observation, RecordOutcome};

/// Most rows one import reads (a century of daily prices).
pub const IMPORT_ROWS_MAX: usize = 40_000;
/// The source CSV rows are recorded with unless told otherwise.
pub const CSV_SOURCE_DEFAULT: &str = "csv";

/// What the rows are prices of, and the source they are recorded with.
#[derive(Debug, Clone)]
pub struct ImportTarget {
    pub base: String,
    pub quote: Currency,
    pub index: Option<String>,
    pub source: String,
}

/// A row not recorded: its line in the file (1 is the first) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRejection {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub recorded: usize,
    pub duplicates: usize,
    pub rejected: Vec<RowRejection>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file has no header line")]
    Empty,
    #[error("the header needs the columns Date, Price and Change %; found {0:?}")]
    HeaderInvalid(Vec<String>),
    #[error("more than {IMPORT_ROWS_MAX} rows; split the file")]
    TooManyRows,
    #[error("--base must be CARBON or ETH and differ from --quote")]
    PairInvalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses `text` and records every good row; bad rows end up in the report.
pub async fn import_csv(store: &Store, text: &str, target: &ImportTarget) -> Result<ImportReport, ImportError> {
    let ParsedCsv { rows, rejected } = parse_csv(text, target)?;
    let metrics = IngestMetrics::new();
    let mut report = ImportReport { rejected, ..ImportReport::default() };
    for (line, observation) in rows {
        match record_observation(store, &observation, None).await? {
            RecordOutcome::Recorded { .. } => report.recorded += 1,
            RecordOutcome::Duplicate => report.duplicates += 1,
            RecordOutcome::Rejected(rejection) => {
                metrics.rejected(&target.source, rejection.code());
                report.rejected.push(RowRejection { line, reason: format!("{}: {rejection}", rejection.code()) });
            }
        }
    }
    report.rejected.sort_by_key(|rejection| rejection.line);
    Ok(report)
}

/// A file read: the good rows as observations with their line numbers, and the bad rows.
#[derive(Debug, Default)]
pub struct ParsedCsv {
    pub rows: Vec<(usize, Observation)>,
    pub rejected: Vec<RowRejection>,
}

/// Reads `text`; only a file without the needed header (or too long) is refused whole.
pub fn parse_csv(text: &str, target: &ImportTarget) -> Result<ParsedCsv, ImportError> {
    let base_ok = target.base.parse::<Currency>().is_ok_and(|base| BASES.contains(&base) && base != target.quote);
    if !base_ok {
        return Err(ImportError::PairInvalid);
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line)).filter(|(_, line)| !line.trim().is_empty());
    let (_, header) = lines.next().ok_or(ImportError::Empty)?;
    let columns = Columns::find(header)?;
    let mut parsed = ParsedCsv::default();
    for (count, (line, record)) in lines.enumerate() {
        if count >= IMPORT_ROWS_MAX {
            return Err(ImportError::TooManyRows);
        }
        match columns.parse_row(record, target) {
            Ok(observation) => parsed.rows.push((line, observation)),
            Err(reason) => parsed.rejected.push(RowRejection { line, reason }),
        }
    }
    Ok(parsed)
}

/// Where the needed columns are in a header.
struct Columns {
    count: usize,
    date: usize,
    price: usize,
    change: usize,
}

impl Columns {
    fn find(header: &str) -> Result<Columns, ImportError> {
        let names: Vec<String> = split_record(header)
            .map_err(|_| ImportError::HeaderInvalid(vec![header.to_string()]))?
            .iter()
            .map(|name| name.trim().to_lowercase())
            .collect();
        let position = |wanted: &[&str]| names.iter().position(|name| wanted.contains(&name.as_str()));
        match (position(&["date"]), position(&["price"]), position(&["change %", "change%", "change_percent"])) {
            (Some(date), Some(price), Some(change)) => Ok(Columns { count: names.len(), date, price, change }),
            _ => Err(ImportError::HeaderInvalid(names)),
        }
    }

    fn parse_row(&self, record: &str, target: &ImportTarget) -> Result<Observation, String> {
        let fields = split_record(record)?;
        if fields.len() != self.count {
            return Err(format!("expected {} fields, found {}", self.count, fields.len()));
        }
        let observed_at = parse_date(&fields[self.date])?;
        let price = parse_price(&without_thousands_separators(&fields[self.price]))
            .map_err(|error| format!("{}: price {:?}: {error}", error.code(), fields[self.price]))?;
        check_change(&fields[self.change])?;
        Ok(Observation {
            base: target.base.clone(),
            quote: target.quote,
            index: target.index.clone(),
            price,
            source: target.source.clone(),
            observed_at,
        })
    }
}

/// One line's fields, RFC 4180 quoting (`"Jan 05, 2026"`, `""` for a quote), trimmed.
fn split_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut in_quotes) = (false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => in_quotes = false,
            (true, c) => field.push(c),
            (false, ',') => {
                fields.push(std::mem::take(&mut field).trim().to_string());
                quoted = false;
            }
            (false, '"') if field.trim().is_empty() && !quoted => (in_quotes, quoted) = (true, true),
            (false, '"') => return Err("a quote inside a field".to_string()),
            (false, c) => field.push(c),
        }
    }
    if in_quotes {
        return Err("a quoted field is not closed".to_string());
    }
    fields.push(field.trim().to_string());
    Ok(fields)
}

/// The day's time: an RFC 3339 time as is, a date at 00:00 UTC.
fn parse_date(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc());
    }
    ["%b %d, %Y", "%Y-%m-%d", "%m/%d/%Y"]
        .iter()
        .find_map(|format| NaiveDate::parse_from_str(text, format).ok())
        .map(|date| date.and_time(chrono::NaiveTime::MIN).and_utc())
        .ok_or_else(|| format!("date {text:?} is not like \"Jan 05, 2026\", \"01/05/2026\" or \"2026-01-05\""))
}

/// `1,234.50` → `1234.50`, only where the commas group thousands; anything else unchanged
/// (and then refused as malformed by the price rules).
fn without_thousands_separators(text: &str) -> String {
    let whole = text.split_once('.').map_or(text, |(whole, _)| whole);
    let groups: Vec<&str> = whole.split(',').collect();
    let grouped = groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups[1..].iter().all(|group| group.len() == 3)
        && groups.iter().all(|group| group.bytes().all(|b| b.is_ascii_digit()));
    match grouped {
        true => text.replace(',', ""),
        false => text.to_string(),
    }
}

/// `1.64%`, `-0.35%`, `+2%`, or empty: the column is informative (the ledger keeps prices,
/// not changes), but a row whose change is not a percentage is not trusted either.
fn check_change(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let number = text.strip_suffix('%').map(|n| n.strip_prefix(['+', '-']).unwrap_or(n));
    let valid = number.is_some_and(|n| {
        let (whole, fraction) = n.split_once('.').unwrap_or((n, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(whole) && digits(fraction)
    });
    match valid {
        true => Ok(()),
        false => Err(format!("change % {text:?} is not a percentage such as \"-1.25%\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ImportTarget {
        ImportTarget { base: "CARBON".into(), quote: Currency::Eur, index: Some("EUA".into()), source: "csv".into() }
    }

    #[test]
    fn records_split_on_commas_outside_quotes() {
        let cases: &[(&str, Result<Vec<&str>, ()>)] = &[
            (r#""Jan 05, 2026","71.25","1.64%""#, Ok(vec!["Jan 05, 2026", "71.25", "1.64%"])),
            ("2026-01-05,71.25,-0.35%", Ok(vec!["2026-01-05", "71.25", "-0.35%"])),
            (r#"a,"say ""hi""",,"#, Ok(vec!["a", r#"say "hi""#, "", ""])),
            (r#" "x" , y "#, Ok(vec!["x", "y"])),
            (r#""open"#, Err(())),
            (r#"ab"c"#, Err(())),
        ];
        for (line, expected) in cases {
            let got = split_record(line).map_err(|_| ());
            let expected = expected.clone().map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, expected, "{line}");
        }
    }

    #[test]
    fn dates_read_as_the_scraper_and_iso_write_them() {
        let midnight = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap().and_time(chrono::NaiveTime::MIN).and_utc();
        let cases: &[(&str, Option<DateTime<Utc>>)] = &[
            ("Jan 05, 2026", Some(midnight(2026, 1, 5))),
            ("Dec 31, 2025", Some(midnight(2025, 12, 31))),
            ("01/05/2026", Some(midnight(2026, 1, 5))),
            ("2026-01-05", Some(midnight(2026, 1, 5))),
            (
                "2026-01-05T17:30:00+01:00",
                Some(midnight(2026, 1, 5) + chrono::TimeDelta::hours(16) + chrono::TimeDelta::minutes(30)),
            ),
            ("Feb 30, 2026", None),
            ("13/05/2026", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_date(text).ok(), *expected, "{text}");
        }
    }

    #[test]
    fn prices_may_group_thousands_and_changes_must_be_percentages() {
        let cases = [("1,234.50", "1234.50"), ("71.25", "71.25"), ("12,34.5", "12,34.5"), ("1,2345", "1,2345")];
        for (text, expected) in cases {
            assert_eq!(without_thousands_separators(text), expected, "{text}");
        }
        for good in ["", "1.64%", "-0.35%", "+2%", "0.00%"] {
            assert!(check_change(good).is_ok(), "{good}");
        }
        for bad in ["1.64", "abc%", "%", "--1%", "1.%"] {
            assert!(check_change(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_rows_are_reported_by_line_and_good_rows_kept() {
        let text = "\u{feff}\"Date\",\"Price\",\"Open\",\"High\",\"Low\",\"Vol.\",\"Change %\"\n\
            \"Jan 06, 2026\",\"72.10\",\"71.2\",\"72.5\",\"70.9\",\"\",\"1.19%\"\n\
            \n\
            \"Jan 05, 2026\",\"0.00\",\"\",\"\",\"\",\"\",\"0.00%\"\n\
            \"Jan 04, 2026\",\"abc\",\"\",\"\",\"\",\"\",\"0.00%\"\n\
            \"someday\",\"70.00\",\"\",\"\",\"\",\"\",\"0.00%\"\n\
            \"Jan 02, 2026\",\"70.00\"\n\
            \"Jan 01, 2026\",\"1,071.25\",\"\",\"\",\"\",\"\",\"-0.5%\"\n";
        let ParsedCsv { rows, rejected } = parse_csv(text, &target()).unwrap();
        let lines: Vec<usize> = rows.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, vec![2, 8]);
        assert_eq!(rows[1].1.price.to_string(), "1071.25");
        let bad: Vec<usize> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(bad, vec![4, 5, 6, 7], "{rejected:?}");
        assert!(rejected[0].reason.starts_with("price_not_positive"), "{}", rejected[0].reason);
        assert!(rejected[1].reason.starts_with("price_malformed"), "{}", rejected[1].reason);
        assert!(rejected[2].reason.contains("date"), "{}", rejected[2].reason);
        assert!(rejected[3].reason.contains("expected 7 fields"), "{}", rejected[3].reason);
    }

    #[test]
    fn a_file_without_the_columns_or_for_a_bad_pair_is_refused_whole() {
        assert!(matches!(parse_csv("Day,Close\n2026-01-05,71\n", &target()), Err(ImportError::HeaderInvalid(_))));
        assert!(matches!(parse_csv("", &target()), Err(ImportError::Empty)));
        let euro = ImportTarget { base: "EUR".into(), ..target() };
        assert!(matches!(parse_csv("Date,Price,Change %\n", &euro), Err(ImportError::PairInvalid)));
    }
}
