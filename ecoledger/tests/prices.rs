//! Market prices end to end: admins record them as events, everyone reads the latest per pair,
//! candles of the history and a live stream, and purchases read the PriceFeed aggregate itself.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use command_api::routes::prices::latest_price;
use common::{Reply, TestApp, TestUser};
use domain::price::{feed_id, PriceFeed, PriceFeedCommand};
use domain::Currency;
use event_store::{Begun, CommandContext, Outcome};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// An RFC 3339 time `minutes` from now (negative: in the past), to the second.
fn minutes_from_now(minutes: i64) -> String {
    (Utc::now() + TimeDelta::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn carbon_eua(price: &str, observed_at: &str) -> Value {
    json!({"base": "CARBON", "quote": "EUR", "index": "EUA", "price": price, "observed_at": observed_at})
}

async fn record(app: &TestApp, admin: &TestUser, body: Value) -> Reply {
    app.post("/api/v1/prices", &admin.token, body).await
}

async fn recorded(app: &TestApp, admin: &TestUser, body: Value) -> Reply {
    let reply = record(app, admin, body.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{body}: {:?}", reply.body);
    reply
}

/// The latest prices once the read model reached `position`.
async fn prices(app: &TestApp, user: &TestUser, position: i64) -> Vec<Value> {
    let reply = app.get(&format!("/api/v1/prices?min_position={position}"), &user.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reached: i64 = reply.header("ledger-position").expect("Ledger-Position").parse().unwrap();
    assert!(reached >= position, "read model at {reached}, wanted {position}");
    reply.body.as_array().expect("a list").clone()
}

fn feed<'a>(prices: &'a [Value], base: &str, index: Option<&str>) -> &'a Value {
    prices.iter().find(|p| p["base"] == base && p["index"] == json!(index)).expect("the feed is listed")
}

async fn latest_from_aggregate(app: &TestApp) -> Option<(Decimal, String)> {
    let mut conn = app.db.pool.acquire().await.unwrap();
    let latest = latest_price(&app.store, &mut conn, "CARBON", Currency::Eur, Some("EUA")).await.unwrap();
    latest.map(|latest| (latest.price, latest.observed_at.to_rfc3339_opts(SecondsFormat::Secs, true)))
}

#[tokio::test]
async fn an_admin_records_a_price_and_every_user_sees_the_latest() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let observed_at = minutes_from_now(-1);
    let reply = recorded(&app, &admin, carbon_eua("71.25", &observed_at)).await;
    assert_eq!(reply.header("location").as_deref(), Some("/api/v1/prices"));
    assert_eq!(reply.body["feed_id"], "CARBON/EUR/EUA");
    assert_eq!(reply.body["price"], "71.25");
    assert_eq!(reply.body["source"], "manual");
    assert_eq!(reply.body["observed_at"], observed_at);
    assert_eq!(reply.body["latest"], true);
    // A purchase in the next request sees it, before any projection has run.
    assert_eq!(latest_from_aggregate(&app).await, Some((Decimal::new(7125, 2), observed_at.clone())));
    let eth = json!({"base": "ETH", "quote": "EUR", "price": "3012.5", "observed_at": minutes_from_now(0)});
    let position = recorded(&app, &admin, eth).await.position();
    let listed = prices(&app, &alice, position).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let carbon = feed(&listed, "CARBON", Some("EUA"));
    let expected = json!({"base": "CARBON", "quote": "EUR", "index": "EUA", "price": "71.25", "source": "manual",
        "observed_at": observed_at, "stale": false, "derived": false});
    assert_eq!(*carbon, expected);
    assert_eq!(feed(&listed, "ETH", None)["price"], "3012.50");
    let spec = app.request(Method::GET, "/api/v1/openapi.json", None, None).await;
    let paths = &spec.body["paths"];
    assert!(paths["/api/v1/prices"]["post"].is_object(), "the spec documents the routes");
    assert!(paths["/api/v1/prices"]["get"].is_object());
    assert!(paths["/api/v1/prices/{base}/{quote}/history"]["get"].is_object());
    assert!(paths["/api/v1/prices/stream"]["get"].is_object());
}

#[tokio::test]
async fn a_user_cannot_record_a_price() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let reply = record(&app, &alice, carbon_eua("71.25", &minutes_from_now(-1))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::FORBIDDEN, "forbidden"), "{:?}", reply.body);
    let anonymous = app.request(Method::GET, "/api/v1/prices", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_prices_are_refused_with_the_rule_they_break() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let now = minutes_from_now(0);
    let with = |field: &str, value: Value| {
        let mut body = carbon_eua("71.25", &now);
        body[field] = value;
        body
    };
    let cases = [
        (with("price", json!("0")), "price_not_positive"),
        (with("price", json!("-1")), "price_not_positive"),
        (with("price", json!("abc")), "price_malformed"),
        (with("price", json!("1e3")), "price_malformed"),
        (with("price", json!(71.25)), "validation_failed"),
        (with("price", json!("1.0000000000000000001")), "price_out_of_range"),
        (with("price", json!("1000000000000.01")), "price_out_of_range"),
        (with("observed_at", json!(minutes_from_now(10))), "observed_in_future"),
        (with("observed_at", json!("yesterday")), "validation_failed"),
        (with("base", json!("GOLD")), "base_not_supported"),
        (with("base", json!("EUR")), "base_not_supported"),
        (with("quote", json!("XYZ")), "validation_failed"),
        (with("quote", json!("CARBON")), "pair_invalid"),
        (with("index", json!("eua")), "index_invalid"),
        (with("source", json!("icap")), "validation_failed"),
    ];
    let events = app.event_count().await;
    for (body, code) in cases {
        let reply = record(&app, &admin, body.clone()).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{body}: {:?}", reply.body);
    }
    assert_eq!(app.event_count().await, events, "a refused price records nothing");
}

#[tokio::test]
async fn an_older_observation_is_history_and_does_not_replace_the_latest() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (newer, older) = (minutes_from_now(-1), minutes_from_now(-10));
    recorded(&app, &admin, carbon_eua("71", &newer)).await;
    let reply = recorded(&app, &admin, carbon_eua("69.5", &older)).await;
    assert_eq!(reply.body["latest"], false, "{:?}", reply.body);
    assert_eq!(latest_from_aggregate(&app).await, Some((Decimal::from(71), newer.clone())));
    let listed = prices(&app, &admin, reply.position()).await;
    assert_eq!((feed(&listed, "CARBON", Some("EUA"))["price"].as_str(), listed.len()), (Some("71.00"), 1));
    let history: Vec<(Decimal, String)> = sqlx::query_as(
        "SELECT price, source FROM rm_price_history WHERE feed_id = 'CARBON/EUR/EUA' ORDER BY observed_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(history, vec![(Decimal::new(695, 1), "manual".into()), (Decimal::from(71), "manual".into())]);
    let again = record(&app, &admin, carbon_eua("72", &newer)).await;
    assert_eq!((again.status, again.code()), (StatusCode::CONFLICT, "price_exists"), "{:?}", again.body);
    let newest = recorded(&app, &admin, carbon_eua("73", &minutes_from_now(0))).await;
    let listed = prices(&app, &admin, newest.position()).await;
    assert_eq!(feed(&listed, "CARBON", Some("EUA"))["price"], "73.00");
    // The older observation never became the latest: it is no stream update.
    let streamed: Vec<Decimal> = sqlx::query_scalar("SELECT price FROM rm_price_updates ORDER BY position")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(streamed, vec![Decimal::from(71), Decimal::from(73)]);
}

#[tokio::test]
async fn a_price_observed_longer_ago_than_the_maximum_age_is_stale() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    assert_eq!(app.settings.price_max_age_secs, 3600);
    recorded(&app, &admin, carbon_eua("71", &minutes_from_now(-61))).await;
    let eth = json!({"base": "ETH", "quote": "USD", "price": "3300", "observed_at": minutes_from_now(-59)});
    let position = recorded(&app, &admin, eth).await.position();
    let listed = prices(&app, &admin, position).await;
    assert_eq!(feed(&listed, "CARBON", Some("EUA"))["stale"], true);
    assert_eq!(feed(&listed, "ETH", None)["stale"], false);
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_first_outcome() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let body = carbon_eua("71.25", &minutes_from_now(-1));
    let post = |body: Value, key: &'static str| {
        let (app, token) = (&app, admin.token.clone());
        async move {
            app.request_with(Method::POST, "/api/v1/prices", Some(&token), Some(body), &[("idempotency-key", key)])
                .await
        }
    };
    let first = post(body.clone(), "price-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let events = app.event_count().await;
    let repeat = post(body.clone(), "price-1").await;
    assert_eq!((repeat.status, &repeat.body), (StatusCode::CREATED, &first.body));
    assert_eq!(repeat.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(app.event_count().await, events, "a repeat records nothing");
    let other = post(carbon_eua("72", &minutes_from_now(0)), "price-1").await;
    assert_eq!((other.status, other.code()), (StatusCode::CONFLICT, "idempotency_key_reused"));
    // Without the key, the same observation is a duplicate.
    let duplicate = record(&app, &admin, body).await;
    assert_eq!((duplicate.status, duplicate.code()), (StatusCode::CONFLICT, "price_exists"));
}

#[tokio::test]
async fn a_replay_reproduces_the_price_read_models_row_for_row() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    recorded(&app, &admin, carbon_eua("71", &minutes_from_now(-1))).await;
    recorded(&app, &admin, carbon_eua("69.5", &minutes_from_now(-10))).await;
    let tied = Utc::now() - TimeDelta::minutes(2);
    observe(&app, "coingecko", ETH_EUR, "3011", tied).await;
    observe(&app, "manual", ETH_EUR, "3012.5", tied).await;
    let position = observe(&app, "csv", ETH_EUR, "3010", tied).await;
    app.wait_for_projections(position).await;
    let chosen = projections::select("prices").expect("the prices projection is registered");
    projections::replay_into_schema(&app.store, &chosen, "replay_prices", position).await.expect("replay");
    for table in ["rm_prices", "rm_price_history", "rm_price_updates"] {
        let differing: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM ((TABLE public.{table} EXCEPT TABLE replay_prices.{table}) \
             UNION ALL (TABLE replay_prices.{table} EXCEPT TABLE public.{table})) d"
        ))
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        let rows: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM public.{table}")).fetch_one(&app.db.pool).await.unwrap();
        assert_eq!((differing, rows > 0), (0, true), "{table}");
    }
}

/// A feed as (base, quote, index).
type Feed = (&'static str, Currency, Option<&'static str>);
const CARBON_EUA: Feed = ("CARBON", Currency::Eur, Some("EUA"));
const ETH_EUR: Feed = ("ETH", Currency::Eur, None);
const CARBON_ETH: Feed = ("CARBON", Currency::Eth, None);

/// Records an observation from any source straight through the store (the API records only
/// `manual` ones), as the price ingest does; returns its position.
async fn observe(
    app: &TestApp,
    source: &str,
    (base, quote, index): Feed,
    price: &str,
    observed_at: DateTime<Utc>,
) -> i64 {
    let Begun::Fresh(mut uow) = app.store.begin(CommandContext::new("test"), None).await.expect("begin") else {
        unreachable!("no idempotency key")
    };
    let command = PriceFeedCommand::RecordPrice {
        base: base.to_string(),
        quote,
        index: index.map(str::to_string),
        price: price.parse().expect("a decimal"),
        source: source.to_string(),
        observed_at,
        received_at: uow.context().at,
    };
    let feed = feed_id(base, quote, index);
    uow.execute::<PriceFeed>(&feed, command, &()).await.expect("store").expect("the observation is accepted");
    let committed = uow.commit(|_| Outcome::new(201, json!({}))).await.expect("commit");
    committed.position.expect("an event was written")
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[tokio::test]
async fn the_latest_is_the_newest_observation_and_a_tie_goes_to_the_source_with_priority() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let tied = Utc::now().trunc_subsecs(0) - TimeDelta::minutes(5);
    let first = observe(&app, "coingecko", CARBON_EUA, "70", tied).await;
    let manual = observe(&app, "manual", CARBON_EUA, "71", tied).await;
    observe(&app, "csv", CARBON_EUA, "72", tied).await;
    observe(&app, "icap", CARBON_EUA, "73", tied).await;
    observe(&app, "manual", CARBON_EUA, "60", tied - TimeDelta::minutes(1)).await;
    let derived = observe(&app, "derived", CARBON_ETH, "0.0235", tied).await;
    let listed = prices(&app, &alice, derived).await;
    let carbon = feed(&listed, "CARBON", Some("EUA"));
    assert_eq!(
        (&carbon["price"], &carbon["source"], &carbon["derived"]),
        (&json!("71.00"), &json!("manual"), &json!(false))
    );
    let carbon_eth = listed.iter().find(|p| p["quote"] == "ETH").expect("CARBON/ETH is listed");
    assert_eq!(
        *carbon_eth,
        json!({"base": "CARBON", "quote": "ETH", "index": null, "price": "0.023500000000000000", "source": "derived",
            "observed_at": rfc3339(tied), "stale": false, "derived": true})
    );
    // Only observations that became their feed's latest are stream updates.
    let updates: Vec<(i64, String)> = sqlx::query_as("SELECT position, source FROM rm_price_updates ORDER BY position")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let expected = vec![(first, "coingecko".to_string()), (manual, "manual".into()), (derived, "derived".into())];
    assert_eq!(updates, expected);
}

/// Candles of CARBON/EUR/EUA from `query` (after `?`), once the read model reached `position`.
async fn history(app: &TestApp, user: &TestUser, query: &str, position: i64) -> Reply {
    let path = format!("/api/v1/prices/CARBON/EUR/history?index=EUA&min_position={position}&{query}");
    app.get(&path, &user.token).await
}

fn candle(start: DateTime<Utc>, [open, high, low, close]: [&str; 4], count: i64) -> Value {
    json!({"bucket_start": rfc3339(start), "open": open, "high": high, "low": low, "close": close, "count": count})
}

#[tokio::test]
async fn candles_give_open_high_low_close_per_utc_hour_and_day() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let day0 = (Utc::now() - TimeDelta::days(3)).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let at = |hour: i64, minute: i64| day0 + TimeDelta::hours(hour) + TimeDelta::minutes(minute);
    // Recorded out of order: open and close follow `observed_at`, not the ledger's order.
    let observations = [
        ("manual", "71", at(10, 55)),
        ("manual", "70", at(10, 5)),
        ("manual", "69", at(10, 40)),
        ("manual", "72", at(10, 20)),
        ("coingecko", "74", at(11, 10)),
        ("manual", "73", at(11, 10)),
        ("manual", "75", at(33, 0)),
    ];
    let mut position = 0;
    for (source, price, observed_at) in observations {
        position = observe(&app, source, CARBON_EUA, price, observed_at).await;
    }
    let range = format!("from={}&to={}", rfc3339(day0), rfc3339(day0 + TimeDelta::days(2)));
    let hourly = history(&app, &alice, &format!("{range}&interval=1h"), position).await;
    assert_eq!(hourly.status, StatusCode::OK, "{:?}", hourly.body);
    assert!(hourly.header("ledger-position").is_some());
    let expected = json!([
        candle(at(10, 0), ["70.00", "72.00", "69.00", "71.00"], 4),
        // Two observations at 11:10: manual ranks before coingecko, so it opens and closes.
        candle(at(11, 0), ["73.00", "74.00", "73.00", "73.00"], 2),
        candle(at(33, 0), ["75.00", "75.00", "75.00", "75.00"], 1),
    ]);
    assert_eq!(hourly.body["candles"], expected);
    assert_eq!((&hourly.body["interval"], &hourly.body["index"]), (&json!("1h"), &json!("EUA")));
    let daily = history(&app, &alice, &format!("{range}&interval=1d"), position).await;
    let expected = json!([
        candle(day0, ["70.00", "74.00", "69.00", "73.00"], 6),
        candle(day0 + TimeDelta::days(1), ["75.00", "75.00", "75.00", "75.00"], 1),
    ]);
    assert_eq!(daily.body["candles"], expected, "{:?}", daily.body);
    // A bucket cut by the range holds only the observations inside it.
    let cut = format!("from={}&to={}&interval=1h", rfc3339(at(10, 30)), rfc3339(at(11, 0)));
    let cut = history(&app, &alice, &cut, position).await;
    assert_eq!(cut.body["candles"], json!([candle(at(10, 0), ["69.00", "71.00", "69.00", "71.00"], 2)]));
    // Without a range: the last 30 days, by the hour.
    let recent = history(&app, &alice, "", position).await;
    assert_eq!(
        (recent.body["interval"].as_str(), recent.body["candles"].as_array().map(Vec::len)),
        (Some("1h"), Some(3))
    );
}

#[tokio::test]
async fn history_requests_are_validated_with_the_rule_they_break() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let position = observe(&app, "manual", CARBON_EUA, "71", Utc::now() - TimeDelta::minutes(1)).await;
    app.wait_for_projections(position).await;
    let eua = "/api/v1/prices/CARBON/EUR/history?index=EUA";
    let cases = [
        (
            format!("{eua}&from=2026-01-02T00:00:00Z&to=2026-01-02T00:00:00Z"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "range_invalid",
        ),
        (
            format!("{eua}&from=2026-01-03T00:00:00Z&to=2026-01-02T00:00:00Z"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "range_invalid",
        ),
        (
            format!("{eua}&from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "range_too_large",
        ),
        (format!("{eua}&from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=1d"), StatusCode::OK, ""),
        (format!("{eua}&interval=5m"), StatusCode::UNPROCESSABLE_ENTITY, "interval_not_supported"),
        (format!("{eua}&from=yesterday"), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        (format!("{eua}&to=2026-13-01T00:00:00Z"), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        (format!("{eua}&colour=green"), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        (format!("{eua}&min_position=-1"), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        ("/api/v1/prices/GOLD/EUR/history".to_string(), StatusCode::UNPROCESSABLE_ENTITY, "base_not_supported"),
        ("/api/v1/prices/CARBON/XYZ/history".to_string(), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        ("/api/v1/prices/CARBON/CARBON/history".to_string(), StatusCode::UNPROCESSABLE_ENTITY, "pair_invalid"),
        (
            "/api/v1/prices/CARBON/EUR/history?index=A234567890123456X".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "index_invalid",
        ),
        ("/api/v1/prices/CARBON/EUR/history".to_string(), StatusCode::NOT_FOUND, "price_feed_not_found"),
        ("/api/v1/prices/ETH/USD/history".to_string(), StatusCode::NOT_FOUND, "price_feed_not_found"),
        ("/api/v1/prices/CARBON/EUR/history?index=CCA".to_string(), StatusCode::NOT_FOUND, "price_feed_not_found"),
    ];
    for (path, status, code) in cases {
        let reply = app.get(&path, &alice.token).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{path}: {:?}", reply.body);
    }
    let anonymous = app.request(Method::GET, eua, None, None).await;
    assert_eq!((anonymous.status, anonymous.code()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
}

/// A `text/event-stream` response read by hand.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

/// One server-sent event: its id and its data as JSON.
#[derive(Debug, Clone, PartialEq)]
struct SentEvent {
    id: i64,
    data: Value,
}

impl EventStream {
    /// Opens the price stream with a bearer token in the header or, with `in_query`, as
    /// `?access_token=`.
    async fn open(app: &TestApp, token: &str, in_query: bool, last_event_id: Option<i64>) -> EventStream {
        let mut url = format!("{}/api/v1/prices/stream", app.base);
        let mut request = app.client.get(&url);
        if in_query {
            url.push_str(&format!("?access_token={token}"));
            request = app.client.get(&url);
        } else {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("stream opened");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        EventStream { response, buffer: String::new() }
    }

    /// The next event (comments skipped), failing the test if none comes within `within`.
    async fn next(&mut self, within: Duration) -> SentEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.take_buffered() {
                return event;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            let chunk = chunk.expect("an event in time").expect("stream readable").expect("stream still open");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Parses the first complete event in the buffer: `id:` and `data:` lines, `:` comments.
    fn take_buffered(&mut self) -> Option<SentEvent> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut id, mut data) = (None, String::new());
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value.parse().expect("a numeric id")),
                    "data" => data.push_str(value),
                    _ => {}
                }
            }
            if let Some(id) = id {
                return Some(SentEvent { id, data: serde_json::from_str(&data).expect("JSON data") });
            }
        }
        None
    }
}

#[tokio::test]
async fn the_stream_sends_new_latest_prices_and_resumes_after_the_last_event_id() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let mut stream = EventStream::open(&app, &alice.token, false, None).await;
    let first = recorded(&app, &admin, carbon_eua("71", &minutes_from_now(-1))).await.position();
    let sent_at = Instant::now();
    let event = stream.next(Duration::from_secs(5)).await;
    assert!(sent_at.elapsed() < Duration::from_secs(1), "arrived after {:?}", sent_at.elapsed());
    assert_eq!(event.id, first);
    let listed = prices(&app, &alice, first).await;
    assert_eq!(event.data, *feed(&listed, "CARBON", Some("EUA")), "the same object as the list");
    drop(stream);

    // While disconnected: two new latest prices, and an older observation that is only history.
    let second = recorded(&app, &admin, carbon_eua("72", &minutes_from_now(0))).await.position();
    recorded(&app, &admin, carbon_eua("69", &minutes_from_now(-30))).await;
    let eth = json!({"base": "ETH", "quote": "EUR", "price": "3012.5", "observed_at": minutes_from_now(0)});
    let third = recorded(&app, &admin, eth).await.position();
    let mut stream = EventStream::open(&app, &alice.token, true, Some(first)).await;
    let missed = [stream.next(Duration::from_secs(5)).await, stream.next(Duration::from_secs(5)).await];
    assert_eq!(missed.each_ref().map(|e| e.id), [second, third]);
    assert_eq!((&missed[0].data["price"], &missed[1].data["base"]), (&json!("72.00"), &json!("ETH")));
    // Then live ones, none twice across the handover.
    let fourth = recorded(&app, &admin, carbon_eua("73", &minutes_from_now(1))).await.position();
    let fifth = observe(&app, "coingecko", ETH_EUR, "3013", Utc::now()).await;
    let live = [stream.next(Duration::from_secs(5)).await, stream.next(Duration::from_secs(5)).await];
    assert_eq!(live.each_ref().map(|e| e.id), [fourth, fifth]);
}

#[tokio::test]
async fn the_stream_refuses_strangers_and_malformed_event_ids() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let anonymous = app.request(Method::GET, "/api/v1/prices/stream", None, None).await;
    assert_eq!((anonymous.status, anonymous.code()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let forged = app.request(Method::GET, "/api/v1/prices/stream?access_token=forged", None, None).await;
    assert_eq!((forged.status, forged.code()), (StatusCode::UNAUTHORIZED, "invalid_token"));
    for id in ["abc", "-1", "1.5"] {
        let headers = [("last-event-id", id)];
        let reply = app.request_with(Method::GET, "/api/v1/prices/stream", Some(&alice.token), None, &headers).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_last_event_id"), "{id}");
    }
    let path = "/api/v1/prices/stream?colour=green";
    let unknown = app.get(path, &alice.token).await;
    assert_eq!((unknown.status, unknown.code()), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
}
