//! `/api/v1/prices`: market prices recorded as events (one PriceFeed stream per pair and
//! index), for purchases at market price. Admins record prices by hand (`source: manual`);
//! the price-ingest issue adds provider polling with the same command.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, TimeDelta, Utc};
use domain::price::{feed_id, format_price, parse_price, PriceError, PriceFeed, PriceFeedCommand, PriceObservation};
use domain::Currency;
use event_store::{Store, StoreError};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_created, run, CommandInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};
use crate::price_stream::{PriceStreamHub, PriceUpdate, PRICE_STREAMS_MAX};
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
            // newest). A taken one answers `price_exists` (see `claim_taken`).
            let claim = domain::price::observation_claim(&feed, MANUAL_SOURCE, observed_at);
            uow.claim(domain::price::OBSERVATION_CLAIM_KIND, &claim, &format!("PriceFeed/{feed}"));
            commit_created(uow, body, "/api/v1/prices".to_string()).await
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

/// One feed's latest price, as `GET /api/v1/prices` lists it and the stream sends it.
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
    /// Observed longer ago than the configured maximum age (`ECOLEDGER_PRICE_MAX_AGE_SECS`),
    /// judged when the answer (or the stream event) is sent.
    pub stale: bool,
    /// Computed by the platform from other pairs (`source: "derived"`), not observed.
    pub derived: bool,
}

/// The source of prices the platform computes from other pairs (CARBON/ETH from CARBON/EUR
/// and ETH/EUR).
pub const DERIVED_SOURCE: &str = "derived";

/// A stored price as the API shows it, staleness judged at `now`.
fn price_view(row: StoredPrice, now: DateTime<Utc>, age_max: Duration) -> PriceView {
    let StoredPrice { base, quote, index, price, source, observed_at } = row;
    PriceView {
        base,
        price: quote.parse().map_or_else(|_| price.normalize().to_string(), |q| format_price(price, q)),
        quote,
        index,
        derived: source == DERIVED_SOURCE,
        source,
        observed_at,
        stale: is_stale(observed_at, now, age_max),
    }
}

/// A feed's price as `rm_prices` and `rm_price_updates` store it.
#[derive(Debug, sqlx::FromRow)]
struct StoredPrice {
    base: String,
    quote: String,
    index: Option<String>,
    price: Decimal,
    source: String,
    observed_at: DateTime<Utc>,
}

/// The latest price of every pair and index (any signed-in user), with `Ledger-Position`.
/// Latest is the newest `observed_at` across sources; a tie goes to the source listed first
/// in the platform's source priority (`manual`, `coingecko`, `oilpriceapi`, `csv`,
/// `derived`, then any other); an older observation (a backfill, a CSV row) never replaces it.
#[utoipa::path(get, path = "/api/v1/prices", tag = "prices", security(("bearer" = [])),
    params(("min_position" = Option<i64>, Query, description = "Wait (bounded) until the read model reached it")),
    responses((status = 200, body = [PriceView]), (status = 503, description = "projection_lagging", body = crate::error::Problem)))]
pub async fn prices_list(
    State(state): State<AppState>,
    _caller: Caller,
    consistency: Consistency,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["prices"], consistency.0).await?;
    let rows: Vec<StoredPrice> = sqlx::query_as(
        "SELECT base, quote, index, price, source, observed_at FROM rm_prices \
         ORDER BY base, quote, index NULLS FIRST LIMIT $1",
    )
    .bind(PRICE_FEEDS_LIST_MAX)
    .fetch_all(state.store.pool())
    .await?;
    let now = Utc::now();
    let views: Vec<PriceView> = rows.into_iter().map(|row| price_view(row, now, state.config.price_age_max)).collect();
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

/// The price routes; the stream's shared fan-out lives with its route.
pub fn routes() -> Router<AppState> {
    let hub = PriceStreamHub::new(PRICE_STREAMS_MAX);
    Router::new()
        .route("/api/v1/prices", post(prices_create).get(prices_list))
        .route(
            "/api/v1/prices/stream",
            get(prices_stream).layer(Extension(hub)).layer(axum::middleware::from_fn(access_token_as_bearer)),
        )
        .route("/api/v1/prices/{base}/{quote}/history", get(prices_history))
}

/// Most candles one history request answers.
pub const CANDLES_MAX: i64 = 10_000;
/// The range of a history request without `from`.
pub const HISTORY_RANGE_DEFAULT: TimeDelta = TimeDelta::days(30);

/// The width of a candle; buckets are aligned to UTC hours and days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandleInterval {
    Hour,
    Day,
}

impl CandleInterval {
    /// `1h` (the default) or `1d`; anything else is `422 interval_not_supported`.
    fn parse(text: Option<&str>) -> Result<CandleInterval, ApiError> {
        match text.unwrap_or("1h") {
            "1h" => Ok(CandleInterval::Hour),
            "1d" => Ok(CandleInterval::Day),
            _ => Err(ApiError::field_rule("interval", "interval_not_supported", "interval must be 1h or 1d")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            CandleInterval::Hour => "1h",
            CandleInterval::Day => "1d",
        }
    }

    fn width(self) -> TimeDelta {
        match self {
            CandleInterval::Hour => TimeDelta::hours(1),
            CandleInterval::Day => TimeDelta::days(1),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// RFC 3339, inclusive. Default: 30 days before `to`.
    pub from: Option<String>,
    /// RFC 3339, exclusive. Default: now.
    pub to: Option<String>,
    /// `1h` (default) or `1d`: candles of one UTC hour or one UTC day.
    pub interval: Option<String>,
    /// The market index (`EUA`); without it, the pair's feed without an index.
    pub index: Option<String>,
    /// Wait (bounded) until the read model reached this position.
    pub min_position: Option<i64>,
}

/// One bucket of observations. Prices are decimal strings at least at the quote's scale.
#[derive(Debug, Serialize, ToSchema)]
pub struct Candle {
    /// Start of the UTC hour or day.
    pub bucket_start: DateTime<Utc>,
    /// The price observed first in the bucket (a tie of `observed_at`: the source priority).
    #[schema(example = "70.00")]
    pub open: String,
    pub high: String,
    pub low: String,
    /// The price observed last in the bucket (a tie of `observed_at`: the source priority).
    pub close: String,
    /// Observations in the bucket.
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceHistory {
    pub base: String,
    pub quote: String,
    pub index: Option<String>,
    #[schema(example = "1h")]
    pub interval: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Oldest first; buckets without an observation are left out.
    pub candles: Vec<Candle>,
}

/// OHLC candles of one feed from every observation recorded for it (all sources: a derived
/// pair such as CARBON/ETH only has derived ones), by `observed_at` in `[from, to)`. A bucket
/// cut by `from` or `to` holds only the observations inside the range. Any signed-in user.
#[utoipa::path(get, path = "/api/v1/prices/{base}/{quote}/history", tag = "prices", security(("bearer" = [])),
    params(("base" = String, Path, description = "CARBON or ETH"), ("quote" = String, Path, description = "EUR, USD, ETH or CARBON"), HistoryQuery),
    responses((status = 200, body = PriceHistory),
              (status = 404, description = "price_feed_not_found: nothing recorded for this pair and index", body = crate::error::Problem),
              (status = 422, description = "base_not_supported, pair_invalid, index_invalid, interval_not_supported, range_invalid (from not before to), range_too_large (more than 10000 candles), validation_failed", body = crate::error::Problem),
              (status = 503, description = "projection_lagging", body = crate::error::Problem)))]
pub async fn prices_history(
    State(state): State<AppState>,
    _caller: Caller,
    consistency: Consistency,
    ApiPath((base, quote)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let quote = history_pair(&base, &quote)?;
    let index = history_index(query.index)?;
    let interval = CandleInterval::parse(query.interval.as_deref())?;
    let (from, to) = history_range(query.from.as_deref(), query.to.as_deref(), interval, Utc::now())?;
    let position = position_of(&state, &["prices"], consistency.0).await?;
    let feed = feed_id(&base, quote, index.as_deref());
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rm_prices WHERE feed_id = $1)")
        .bind(&feed)
        .fetch_one(state.store.pool())
        .await?;
    if !known {
        return Err(ApiError::not_found("price_feed_not_found", format!("no price is recorded for {feed}")));
    }
    let candles = candles(state.store.pool(), &feed, (from, to), interval, quote).await?;
    let history = PriceHistory {
        base,
        quote: quote.code().to_string(),
        index,
        interval: interval.name().to_string(),
        from,
        to,
        candles,
    };
    Ok(with_position(position, axum::Json(history)))
}

/// The quote of a priceable pair: base CARBON or ETH, a known quote other than the base.
fn history_pair(base: &str, quote: &str) -> Result<Currency, ApiError> {
    let base: Currency = base
        .parse()
        .ok()
        .filter(|base| domain::price::BASES.contains(base))
        .ok_or_else(|| price_rejection(PriceError::BaseNotSupported))?;
    let quote: Currency =
        quote.parse().map_err(|_| ApiError::invalid_field("quote", "unknown_currency", "EUR, USD, ETH or CARBON"))?;
    if base == quote {
        return Err(price_rejection(PriceError::PairInvalid));
    }
    Ok(quote)
}

/// An index name no longer than any recorded one can be; its spelling is checked by the
/// lookup (an index never recorded is `price_feed_not_found`).
fn history_index(index: Option<String>) -> Result<Option<String>, ApiError> {
    match index {
        Some(index) if index.is_empty() || index.len() > domain::price::INDEX_LEN_MAX => {
            Err(price_rejection(PriceError::IndexInvalid))
        }
        index => Ok(index),
    }
}

/// `[from, to)` from the query: defaults, RFC 3339, `from` before `to`, at most
/// [`CANDLES_MAX`] buckets touched.
fn history_range(
    from: Option<&str>,
    to: Option<&str>,
    interval: CandleInterval,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let parse = |field: &str, text: &str| {
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.to_utc())
            .map_err(|_| ApiError::invalid_field(field, "invalid", "must be an RFC 3339 time"))
    };
    let to = to.map(|text| parse("to", text)).transpose()?.unwrap_or(now);
    let from = match from {
        Some(text) => parse("from", text)?,
        None => to - HISTORY_RANGE_DEFAULT,
    };
    if from >= to {
        return Err(ApiError::field_rule("from", "range_invalid", "from must be before to"));
    }
    if buckets_touched(from, to, interval) > CANDLES_MAX {
        let detail = format!("at most {CANDLES_MAX} candles per request: narrow the range or use 1d");
        return Err(ApiError::field_rule("to", "range_too_large", detail));
    }
    Ok((from, to))
}

/// How many aligned buckets `[from, to)` touches (`from < to`).
fn buckets_touched(from: DateTime<Utc>, to: DateTime<Utc>, interval: CandleInterval) -> i64 {
    let width = interval.width().num_microseconds().expect("an hour or a day fits in microseconds");
    let first = from.timestamp_micros().div_euclid(width);
    let last = (to.timestamp_micros() - 1).div_euclid(width);
    last - first + 1
}

/// The candles of `feed` in `[from, to)`, computed in Postgres. Buckets are aligned to the
/// Unix epoch, which is a UTC midnight: hours and days start on the UTC clock.
async fn candles(
    pool: &sqlx::PgPool,
    feed: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    interval: CandleInterval,
    quote: Currency,
) -> Result<Vec<Candle>, ApiError> {
    let priority: Vec<&str> = projections::PRICE_SOURCE_PRIORITY.to_vec();
    let rows: Vec<(DateTime<Utc>, Decimal, Decimal, Decimal, Decimal, i64)> = sqlx::query_as(
        "SELECT date_bin($4::bigint * interval '1 second', observed_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket, \
           (array_agg(price ORDER BY observed_at, COALESCE(array_position($5::text[], source), $6), position))[1], \
           max(price), min(price), \
           (array_agg(price ORDER BY observed_at DESC, COALESCE(array_position($5::text[], source), $6), position))[1], \
           count(*) \
         FROM rm_price_history WHERE feed_id = $1 AND observed_at >= $2 AND observed_at < $3 \
         GROUP BY bucket ORDER BY bucket",
    )
    .bind(feed)
    .bind(from)
    .bind(to)
    .bind(interval.width().num_seconds())
    .bind(&priority)
    .bind(priority.len() as i32 + 1)
    .fetch_all(pool)
    .await?;
    let candles = rows
        .into_iter()
        .map(|(bucket_start, open, high, low, close, count)| Candle {
            bucket_start,
            open: format_price(open, quote),
            high: format_price(high, quote),
            low: format_price(low, quote),
            close: format_price(close, quote),
            count,
        })
        .collect();
    Ok(candles)
}

/// How often an idle stream sends a comment, so proxies and clients keep the connection.
pub const PRICE_STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The bearer token, for clients that cannot send headers (a browser's `EventSource`).
    /// Prefer the `Authorization` header: URLs end up in proxies' logs.
    pub access_token: Option<String>,
}

/// Server-Sent Events: one event per observation that became its feed's latest (an older
/// backfill is not sent). `data:` is the JSON object `GET /api/v1/prices` lists (`stale`
/// judged when sent), `id:` the ledger position. With `Last-Event-ID`, every such update
/// after that position comes first, then live ones, each once and in order; without it,
/// only updates from now on (read `GET /api/v1/prices` for the current ones). A comment
/// every 15 s keeps the connection open. The token is checked when the stream opens.
#[utoipa::path(get, path = "/api/v1/prices/stream", tag = "prices", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<i64>, Header, description = "Resume after this position"), StreamQuery),
    responses((status = 200, description = "text/event-stream of price events", content_type = "text/event-stream", body = PriceView),
              (status = 400, description = "invalid_last_event_id", body = crate::error::Problem),
              (status = 401, body = crate::error::Problem),
              (status = 503, description = "price_streams_exhausted", body = crate::error::Problem)))]
pub async fn prices_stream(
    State(state): State<AppState>,
    Extension(hub): Extension<PriceStreamHub>,
    _caller: Caller,
    headers: HeaderMap,
    ApiQuery(_query): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let after = last_event_id(&headers)?;
    let permit = hub.admit()?;
    let updates = hub.follow(state.store.pool(), after, permit).await?;
    let age_max = state.config.price_age_max;
    // Mapped lazily: `stale` is judged as each event leaves.
    let events = updates.map(move |update| Ok::<_, Infallible>(price_event(update, age_max)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(PRICE_STREAM_KEEP_ALIVE)).into_response())
}

/// The `Last-Event-ID` header: a ledger position, or `400 invalid_last_event_id`.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    match value.to_str().ok().and_then(|text| text.trim().parse::<i64>().ok()) {
        Some(position) if position >= 0 => Ok(Some(position)),
        _ => Err(ApiError::bad_request(
            "invalid_last_event_id",
            "Last-Event-ID must be a ledger position (an id sent by this stream)",
        )),
    }
}

fn price_event(update: PriceUpdate, age_max: Duration) -> Event {
    let PriceUpdate { position, base, quote, index, price, source, observed_at } = update;
    let view = price_view(StoredPrice { base, quote, index, price, source, observed_at }, Utc::now(), age_max);
    let data = serde_json::to_string(&view).expect("a price view serialises");
    Event::default().id(position.to_string()).data(data)
}

/// Lets `?access_token=` stand in for the `Authorization` header (browsers' `EventSource`
/// cannot set headers); a header, when sent, wins.
async fn access_token_as_bearer(mut request: Request, next: Next) -> Response {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(request.uri().query().unwrap_or("")).unwrap_or_default();
        let token = pairs.into_iter().find(|(name, _)| name == "access_token").map(|(_, token)| token);
        if let Some(value) = token.and_then(|token| HeaderValue::from_str(&format!("Bearer {token}")).ok()) {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
    }
    next.run(request).await
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

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_range_counts_every_utc_bucket_it_touches() {
        use CandleInterval::*;
        let cases = [
            ("2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z", Hour, 1),
            ("2026-01-01T10:30:00Z", "2026-01-01T11:30:00Z", Hour, 2),
            ("2026-01-01T10:59:59Z", "2026-01-01T11:00:00Z", Hour, 1),
            ("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z", Day, 2),
            ("2026-01-01T23:00:00Z", "2026-01-02T01:00:00Z", Day, 2),
            ("1969-12-31T23:30:00Z", "1970-01-01T00:30:00Z", Hour, 2),
        ];
        for (from, to, interval, buckets) in cases {
            assert_eq!(buckets_touched(time(from), time(to), interval), buckets, "{from} {to} {interval:?}");
        }
    }

    #[test]
    fn history_ranges_default_to_thirty_days_and_stay_bounded() {
        let now = time("2026-03-01T12:00:00Z");
        let range = |from: Option<&str>, to: Option<&str>, interval| {
            history_range(from, to, interval, now).map_err(|error| error.code)
        };
        let hour = CandleInterval::Hour;
        assert_eq!(range(None, None, hour), Ok((now - TimeDelta::days(30), now)));
        let to = "2026-02-01T00:00:00Z";
        assert_eq!(range(None, Some(to), hour), Ok((time(to) - TimeDelta::days(30), time(to))));
        assert_eq!(range(Some("2026-02-28T00:00:00Z"), None, hour), Ok((time("2026-02-28T00:00:00Z"), now)));
        assert_eq!(range(Some(to), Some(to), hour), Err("range_invalid"));
        assert_eq!(range(Some("2026-03-02T00:00:00Z"), None, hour), Err("range_invalid"));
        assert_eq!(range(Some("soon"), None, hour), Err("validation_failed"));
        // 10,000 hours are allowed, one more is not.
        let max_to = time(to) + TimeDelta::hours(CANDLES_MAX);
        assert!(range(Some(to), Some(&max_to.to_rfc3339()), hour).is_ok());
        let beyond = max_to + TimeDelta::seconds(1);
        assert_eq!(range(Some(to), Some(&beyond.to_rfc3339()), hour), Err("range_too_large"));
        assert!(range(Some(to), Some(&beyond.to_rfc3339()), CandleInterval::Day).is_ok());
    }
}
