//! `/api/v1/reports`: the trial balance over the double-entry journal, for auditors and
//! admins (DESIGN.md section 3).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::user::Role;
use domain::Currency;
use event_store::StoreError;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, RequestInfo};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::read::{parse_as_of, position_of, with_position, Consistency};
use crate::state::AppState;

const STAFF: &[Role] = &[Role::Admin, Role::Auditor];
const READ_MODELS: &[&str] = &["journal"];

#[derive(Debug, Deserialize, IntoParams)]
pub struct TrialBalanceQuery {
    /// Report at this global position; waits a bounded time for the journal to reach it, then
    /// `503 projection_lagging`.
    #[param(value_type = Option<i64>)]
    pub as_of_position: Option<String>,
    /// Report at a point in time (RFC 3339): at the last journal position whose event occurred
    /// at or before it, among what the journal has reached (combine with `min_position`).
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrialBalance {
    /// The position the figures are at: every posting up to it, none after.
    pub as_of_position: i64,
    /// The time asked for, when the report was asked by time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// Whether every currency's total is zero. `false` means a bug in the ledger: the totals
    /// are reported as they are, never hidden.
    pub balanced: bool,
    /// Every currency the journal holds up to `as_of_position`, by code.
    pub currencies: BTreeMap<String, CurrencyBalance>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencyBalance {
    /// Sorted by account.
    pub accounts: Vec<AccountBalance>,
    /// Sum of the accounts' balances: zero when the books balance.
    #[schema(example = "0.00")]
    pub total: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBalance {
    /// `wallet:<uuid>` or `system:<name>` (`external`, `transit`, `fees`).
    #[schema(example = "system:external")]
    pub account: String,
    #[schema(example = "150.00")]
    pub debits: String,
    #[schema(example = "0.00")]
    pub credits: String,
    /// Credits minus debits: a wallet's balance in the liability view.
    #[schema(example = "-150.00")]
    pub balance: String,
}

/// Where the report stands.
enum AsOf {
    Checkpoint,
    Position(i64),
    Time(DateTime<Utc>),
}

/// The trial balance: debits, credits and balance of every account per currency, summed from
/// the journal up to a position, with each currency's total (zero when the books balance).
#[utoipa::path(get, path = "/api/v1/reports/trial-balance", tag = "reports", security(("bearer" = [])),
    params(TrialBalanceQuery, ("min_position" = Option<i64>, Query, description = "Wait for the journal to reach this position")),
    responses((status = 200, body = TrialBalance), (status = 403, body = crate::error::Problem),
              (status = 422, description = "validation_failed", body = crate::error::Problem),
              (status = 503, description = "projection_lagging", body = crate::error::Problem)))]
pub async fn reports_trial_balance(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    consistency: Consistency,
    ApiQuery(query): ApiQuery<TrialBalanceQuery>,
) -> Result<Response, ApiError> {
    caller.require_any(&state, &info, STAFF).await?;
    let as_of = parse_query(&query)?;
    let wanted = match as_of {
        AsOf::Position(position) => Some(position.max(consistency.0.unwrap_or(0))),
        AsOf::Checkpoint | AsOf::Time(_) => consistency.0,
    };
    let reached = position_of(&state, READ_MODELS, wanted).await?;
    let (as_of_position, as_of_time) = match as_of {
        AsOf::Checkpoint => (reached, None),
        AsOf::Position(position) => (position, None),
        AsOf::Time(time) => (position_at(&state, time, reached).await?, Some(time)),
    };
    let currencies = balances_at(&state, as_of_position).await?;
    let unbalanced: Vec<(&String, &String)> =
        currencies.iter().filter(|(_, c)| !c.balanced).map(|(code, c)| (code, &c.view.total)).collect();
    if !unbalanced.is_empty() {
        tracing::error!(
            as_of_position,
            ?unbalanced,
            "TRIAL BALANCE DOES NOT BALANCE: the journal's debits and credits differ; the ledger has a bug"
        );
    }
    let report = TrialBalance {
        as_of_position,
        as_of: as_of_time,
        balanced: unbalanced.is_empty(),
        currencies: currencies.into_iter().map(|(code, c)| (code, c.view)).collect(),
    };
    Ok(with_position(reached, axum::Json(report)))
}

fn parse_query(query: &TrialBalanceQuery) -> Result<AsOf, ApiError> {
    let time = parse_as_of(query.as_of.as_deref())?;
    let position = query
        .as_of_position
        .as_deref()
        .map(|text| match text.parse::<i64>() {
            Ok(position) if position >= 0 => Ok(position),
            _ => Err(ApiError::invalid_field("as_of_position", "invalid", "must be a non-negative integer")),
        })
        .transpose()?;
    match (position, time) {
        (Some(_), Some(_)) => {
            Err(ApiError::invalid_field("as_of", "conflicting", "give as_of_position or as_of, not both"))
        }
        (Some(position), None) => Ok(AsOf::Position(position)),
        (None, Some(time)) => Ok(AsOf::Time(time)),
        (None, None) => Ok(AsOf::Checkpoint),
    }
}

/// The last journal position at or below `reached` whose event occurred at or before `time`;
/// 0 when none did. Positions that moved no money change no figure.
async fn position_at(state: &AppState, time: DateTime<Utc>, reached: i64) -> Result<i64, ApiError> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT max(position) FROM rm_postings WHERE position <= $1 AND occurred_at <= $2")
            .bind(reached)
            .bind(time)
            .fetch_one(state.store.pool())
            .await?;
    Ok(position.unwrap_or(0))
}

/// A currency's figures and whether they balance.
struct Summed {
    view: CurrencyBalance,
    balanced: bool,
}

/// Debits and credits of every account per currency, up to `position`.
async fn balances_at(state: &AppState, position: i64) -> Result<BTreeMap<String, Summed>, ApiError> {
    let rows = sqlx::query(
        "SELECT currency, account, sum(debit) AS debits, sum(credit) AS credits FROM ( \
           SELECT currency, debit_account AS account, amount AS debit, 0::numeric AS credit \
             FROM rm_postings WHERE position <= $1 \
           UNION ALL \
           SELECT currency, credit_account, 0::numeric, amount FROM rm_postings WHERE position <= $1 \
         ) p GROUP BY currency, account",
    )
    .bind(position)
    .fetch_all(state.store.pool())
    .await?;
    let mut by_currency: BTreeMap<String, Vec<(String, Decimal, Decimal)>> = BTreeMap::new();
    for row in &rows {
        let entry = (row.get("account"), row.get("debits"), row.get("credits"));
        by_currency.entry(row.get("currency")).or_default().push(entry);
    }
    let mut summed = BTreeMap::new();
    for (code, mut accounts) in by_currency {
        let currency: Currency =
            code.parse().map_err(|_| StoreError::corrupt(format!("rm_postings holds an unknown currency {code:?}")))?;
        // Sorted here, byte-wise, rather than by the database's collation.
        accounts.sort_by(|a, b| a.0.cmp(&b.0));
        summed.insert(code, sum_currency(currency, accounts));
    }
    Ok(summed)
}

fn sum_currency(currency: Currency, accounts: Vec<(String, Decimal, Decimal)>) -> Summed {
    let total: Decimal = accounts.iter().map(|(_, debits, credits)| credits - debits).sum();
    let accounts = accounts
        .into_iter()
        .map(|(account, debits, credits)| AccountBalance {
            account,
            debits: currency.format(debits),
            credits: currency.format(credits),
            balance: currency.format(credits - debits),
        })
        .collect();
    Summed { view: CurrencyBalance { accounts, total: currency.format(total) }, balanced: total.is_zero() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn a_currency_balances_when_credits_equal_debits_and_says_so_otherwise() {
        let cases = [
            (vec![("system:external", "100", "0"), ("wallet:a", "0", "100")], "0.00", true),
            (vec![("system:external", "100", "30"), ("wallet:a", "30", "100")], "0.00", true),
            (vec![("system:external", "100", "0"), ("wallet:a", "0", "99.99")], "-0.01", false),
        ];
        for (accounts, total, balanced) in cases {
            let accounts = accounts.into_iter().map(|(a, d, c)| (a.to_string(), dec(d), dec(c))).collect();
            let summed = sum_currency(Currency::Eur, accounts);
            assert_eq!((summed.view.total.as_str(), summed.balanced), (total, balanced));
        }
    }

    #[test]
    fn balances_are_credits_minus_debits_at_the_currency_scale() {
        let summed = sum_currency(Currency::Carbon, vec![("system:external".to_string(), dec("5"), dec("1.5"))]);
        let account = &summed.view.accounts[0];
        assert_eq!((account.debits.as_str(), account.credits.as_str()), ("5.000", "1.500"));
        assert_eq!(account.balance, "-3.500");
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let query = |position: Option<&str>, time: Option<&str>| TrialBalanceQuery {
            as_of_position: position.map(str::to_string),
            as_of: time.map(str::to_string),
        };
        let cases = [
            (query(Some("-1"), None), "as_of_position"),
            (query(Some("x"), None), "as_of_position"),
            (query(None, Some("yesterday")), "as_of"),
            (query(Some("3"), Some("2026-01-01T00:00:00Z")), "as_of"),
        ];
        for (query, field) in cases {
            let error = parse_query(&query).err().expect("refused");
            assert_eq!((error.code, error.errors[0].field.as_str()), ("validation_failed", field));
        }
        assert!(matches!(parse_query(&query(Some("7"), None)), Ok(AsOf::Position(7))));
        assert!(matches!(parse_query(&query(None, None)), Ok(AsOf::Checkpoint)));
    }
}
