//! Recording one observation on its PriceFeed: the price rules (the aggregate's), the jump
//! check against the feed's latest, and the (feed, source, observed_at) claim that makes a
//! re-poll, a backfill or a CSV re-import record nothing twice.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use domain::price::{feed_id, observation_claim, PriceError, PriceFeed, PriceFeedCommand, OBSERVATION_CLAIM_KIND};
use domain::Currency;
use event_store::{Begun, CommandContext, Outcome, Store, StoreError};
use rust_decimal::Decimal;

/// Attempts of one observation that keeps meeting optimistic conflicts (another process
/// writing the same feed).
const RECORD_ATTEMPTS_MAX: u32 = 5;

/// A price as a provider (or a file, or the ingest itself) gave it, parsed and ready to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub base: String,
    pub quote: Currency,
    pub index: Option<String>,
    pub price: Decimal,
    pub source: String,
    pub observed_at: DateTime<Utc>,
}

impl Observation {
    pub fn feed_id(&self) -> String {
        feed_id(&self.base, self.quote, self.index.as_deref())
    }
}

/// Why an observation was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    Price(PriceError),
    #[error("price {price} is {change_pct}% away from the feed's latest {latest}; at most {max_pct}% is accepted")]
    Jump { price: Decimal, latest: Decimal, change_pct: Decimal, max_pct: Decimal },
    #[error("observed_at is missing or not a valid time")]
    ObservedAtInvalid,
    #[error("the price is missing")]
    PriceMissing,
}

impl Rejection {
    /// A stable label for logs and metrics, the rule's name.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Price(error) => error.code(),
            Rejection::Jump { .. } => "price_jump",
            Rejection::ObservedAtInvalid => "observed_at_invalid",
            Rejection::PriceMissing => "price_missing",
        }
    }
}

impl From<PriceError> for Rejection {
    fn from(error: PriceError) -> Rejection {
        Rejection::Price(error)
    }
}

/// What became of an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Recorded at `position`; `latest` when it is now its feed's latest.
    Recorded {
        position: i64,
        latest: bool,
    },
    /// This feed, source and observed_at were recorded before.
    Duplicate,
    Rejected(Rejection),
}

/// Records `observation` as a `PriceObserved` event, unless it is a duplicate or breaks a rule.
/// With `jump_max_pct`, a price further than that from the feed's latest is refused (live
/// polls; history from a backfill or a file is not compared with today's price).
/// Errors are the store's (Postgres unreachable, conflicts past the retries).
pub async fn record_observation(
    store: &Store,
    observation: &Observation,
    jump_max_pct: Option<Decimal>,
) -> Result<RecordOutcome, StoreError> {
    let mut attempt = 1;
    loop {
        match record_once(store, observation, jump_max_pct).await {
            Err(StoreError::Conflict) if attempt < RECORD_ATTEMPTS_MAX => {
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn record_once(
    store: &Store,
    observation: &Observation,
    jump_max_pct: Option<Decimal>,
) -> Result<RecordOutcome, StoreError> {
    let feed = observation.feed_id();
    let claim = observation_claim(&feed, &observation.source, observation.observed_at);
    let context = CommandContext::new(format!("price-ingest:{}", observation.source));
    let Begun::Fresh(mut uow) = store.begin(context, None).await? else {
        unreachable!("without an idempotency key a unit of work always begins fresh")
    };
    // Checked up front so a duplicate costs one read; the claim at commit settles races.
    if claim_taken(uow.reader().await?, &claim).await? {
        return Ok(RecordOutcome::Duplicate);
    }
    let received_at = uow.context().at;
    let decide = |state: &PriceFeed| -> Result<PriceFeedCommand, Rejection> {
        if let (Some(max_pct), Some(latest)) = (jump_max_pct, &state.latest) {
            check_jump(observation.price, latest.price, max_pct)?;
        }
        Ok(PriceFeedCommand::RecordPrice {
            base: observation.base.clone(),
            quote: observation.quote,
            index: observation.index.clone(),
            price: observation.price,
            source: observation.source.clone(),
            observed_at: observation.observed_at,
            received_at,
        })
    };
    let executed = match uow.execute_with::<PriceFeed, Rejection>(&feed, decide, &()).await? {
        Ok(executed) => executed,
        Err(Rejection::Price(PriceError::Exists)) => return Ok(RecordOutcome::Duplicate),
        Err(rejection) => return Ok(RecordOutcome::Rejected(rejection)),
    };
    let latest = executed.aggregate.latest.as_ref().is_some_and(|latest| {
        latest.source == observation.source && latest.observed_at == observation.observed_at.trunc_subsecs(6)
    });
    uow.claim(OBSERVATION_CLAIM_KIND, &claim, &format!("PriceFeed/{feed}"));
    match uow.commit(|_| Outcome::new(201, serde_json::Value::Null)).await {
        Ok(committed) => {
            let position = committed.position.expect("a recorded price writes one event");
            Ok(RecordOutcome::Recorded { position, latest })
        }
        Err(StoreError::ClaimTaken { kind }) if kind == OBSERVATION_CLAIM_KIND => Ok(RecordOutcome::Duplicate),
        Err(error) => Err(error),
    }
}

async fn claim_taken(conn: &mut sqlx::PgConnection, claim: &str) -> Result<bool, StoreError> {
    let taken = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM claims WHERE kind = $1 AND value = $2)")
        .bind(OBSERVATION_CLAIM_KIND)
        .bind(claim)
        .fetch_one(conn)
        .await?;
    Ok(taken)
}

/// Refuses `price` when it lies more than `max_pct` percent from `latest`, either way.
pub fn check_jump(price: Decimal, latest: Decimal, max_pct: Decimal) -> Result<(), Rejection> {
    if latest <= Decimal::ZERO {
        return Ok(());
    }
    let hundred = Decimal::ONE_HUNDRED;
    // Overflow is only possible for prices far beyond the accepted range: refuse then too.
    let change_pct = (price - latest)
        .abs()
        .checked_mul(hundred)
        .and_then(|scaled| scaled.checked_div(latest))
        .unwrap_or(Decimal::MAX);
    if change_pct > max_pct {
        let change_pct = change_pct.round_dp(2);
        return Err(Rejection::Jump { price, latest, change_pct, max_pct });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn a_price_further_than_the_jump_limit_from_the_latest_is_refused() {
        // (price, latest, max %) → accepted?
        let cases = [
            ("75", "50", "50", true),
            ("75.01", "50", "50", false),
            ("25", "50", "50", true),
            ("24.99", "50", "50", false),
            ("0.000000000000000001", "71.25", "50", false),
            ("712.5", "71.25", "50", false),
            ("71.30", "71.25", "0.1", true),
            ("1000000000000", "0.000000000000000001", "50", false),
        ];
        for (price, latest, max_pct, accepted) in cases {
            let result = check_jump(dec(price), dec(latest), dec(max_pct));
            assert_eq!(result.is_ok(), accepted, "{price} vs {latest} at {max_pct}%: {result:?}");
        }
        let Err(Rejection::Jump { change_pct, .. }) = check_jump(dec("142.5"), dec("71.25"), dec("50")) else {
            panic!("a doubling is a jump")
        };
        assert_eq!(change_pct, dec("100"));
    }

    #[test]
    fn rejections_are_named_after_their_rule() {
        assert_eq!(Rejection::Price(PriceError::NotPositive).code(), "price_not_positive");
        let jump = Rejection::Jump { price: dec("2"), latest: dec("1"), change_pct: dec("100"), max_pct: dec("50") };
        assert_eq!(jump.code(), "price_jump");
        assert_eq!(Rejection::ObservedAtInvalid.code(), "observed_at_invalid");
    }
}
