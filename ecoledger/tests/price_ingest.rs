//! Price ingest end to end: a local HTTP server answers as CoinGecko and OilPriceAPI do (and
//! misbehaves: 429, 500, malformed JSON, no answer, jumps, zero and negative prices); CSV
//! imports and backfills run through the binary; `serve --components prices` polls the dev
//! fake provider.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use common::{eventually, spawn_ecoledger, TestApp, TestDb};
use domain::price::{PriceFeed, PriceFeedEvent};
use domain::Currency;
use ecoledger::configuration::{Component, PriceSettings};
use ecoledger::startup;
use event_store::{RecordedEvent, Store};
use price_ingest::{
    ApiKey, CarbonPriceConfig, CoinGeckoConfig, CoinGeckoPlan, HttpConfig, Ingest, IngestConfig, IngestMetrics,
    Observation, RecordOutcome,
};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;

const SIMPLE_PRICE: &str = "/api/v3/simple/price";
const MARKET_CHART: &str = "/api/v3/coins/ethereum/market_chart/range";
const CARBON_LATEST: &str = "/v1/prices/latest";
const COINGECKO_KEY: &str = "CG-test-key";
const CARBON_KEY: &str = "opa-test-key";

/// A canned answer of the test provider.
#[derive(Clone)]
enum Canned {
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answers: only the client's timeout ends the request.
    Hang,
}

fn ok(body: String) -> Canned {
    Canned::Reply { status: 200, headers: Vec::new(), body }
}

fn status(status: u16, headers: Vec<(&'static str, String)>, body: &str) -> Canned {
    Canned::Reply { status, headers, body: body.to_string() }
}

/// A request the test provider received.
#[derive(Clone)]
struct Hit {
    at: Instant,
    query: String,
    headers: HeaderMap,
}

#[derive(Default)]
struct Route {
    /// Answered first, in order; then `steady` to every request.
    queue: VecDeque<Canned>,
    steady: Option<Canned>,
    hits: Vec<Hit>,
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;

/// A local HTTP server answering each provider path with canned answers.
struct TestProvider {
    base: String,
    routes: Routes,
    task: tokio::task::JoinHandle<()>,
}

impl TestProvider {
    async fn start() -> TestProvider {
        let routes = Routes::default();
        let shared = routes.clone();
        let app =
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| answer(shared.clone(), uri, headers));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move { axum::serve(listener, app).await.expect("test provider serves") });
        TestProvider { base, routes, task }
    }

    fn steady(&self, path: &str, canned: Canned) {
        self.routes.lock().unwrap().entry(path.to_string()).or_default().steady = Some(canned);
    }

    fn then(&self, path: &str, canned: Canned) {
        self.routes.lock().unwrap().entry(path.to_string()).or_default().queue.push_back(canned);
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.routes.lock().unwrap().get(path).map(|route| route.hits.clone()).unwrap_or_default()
    }

    fn coingecko(&self) -> CoinGeckoConfig {
        CoinGeckoConfig {
            base_url: format!("{}/api/v3", self.base),
            api_key: Some(ApiKey::new(COINGECKO_KEY)),
            plan: CoinGeckoPlan::Demo,
        }
    }

    fn carbon(&self) -> CarbonPriceConfig {
        CarbonPriceConfig { base_url: self.base.clone(), api_key: Some(ApiKey::new(CARBON_KEY)) }
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(routes: Routes, uri: Uri, headers: HeaderMap) -> Response {
    let canned = {
        let mut routes = routes.lock().unwrap();
        let route = routes.entry(uri.path().to_string()).or_default();
        route.hits.push(Hit { at: Instant::now(), query: uri.query().unwrap_or("").to_string(), headers });
        route.queue.pop_front().or_else(|| route.steady.clone())
    };
    match canned {
        None => (StatusCode::NOT_FOUND, r#"{"error":"Not Found"}"#).into_response(),
        Some(Canned::Hang) => std::future::pending().await,
        Some(Canned::Reply { status, headers, body }) => {
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            let response_headers = response.headers_mut();
            response_headers.insert("content-type", HeaderValue::from_static("application/json"));
            for (name, value) in headers {
                response_headers.insert(HeaderName::from_static(name), HeaderValue::from_str(&value).unwrap());
            }
            response
        }
    }
}

/// CoinGecko's `/simple/price` answer, as recorded from the real API.
fn coingecko_simple(eur: &str, usd: &str, updated: DateTime<Utc>) -> Canned {
    ok(format!(r#"{{"ethereum":{{"eur":{eur},"usd":{usd},"last_updated_at":{}}}}}"#, updated.timestamp()))
}

/// OilPriceAPI's `/v1/prices/latest` answer, as documented.
fn oilpriceapi_latest(price: &str, created: DateTime<Utc>) -> Canned {
    let created = created.to_rfc3339_opts(SecondsFormat::Millis, true);
    ok(format!(
        r#"{{"status":"success","data":{{"price":{price},"formatted":"€{price}","currency":"EUR","code":"EU_CARBON_EUR","created_at":"{created}","type":"spot_price"}}}}"#
    ))
}

fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    (Utc::now() - TimeDelta::minutes(minutes)).trunc_subsecs(0)
}

/// Short timeouts and backoffs so every test takes a second or two.
fn fast_config(coingecko: Option<CoinGeckoConfig>, carbon: Option<CarbonPriceConfig>) -> IngestConfig {
    IngestConfig {
        coingecko,
        carbon,
        poll_interval: Duration::from_millis(100),
        failure_backoff_max: Duration::from_millis(800),
        jump_max_pct: Decimal::from(50),
        http: HttpConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(300),
            attempts_max: 3,
            retry_delay_base: Duration::from_millis(20),
            retry_delay_max: Duration::from_secs(2),
        },
    }
}

/// The ingest's tasks, stopped on drop, and its counters.
struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: IngestMetrics,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|task| task.abort());
    }
}

fn start_ingest(store: &Store, config: IngestConfig) -> Running {
    let metrics = IngestMetrics::new();
    let ingest = Ingest::new(store.clone(), config, metrics.clone()).expect("HTTP client");
    Running { tasks: ingest.spawn(), metrics }
}

/// A feed's recorded observations in stream order: (price, source, observed_at).
async fn observations(pool: &PgPool, feed: &str) -> Vec<(String, String, DateTime<Utc>)> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT canonical FROM events WHERE aggregate_type = 'PriceFeed' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(feed)
    .fetch_all(pool)
    .await
    .expect("events readable");
    rows.iter()
        .map(|text| {
            let recorded = RecordedEvent::from_canonical(text).expect("canonical event");
            let PriceFeedEvent::PriceObserved { price, source, observed_at, .. } =
                serde_json::from_value(recorded.payload).expect("a PriceObserved event");
            (price.to_string(), source, observed_at)
        })
        .collect()
}

async fn recorded_in(pool: &PgPool, feed: &str, count: usize) -> Vec<(String, String, DateTime<Utc>)> {
    eventually(&format!("{count} observations of {feed}"), || async {
        let found = observations(pool, feed).await;
        (found.len() >= count).then_some(found)
    })
    .await
}

fn observed(price: &str, source: &str, at: DateTime<Utc>) -> (String, String, DateTime<Utc>) {
    (price.to_string(), source.to_string(), at)
}

fn header(hit: &Hit, name: &str) -> Option<String> {
    hit.headers.get(name).map(|value| value.to_str().unwrap().to_string())
}

#[tokio::test]
async fn polled_prices_are_recorded_with_their_provider_time_and_carbon_in_eth_is_derived() {
    let db = TestDb::create().await;
    let store = Store::new(db.pool.clone());
    let provider = TestProvider::start().await;
    let (eth_at, carbon_at) = (minutes_ago(2), minutes_ago(5));
    provider.steady(SIMPLE_PRICE, coingecko_simple("2952.12", "3410.55", eth_at));
    provider.steady(CARBON_LATEST, oilpriceapi_latest("71.25", carbon_at));
    let _ingest = start_ingest(&store, fast_config(Some(provider.coingecko()), Some(provider.carbon())));

    let derived = recorded_in(&db.pool, "CARBON/ETH/EUA", 1).await;
    // 71.25 / 2952.12, half-even at 18 decimals; as old as the older input.
    assert_eq!(derived, vec![observed("0.024135197756188773", "derived", carbon_at)]);
    // ETH/USD may still be on its way: a round records its pairs one after the other.
    assert_eq!(recorded_in(&db.pool, "ETH/EUR/-", 1).await, vec![observed("2952.12", "coingecko", eth_at)]);
    assert_eq!(recorded_in(&db.pool, "ETH/USD/-", 1).await, vec![observed("3410.55", "coingecko", eth_at)]);
    assert_eq!(recorded_in(&db.pool, "CARBON/EUR/EUA", 1).await, vec![observed("71.25", "oilpriceapi", carbon_at)]);

    let coingecko = &provider.hits(SIMPLE_PRICE)[0];
    assert_eq!(header(coingecko, "x-cg-demo-api-key").as_deref(), Some(COINGECKO_KEY));
    assert_eq!(header(coingecko, "authorization"), None);
    for part in ["ids=ethereum", "vs_currencies=eur%2Cusd", "include_last_updated_at=true"] {
        assert!(coingecko.query.contains(part), "{part} in {}", coingecko.query);
    }
    let carbon = &provider.hits(CARBON_LATEST)[0];
    assert_eq!(header(carbon, "authorization").as_deref(), Some(&*format!("Token {CARBON_KEY}")));
    assert_eq!(carbon.query, "by_code=EU_CARBON_EUR");

    // Polls that see the same observations again record nothing more.
    eventually("three more polls of each", || async {
        (provider.hits(SIMPLE_PRICE).len() >= 4 && provider.hits(CARBON_LATEST).len() >= 4).then_some(())
    })
    .await;
    assert_eq!(observations(&db.pool, "CARBON/EUR/EUA").await.len(), 1);
    assert_eq!(observations(&db.pool, "CARBON/ETH/EUA").await.len(), 1);

    // A new carbon price: derived again, still as old as the older input (now ETH's).
    let carbon_at = minutes_ago(1);
    provider.steady(CARBON_LATEST, oilpriceapi_latest("72.5", carbon_at));
    let derived = recorded_in(&db.pool, "CARBON/ETH/EUA", 2).await;
    assert_eq!(derived[1], observed("0.024558622278227172", "derived", eth_at));
}

#[tokio::test]
async fn a_rate_limited_then_failing_request_is_retried_after_retry_after_and_recorded() {
    let db = TestDb::create().await;
    let store = Store::new(db.pool.clone());
    let provider = TestProvider::start().await;
    let carbon_at = minutes_ago(3);
    let rate_limited = r#"{"status":"error","error":"Rate limit exceeded"}"#;
    provider.then(CARBON_LATEST, status(429, vec![("retry-after", "1".into())], rate_limited));
    provider.then(CARBON_LATEST, status(500, Vec::new(), r#"{"status":"error","error":"Internal"}"#));
    provider.steady(CARBON_LATEST, oilpriceapi_latest("71.25", carbon_at));
    let ingest = start_ingest(&store, fast_config(None, Some(provider.carbon())));

    let recorded = recorded_in(&db.pool, "CARBON/EUR/EUA", 1).await;
    assert_eq!(recorded, vec![observed("71.25", "oilpriceapi", carbon_at)]);
    let hits = provider.hits(CARBON_LATEST);
    assert!(hits[1].at - hits[0].at >= Duration::from_secs(1), "Retry-After: 1 is honoured");
    assert!(hits[2].at - hits[1].at >= Duration::from_millis(40), "the second retry waits at least 2 × 20 ms");
    assert_eq!(ingest.metrics.failures("oilpriceapi", "rate_limited"), 0, "retries within the round succeeded");
    assert_eq!(ingest.metrics.failures("oilpriceapi", "server_error"), 0);
}

#[tokio::test]
async fn a_hanging_provider_times_out_while_the_other_keeps_polling() {
    let db = TestDb::create().await;
    let store = Store::new(db.pool.clone());
    let provider = TestProvider::start().await;
    provider.steady(SIMPLE_PRICE, Canned::Hang);
    provider.steady(CARBON_LATEST, oilpriceapi_latest("71.25", minutes_ago(3)));
    let ingest = start_ingest(&store, fast_config(Some(provider.coingecko()), Some(provider.carbon())));

    eventually("CoinGecko's round to time out", || async {
        (ingest.metrics.failures("coingecko", "timeout") >= 1).then_some(())
    })
    .await;
    // Three attempts of 300 ms each, then the round ends and the next waits 200 ms;
    // meanwhile the carbon provider polled at its own pace.
    let hits = provider.hits(SIMPLE_PRICE);
    assert!(hits.len() >= 3, "a timed-out request is retried");
    if let Some(next_round) = hits.get(3) {
        assert!(next_round.at - hits[2].at >= Duration::from_millis(500), "three attempts per round at most");
    }
    assert!(provider.hits(CARBON_LATEST).len() >= 3, "carbon polled {} times", provider.hits(CARBON_LATEST).len());
    assert_eq!(observations(&db.pool, "CARBON/EUR/EUA").await.len(), 1);
    assert!(observations(&db.pool, "ETH/EUR/-").await.is_empty());
}

#[tokio::test]
async fn a_provider_that_keeps_failing_is_polled_less_often_and_the_other_keeps_its_pace() {
    let db = TestDb::create().await;
    let store = Store::new(db.pool.clone());
    let provider = TestProvider::start().await;
    provider.steady(SIMPLE_PRICE, status(500, Vec::new(), r#"{"error":"Internal Server Error"}"#));
    provider.steady(CARBON_LATEST, oilpriceapi_latest("71.25", minutes_ago(3)));
    let mut config = fast_config(Some(provider.coingecko()), Some(provider.carbon()));
    config.http.attempts_max = 1;
    let ingest = start_ingest(&store, config);

    let hits = eventually("four polls of the failing provider", || async {
        let hits = provider.hits(SIMPLE_PRICE);
        (hits.len() >= 4).then_some(hits)
    })
    .await;
    // The 100 ms interval doubled per failure (200, 400, 800), capped at 800 ms.
    let gaps: Vec<Duration> = hits.windows(2).map(|pair| pair[1].at - pair[0].at).collect();
    for (gap, least_ms) in gaps.iter().zip([200, 400, 800]) {
        assert!(*gap >= Duration::from_millis(least_ms), "gaps {gaps:?}");
    }
    assert!(ingest.metrics.failures("coingecko", "server_error") >= 3);
    let carbon_polls = provider.hits(CARBON_LATEST).len();
    assert!(carbon_polls >= 6, "carbon polled only {carbon_polls} times in {:?}", hits[3].at - hits[0].at);
}

#[tokio::test]
async fn malformed_json_fails_the_round_and_the_next_good_answer_is_recorded() {
    let db = TestDb::create().await;
    let store = Store::new(db.pool.clone());
    let provider = TestProvider::start().await;
    let eth_at = minutes_ago(1);
    provider.then(SIMPLE_PRICE, ok(r#"{"ethereum":{"eur":29"#.to_string()));
    provider.steady(SIMPLE_PRICE, coingecko_simple("2952.12", "3410.55", eth_at));
    let ingest = start_ingest(&store, fast_config(Some(provider.coingecko()), None));

    let recorded = recorded_in(&db.pool, "ETH/EUR/-", 1).await;
    assert_eq!(recorded, vec![observed("2952.12", "coingecko", eth_at)]);
    assert_eq!(ingest.metrics.failures("coingecko", "malformed"), 1);
    let hits = provider.hits(SIMPLE_PRICE);
    assert!(hits[1].at - hits[0].at >= Duration::from_millis(200), "the next poll was backed off");
}

#[tokio::test]
async fn jumps_zero_negative_and_malformed_prices_are_rejected_and_never_recorded() {
    let db = TestDb::create().await;
    let store = Store::new(db.pool.clone());
    let provider = TestProvider::start().await;
    let first_at = minutes_ago(10);
    provider.steady(CARBON_LATEST, oilpriceapi_latest("71.25", first_at));
    provider.then(SIMPLE_PRICE, coingecko_simple("0", "-5", minutes_ago(9)));
    provider.steady(
        SIMPLE_PRICE,
        ok(format!(
            r#"{{"ethereum":{{"eur":"2952.12","usd":null,"last_updated_at":{}}}}}"#,
            minutes_ago(8).timestamp()
        )),
    );
    let ingest = start_ingest(&store, fast_config(Some(provider.coingecko()), Some(provider.carbon())));
    recorded_in(&db.pool, "CARBON/EUR/EUA", 1).await;

    // More than 50 % above the latest 71.25.
    provider.steady(CARBON_LATEST, oilpriceapi_latest("107.00", minutes_ago(9)));
    eventually("the jump to be rejected", || async {
        (ingest.metrics.rejections("oilpriceapi", "price_jump") >= 1).then_some(())
    })
    .await;
    eventually("zero, negative, string and null prices to be rejected", || async {
        let metrics = &ingest.metrics;
        (metrics.rejections("coingecko", "price_not_positive") == 2
            && metrics.rejections("coingecko", "price_malformed") >= 1
            && metrics.rejections("coingecko", "price_missing") >= 1)
            .then_some(())
    })
    .await;
    let last_at = minutes_ago(8);
    provider.steady(CARBON_LATEST, oilpriceapi_latest("106.80", last_at));
    let recorded = recorded_in(&db.pool, "CARBON/EUR/EUA", 2).await;
    // 106.80 is 49.9 % above 71.25: accepted; the jump to 107.00 was never recorded.
    assert_eq!(recorded, vec![observed("71.25", "oilpriceapi", first_at), observed("106.8", "oilpriceapi", last_at)]);
    assert!(observations(&db.pool, "ETH/EUR/-").await.is_empty());
    assert!(observations(&db.pool, "ETH/USD/-").await.is_empty());
}

/// Runs the binary to completion with `args` and `envs`, returning its stdout.
async fn run_ecoledger(args: &[&str], envs: &[(&str, &str)]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecoledger"))
        .args(args)
        .envs(envs.iter().copied())
        .env("ECOLEDGER_LOG", "error")
        .output()
        .await
        .expect("the ecoledger binary runs");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ecoledger {args:?}: {stdout}{stderr}");
    stdout
}

#[tokio::test]
async fn a_csv_import_keeps_good_rows_reports_bad_ones_by_line_and_a_reimport_records_nothing() {
    let db = TestDb::create().await;
    let file = std::env::temp_dir().join(format!("ecoledger-prices-{}.csv", uuid::Uuid::new_v4().simple()));
    let csv = "\"Date\",\"Price\",\"Open\",\"High\",\"Low\",\"Vol.\",\"Change %\"\n\
        \"Jan 07, 2026\",\"72.10\",\"71.20\",\"72.50\",\"70.90\",\"\",\"1.19%\"\n\
        \"Jan 06, 2026\",\"71.25\",\"70.10\",\"71.90\",\"69.80\",\"\",\"1.64%\"\n\
        \"Jan 05, 2026\",\"0.00\",\"\",\"\",\"\",\"\",\"0.00%\"\n\
        \"Jan 04, 2026\",\"70.10\",\"\",\"\",\"\",\"\",\"\"\n\
        \"Jan 03, 2026\",\"abc\",\"\",\"\",\"\",\"\",\"0.00%\"\n\
        \"Jan 02, 2026\",\"-70.10\",\"\",\"\",\"\",\"\",\"0.00%\"\n\
        \"2026-01-01\",\"70.25\",\"\",\"\",\"\",\"\",\"bad\"\n\
        \"12/31/2025\",\"69.80\",\"\",\"\",\"\",\"\",\"-0.42%\"\n";
    std::fs::write(&file, csv).expect("write the CSV");
    let path = file.to_str().unwrap();
    let envs = [("DATABASE_URL", db.url.as_str())];

    let first = run_ecoledger(&["prices", "import", path], &envs).await;
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 5, "{first}");
    assert!(lines[0].starts_with("line 4: price_not_positive"), "{first}");
    assert!(lines[1].starts_with("line 6: price_malformed"), "{first}");
    assert!(lines[2].starts_with("line 7: price_not_positive"), "{first}");
    assert!(lines[3].starts_with("line 8: change %"), "{first}");
    assert!(lines[4].ends_with("recorded 4, duplicates 0, rejected 4"), "{first}");

    let again =
        run_ecoledger(&["prices", "import", path, "--base", "CARBON", "--quote", "EUR", "--index", "EUA"], &envs).await;
    assert!(again.trim_end().ends_with("recorded 0, duplicates 4, rejected 4"), "{again}");
    let _ = std::fs::remove_file(&file);

    let recorded = observations(&db.pool, "CARBON/EUR/EUA").await;
    let day = |text: &str| DateTime::parse_from_rfc3339(&format!("{text}T00:00:00Z")).unwrap().to_utc();
    let expected = vec![
        observed("72.1", "csv", day("2026-01-07")),
        observed("71.25", "csv", day("2026-01-06")),
        observed("70.1", "csv", day("2026-01-04")),
        observed("69.8", "csv", day("2025-12-31")),
    ];
    assert_eq!(recorded, expected);
    let feed = Store::new(db.pool.clone()).load_current::<PriceFeed>("CARBON/EUR/EUA").await.unwrap().aggregate;
    assert_eq!(feed.latest.map(|latest| latest.observed_at), Some(day("2026-01-07")));
}

#[tokio::test]
async fn a_backfill_records_history_once_and_never_replaces_a_newer_latest() {
    let db = TestDb::create().await;
    let store = Store::new(db.pool.clone());
    let provider = TestProvider::start().await;
    let latest_at = minutes_ago(1);
    let polled = Observation {
        base: "ETH".into(),
        quote: Currency::Eur,
        index: None,
        price: Decimal::new(300_000, 2),
        source: "coingecko".into(),
        observed_at: latest_at,
    };
    assert!(matches!(
        price_ingest::record_observation(&store, &polled, None).await,
        Ok(RecordOutcome::Recorded { .. })
    ));
    let hours_ago = |hours: i64| (Utc::now() - TimeDelta::hours(hours)).trunc_subsecs(3);
    let points = [
        (hours_ago(3), "2950.5"),
        (hours_ago(2), "2960.25"),
        (hours_ago(2) + TimeDelta::minutes(30), "0"),
        (hours_ago(1), "2970"),
    ];
    let prices: Vec<String> = points.iter().map(|(at, price)| format!("[{},{price}]", at.timestamp_millis())).collect();
    let chart = format!(r#"{{"prices":[{}],"market_caps":[],"total_volumes":[]}}"#, prices.join(","));
    provider.steady(MARKET_CHART, ok(chart));

    let base_url = format!("{}/api/v3", provider.base);
    let (from, to) = (hours_ago(4).to_rfc3339(), Utc::now().to_rfc3339());
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("ECOLEDGER_COINGECKO_BASE_URL", base_url.as_str()),
        ("ECOLEDGER_COINGECKO_API_KEY", COINGECKO_KEY),
        ("ECOLEDGER_COINGECKO_API_PLAN", "pro"),
    ];
    let args = ["prices", "backfill", "--from", &from, "--to", &to];
    let first = run_ecoledger(&args, &envs).await;
    assert!(first.trim_end().ends_with("recorded 3, duplicates 0, rejected 1"), "{first}");
    let again = run_ecoledger(&args, &envs).await;
    assert!(again.trim_end().ends_with("recorded 0, duplicates 3, rejected 1"), "{again}");

    let hit = &provider.hits(MARKET_CHART)[0];
    assert_eq!(header(hit, "x-cg-pro-api-key").as_deref(), Some(COINGECKO_KEY));
    let from_unix = DateTime::parse_from_rfc3339(&from).unwrap().timestamp();
    assert!(hit.query.starts_with(&format!("vs_currency=eur&from={from_unix}&to=")), "{}", hit.query);
    assert_eq!(observations(&db.pool, "ETH/EUR/-").await.len(), 4);
    let feed = store.load_current::<PriceFeed>("ETH/EUR/-").await.unwrap().aggregate;
    let latest = feed.latest.expect("a latest price");
    assert_eq!((latest.price, latest.observed_at), (Decimal::new(300_000, 2), latest_at), "history never replaces it");
}

#[tokio::test]
async fn an_admin_price_already_recorded_for_its_time_is_refused_even_when_not_the_newest() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let body = |price: &str, at: DateTime<Utc>| {
        json!({"base": "CARBON", "quote": "EUR", "index": "EUA", "price": price,
               "observed_at": at.to_rfc3339_opts(SecondsFormat::Secs, true)})
    };
    let (older, newer) = (minutes_ago(20), minutes_ago(10));
    assert_eq!(
        app.post("/api/v1/prices", &admin.token, body("71.25", newer)).await.status,
        reqwest::StatusCode::CREATED
    );
    assert_eq!(
        app.post("/api/v1/prices", &admin.token, body("70.50", older)).await.status,
        reqwest::StatusCode::CREATED
    );
    let repeat = app.post("/api/v1/prices", &admin.token, body("70.75", older)).await;
    assert_eq!(repeat.status, reqwest::StatusCode::CONFLICT, "{:?}", repeat.body);
    assert_eq!(repeat.code(), "price_exists");
    assert_eq!(observations(&app.db.pool, "CARBON/EUR/EUA").await.len(), 2);
}

#[tokio::test]
async fn serve_with_only_the_prices_component_records_prices_from_the_fake_provider() {
    let db = TestDb::create().await;
    let (_fake, fake_base) = spawn_ecoledger(
        &["prices", "fake-provider", "--addr", "127.0.0.1:0"],
        &[],
        "fake price provider listening on ",
    )
    .await;
    let coingecko = format!("{fake_base}/api/v3");
    let prefix = common::unique_prefix();
    let nats_url = common::nats_url();
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("NATS_URL", nats_url.as_str()),
        ("ECOLEDGER_NATS_PREFIX", prefix.as_str()),
        ("ECOLEDGER_HTTP_ADDR", "127.0.0.1:0"),
        ("ECOLEDGER_COINGECKO_BASE_URL", coingecko.as_str()),
        ("ECOLEDGER_CARBON_PRICE_BASE_URL", fake_base.as_str()),
        ("ECOLEDGER_PRICE_POLL_SECS", "1"),
    ];
    let (_serve, _) = spawn_ecoledger(&["serve", "--components", "prices"], &envs, "ecoledger listening on ").await;
    for feed in ["ETH/EUR/-", "ETH/USD/-", "CARBON/EUR/EUA", "CARBON/ETH/EUA"] {
        let recorded = recorded_in(&db.pool, feed, 1).await;
        let (_, source, observed_at) = &recorded[0];
        assert!(Utc::now() - *observed_at < TimeDelta::minutes(1), "{feed} observed at {observed_at}");
        let expected = match feed {
            "CARBON/ETH/EUA" => "derived",
            "CARBON/EUR/EUA" => "oilpriceapi",
            _ => "coingecko",
        };
        assert_eq!(source, expected);
    }
}

#[tokio::test]
async fn with_every_component_polled_prices_reach_the_prices_api_and_carbon_in_eth_shows_as_derived() {
    let db = TestDb::create().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_base = format!("http://{}", listener.local_addr().unwrap());
    let fake = tokio::spawn(price_ingest::fake::serve(listener));
    let options = common::SpawnOptions {
        components: vec![Component::Api, Component::Relay, Component::Projections, Component::Sagas, Component::Prices],
        ..common::SpawnOptions::default()
    };
    let settings = common::serve_settings(&db.url, &common::unique_prefix(), &options);
    let prices = PriceSettings {
        coingecko_base_url: Some(format!("{fake_base}/api/v3")),
        carbon_price_base_url: Some(fake_base.clone()),
        price_poll_secs: 1,
        ..PriceSettings::default()
    };
    let server = startup::start_with_prices(&settings, &prices).await.expect("server starts");
    let base = format!("http://{}", server.address);
    let client = reqwest::Client::new();
    let user = json!({"username": "alice", "email": "alice@example.org", "password": common::PASSWORD});
    let registered = client.post(format!("{base}/api/v1/users")).json(&user).send().await.unwrap();
    assert_eq!(registered.status(), reqwest::StatusCode::CREATED);
    let login = json!({"username": "alice", "password": common::PASSWORD});
    let token: serde_json::Value =
        client.post(format!("{base}/api/v1/auth/token")).json(&login).send().await.unwrap().json().await.unwrap();
    let token = token["access_token"].as_str().expect("a token").to_string();

    let listed = eventually("four pairs in GET /api/v1/prices", || async {
        let reply = client.get(format!("{base}/api/v1/prices")).bearer_auth(&token).send().await.ok()?;
        let listed: Vec<serde_json::Value> = reply.json().await.ok()?;
        (listed.len() == 4).then_some(listed)
    })
    .await;
    let carbon_eth = listed.iter().find(|p| p["base"] == "CARBON" && p["quote"] == "ETH").expect("CARBON/ETH listed");
    assert_eq!(
        (&carbon_eth["source"], &carbon_eth["index"], &carbon_eth["derived"]),
        (&json!("derived"), &json!("EUA"), &json!(true))
    );
    assert_eq!(carbon_eth["stale"], false);
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ecoledger_price_observations_total"), "the ingest's counters are served");
    server.tasks.iter().for_each(|task| task.abort());
    fake.abort();
}
