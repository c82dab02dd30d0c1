//! A fake price provider for development (`ecoledger prices fake-provider`): CoinGecko's and
//! OilPriceAPI's endpoints in their real formats, with prices that walk a little at random on
//! every request and current timestamps, so `make run` shows prices flowing without internet.
//! Point `ECOLEDGER_COINGECKO_BASE_URL` at `http://ADDR/api/v3` and
//! `ECOLEDGER_CARBON_PRICE_BASE_URL` at `http://ADDR`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::Rng;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use crate::providers::coingecko::{
    MarketChartResponse, SimplePrice, SimplePriceResponse, BACKFILL_POINTS_MAX, COIN_ID,
};
use crate::providers::oilpriceapi::{LatestPrice, LatestResponse, CODE};
use crate::providers::raw_number;

/// Largest move of a price per step, in basis points either way.
const STEP_BPS_MAX: i64 = 30;

/// The fake market's prices.
#[derive(Debug, Clone)]
struct Market {
    eth_eur: Decimal,
    /// USD per EUR, so ETH/USD follows ETH/EUR.
    eur_usd: Decimal,
    carbon_eur: Decimal,
}

impl Market {
    fn new() -> Market {
        Market {
            eth_eur: Decimal::new(295_212, 2),
            eur_usd: Decimal::new(1_1553, 4),
            carbon_eur: Decimal::new(7_125, 2),
        }
    }

    fn step(&mut self, rng: &mut impl Rng) {
        self.eth_eur = walk(self.eth_eur, rng);
        self.carbon_eur = walk(self.carbon_eur, rng);
    }

    fn eth_usd(&self) -> Decimal {
        (self.eth_eur * self.eur_usd).round_dp(2)
    }
}

/// `price` moved by up to [`STEP_BPS_MAX`] basis points, at cents, never below a cent.
fn walk(price: Decimal, rng: &mut impl Rng) -> Decimal {
    let bps = Decimal::new(rng.random_range(-STEP_BPS_MAX..=STEP_BPS_MAX), 4);
    (price * (Decimal::ONE + bps)).round_dp(2).max(Decimal::new(1, 2))
}

type Shared = Arc<Mutex<Market>>;

/// The fake provider's routes.
pub fn router() -> Router {
    Router::new()
        .route("/api/v3/simple/price", get(simple_price))
        .route("/api/v3/coins/{id}/market_chart/range", get(market_chart_range))
        .route("/v1/prices/latest", get(latest_price))
        .with_state(Arc::new(Mutex::new(Market::new())))
}

/// Serves the fake provider on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

fn stepped(market: &Shared) -> Market {
    let mut market = market.lock().expect("the market lock is never poisoned");
    market.step(&mut rand::rng());
    market.clone()
}

#[derive(Deserialize)]
struct SimplePriceQuery {
    ids: String,
    vs_currencies: String,
}

async fn simple_price(
    State(market): State<Shared>,
    Query(query): Query<SimplePriceQuery>,
) -> Json<SimplePriceResponse> {
    let market = stepped(&market);
    let mut response = BTreeMap::new();
    if query.ids.split(',').any(|id| id.trim() == COIN_ID) {
        let wants = |currency: &str| query.vs_currencies.split(',').any(|c| c.trim().eq_ignore_ascii_case(currency));
        let price = SimplePrice {
            eur: wants("eur").then(|| raw_number(&market.eth_eur.to_string())),
            usd: wants("usd").then(|| raw_number(&market.eth_usd().to_string())),
            last_updated_at: Some(Utc::now().timestamp()),
        };
        response.insert(COIN_ID.to_string(), price);
    }
    Json(response)
}

#[derive(Deserialize)]
struct RangeQuery {
    vs_currency: String,
    from: i64,
    to: i64,
}

async fn market_chart_range(
    State(market): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Response {
    if id != COIN_ID {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "coin not found"}))).into_response();
    }
    let market = market.lock().expect("the market lock is never poisoned").clone();
    let now = match query.vs_currency.to_ascii_lowercase().as_str() {
        "eur" => market.eth_eur,
        "usd" => market.eth_usd(),
        _ => return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid vs_currency"}))).into_response(),
    };
    let (Some(from), Some(to)) = (DateTime::from_timestamp(query.from, 0), DateTime::from_timestamp(query.to, 0))
    else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid from or to"}))).into_response();
    };
    Json(history(now, from, to.min(Utc::now()))).into_response()
}

/// A random walk back from `now_price`, with CoinGecko's granularity: hourly up to 90 days,
/// daily beyond.
fn history(now_price: Decimal, from: DateTime<Utc>, to: DateTime<Utc>) -> MarketChartResponse {
    let step = match to - from > TimeDelta::days(90) {
        true => TimeDelta::days(1),
        false => TimeDelta::hours(1),
    };
    let mut rng = rand::rng();
    let (mut at, mut price, mut points) = (to, now_price, Vec::new());
    while at >= from && points.len() < BACKFILL_POINTS_MAX {
        points.push((at.timestamp_millis(), raw_number(&price.to_string())));
        price = walk(price, &mut rng);
        at -= step;
    }
    points.reverse();
    MarketChartResponse { prices: points, market_caps: Vec::new(), total_volumes: Vec::new() }
}

#[derive(Deserialize)]
struct LatestQuery {
    by_code: String,
}

async fn latest_price(State(market): State<Shared>, Query(query): Query<LatestQuery>) -> Response {
    if query.by_code != CODE {
        let body = json!({"status": "error", "error": format!("unknown code {}", query.by_code)});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let market = stepped(&market);
    let response = LatestResponse {
        status: "success".into(),
        data: Some(LatestPrice {
            price: Some(raw_number(&market.carbon_eur.to_string())),
            formatted: Some(format!("€{}", market.carbon_eur)),
            currency: Some("EUR".into()),
            code: Some(CODE.into()),
            created_at: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
            kind: Some("spot_price".into()),
        }),
    };
    Json(response).into_response()
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_walk_stays_positive_and_moves_little() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut price = Decimal::new(7_125, 2);
        for _ in 0..1000 {
            let next = walk(price, &mut rng);
            assert!(next > Decimal::ZERO);
            assert!((next - price).abs() <= price * Decimal::new(STEP_BPS_MAX, 4) + Decimal::new(1, 2));
            price = next;
        }
    }

    #[test]
    fn history_is_hourly_and_ends_at_the_current_price() {
        let to = DateTime::from_timestamp(1_767_600_000, 0).unwrap();
        let chart = history(Decimal::new(2952, 0), to - TimeDelta::hours(5), to);
        assert_eq!(chart.prices.len(), 6);
        assert_eq!(chart.prices.last().unwrap().0, to.timestamp_millis());
        assert_eq!(chart.prices.last().unwrap().1.get(), "2952");
    }
}
