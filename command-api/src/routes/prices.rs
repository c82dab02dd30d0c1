//! `/api/v1/prices`: market prices recorded as events (one PriceFeed stream per pair and
//! index), for purchases at market price. Admins record prices by hand (`source: manual`);
//! the price-ingest issue adds provider polling with the same command.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::price::{feed_id, format_price, parse_price, PriceError, PriceFeed, PriceFeedCommand, PriceObservation};
use domain::Currency;
use event_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use utoipa::ToSchema;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{run, CommandInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::state::AppState;

/// The source of prices an admin records through the API.
pub const MANUAL_SOURCE: &str = "manual";
/// Most feeds `GET /api/v1/prices` lists (pairs × indexes: a handful in practice).
pub const PRICE_FEEDS_LIST_MAX: i64 = 500;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    /// `CARBON` or `ETH`.
    #[schema(example = "CARBON")]
    pub base: String,
    #[schema(example = "EUR")]
    pub quote: String,
    /// The market index (`[A-Z0-9_]{1,16}`), if the price is one index's.
    #[schema(example = "EUA")]
    pub index: Option<String>,
    /// A positive decimal string: at most 18 decimals, at most 1000000000000.
    #[schema(example = "71.25")]
    pub price: String,
    /// RFC 3339; at most 5 minutes after the time the ledger receives it.
    #[schema(example = "2026-01-05T09:30:00Z")]
    pub observed_at: String,
}

/// Record a market price (admin), with `source: manual`. An observation older than the feed's
/// latest is kept as history and does not replace it. 201 with the price, whether it is now
/// the feed's `latest`, and the `position`.
#[utoipa::path(post, path = "/api/v1/prices", request_body = PriceRequest, tag = "prices", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "Recorded: feed_id, base, quote, index, price, source, observed_at, received_at, latest, position"),
              (status = 403, body = crate::error::Problem),
              (status = 409, description = "price_exists", body = crate::error::Problem),
              (status = 422, description = "price_malformed, price_not_positive, price_out_of_range, observed_in_future, base_not_supported, pair_invalid, index_invalid, validation_failed", body = crate::error::Problem)))]
pub async fn prices_create(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    body: ApiJson<PriceRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let request = body.value;
    let quote: Currency = request
        .quote
        .parse()
        .map_err(|_| ApiError::invalid_field("quote", "unknown_currency", "EUR, USD, ETH or CARBON"))?;
    let price = parse_price(&request.price).map_err(price_rejection)?;
    let observed_at = DateTime::parse_from_rfc3339(&request.observed_at)
        .map(|time| time.to_utc())
        .map_err(|_| ApiError::invalid_field("observed_at", "invalid", "must be an RFC 3339 time"))?;
    let input =
        CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |mut uow| {
        let request = request.clone();
        async move {
            let feed = feed_id(&request.base, quote, request.index.as_deref());
            let command = PriceFeedCommand::RecordPrice {
                base: request.base,
                quote,
                index: request.index,
                price,
                source: MANUAL_SOURCE.to_string(),
                observed_at,
                received_at: uow.context().at,
            };
            let executed = uow.execute::<PriceFeed>(&feed, command, &()).await?.map_err(price_rejection)?;
            let body = recorded_body(&feed, &executed.events, &executed.aggregate);
            // One observation per (feed, source, observed_at) whatever path it comes by: the
            // claim the price ingest takes too (the aggregate remembers only each source's
            // newest). Committed here rather than by `commit_created` so a taken claim
            // answers `price_exists`.
            let claim = domain::price::observation_claim(&feed, MANUAL_SOURCE, observed_at);
            uow.claim(domain::price::OBSERVATION_CLAIM_KIND, &claim, &format!("PriceFeed/{feed}"));
            let created = |position| {
                let mut body = body;
                body["position"] = json!(position);
                let location = Some("/api/v1/prices".to_string());
                event_store::Outcome { location, ..event_store::Outcome::new(201, body) }
            };
            match uow.commit(created).await {
                Err(StoreError::ClaimTaken { kind }) if kind == domain::price::OBSERVATION_CLAIM_KIND => {
                    Err(price_rejection(PriceError::Exists))
                }
                committed => Ok(committed?),
            }
        }
    })
    .await
}

/// The answer to a recorded price: the observation as stored, and whether it is the latest.
fn recorded_body(feed: &str, events: &[domain::price::PriceFeedEvent], aggregate: &PriceFeed) -> serde_json::Value {
    let [domain::price::PriceFeedEvent::PriceObserved { base, quote, index, price, source, observed_at, received_at }] =
        events
    else {
        unreachable!("recording a price produces one event, not {events:?}")
    };
    let latest = aggregate.latest.as_ref().is_some_and(|l| l.source == *source && l.observed_at == *observed_at);
    json!({
        "feed_id": feed,
        "base": base,
        "quote": quote.code(),
        "index": index,
        "price": format_price(*price, *quote),
        "source": source,
        "observed_at": observed_at,
        "received_at": received_at,
        "latest": latest,
    })
}

/// A price rule's refusal: 422 naming the field, or 409 for a price recorded before.
fn price_rejection(error: PriceError) -> ApiError {
    let field = match error {
        PriceError::Exists => return ApiError::conflict(error.code(), error.to_string()),
        PriceError::Malformed | PriceError::NotPositive | PriceError::OutOfRange => "price",
        PriceError::ObservedInFuture => "observed_at",
        PriceError::BaseNotSupported => "base",
        PriceError::PairInvalid => "quote",
        PriceError::IndexInvalid | PriceError::FeedMismatch => "index",
        PriceError::SourceInvalid => "source",
    };
    ApiError::field_rule(field, error.code(), error.to_string())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    #[schema(example = "CARBON")]
    pub base: String,
    #[schema(example = "EUR")]
    pub quote: String,
    #[schema(example = "EUA")]
    pub index: Option<String>,
    /// At least at the quote currency's scale.
    #[schema(example = "71.25")]
    pub price: String,
    #[schema(example = "manual")]
    pub source: String,
    pub observed_at: DateTime<Utc>,
    /// Observed longer ago than the configured maximum age (`ECOLEDGER_PRICE_MAX_AGE_SECS`).
    pub stale: bool,
}

/// The latest price of every pair and index (any signed-in user), with `Ledger-Position`.
#[utoipa::path(get, path = "/api/v1/prices", tag = "prices", security(("bearer" = [])),
    params(("min_position" = Option<i64>, Query, description = "Wait (bounded) until the read model reached it")),
    responses((status = 200, body = [PriceView]), (status = 503, description = "projection_lagging", body = crate::error::Problem)))]
pub async fn prices_list(
    State(state): State<AppState>,
    _caller: Caller,
    consistency: Consistency,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["prices"], consistency.0).await?;
    let rows = sqlx::query(
        "SELECT base, quote, index, price, source, observed_at FROM rm_prices \
         ORDER BY base, quote, index NULLS FIRST LIMIT $1",
    )
    .bind(PRICE_FEEDS_LIST_MAX)
    .fetch_all(state.store.pool())
    .await?;
    let now = Utc::now();
    let views: Vec<PriceView> = rows
        .iter()
        .map(|row| {
            let quote: String = row.get("quote");
            let price: rust_decimal::Decimal = row.get("price");
            let observed_at = row.get("observed_at");
            PriceView {
                base: row.get("base"),
                price: quote.parse().map_or_else(|_| price.normalize().to_string(), |q| format_price(price, q)),
                quote,
                index: row.get("index"),
                source: row.get("source"),
                observed_at,
                stale: is_stale(observed_at, now, state.config.price_age_max),
            }
        })
        .collect();
    Ok(with_position(position, axum::Json(views)))
}

/// Whether a price observed at `observed_at` is older, at `now`, than `age_max`.
pub fn is_stale(observed_at: DateTime<Utc>, now: DateTime<Utc>, age_max: Duration) -> bool {
    let oldest_fresh = chrono::TimeDelta::from_std(age_max).ok().and_then(|age| now.checked_sub_signed(age));
    oldest_fresh.is_some_and(|oldest_fresh| observed_at < oldest_fresh)
}

/// The latest price of a pair (and index) for a purchase, from the PriceFeed aggregate itself
/// rather than the read model, so a purchase right after a price update sees it. Pass the
/// unit of work's connection; check freshness with [`is_stale`] and `price_age_max`.
pub async fn latest_price(
    store: &Store,
    conn: &mut sqlx::PgConnection,
    base: &str,
    quote: Currency,
    index: Option<&str>,
) -> Result<Option<PriceObservation>, StoreError> {
    let loaded = store.load::<PriceFeed>(conn, &feed_id(base, quote, index), true).await?;
    Ok(loaded.aggregate.latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_is_stale_once_older_than_the_maximum_age() {
        let now = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let hour = Duration::from_secs(3600);
        let cases = [(0, false), (3599, false), (3600, false), (3601, true), (-60, false)];
        for (age_secs, stale) in cases {
            let observed_at = now - chrono::TimeDelta::seconds(age_secs);
            assert_eq!(is_stale(observed_at, now, hour), stale, "{age_secs}");
        }
        assert!(!is_stale(now, now, Duration::MAX), "an unbounded age never overflows");
    }
}
