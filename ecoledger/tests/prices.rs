//! Market prices end to end: admins record them as events, everyone reads the latest per pair,
//! and purchases read the PriceFeed aggregate itself.

mod common;

use chrono::{SecondsFormat, TimeDelta, Utc};
use command_api::routes::prices::latest_price;
use common::{Reply, TestApp, TestUser};
use domain::Currency;
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
        "observed_at": observed_at, "stale": false});
    assert_eq!(*carbon, expected);
    assert_eq!(feed(&listed, "ETH", None)["price"], "3012.50");
    let spec = app.request(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert!(spec.body["paths"]["/api/v1/prices"]["post"].is_object(), "the spec documents the routes");
    assert!(spec.body["paths"]["/api/v1/prices"]["get"].is_object());
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
    let eth = json!({"base": "ETH", "quote": "EUR", "price": "3012.5", "observed_at": minutes_from_now(0)});
    let position = recorded(&app, &admin, eth).await.position();
    app.wait_for_projections(position).await;
    let chosen = projections::select("prices").expect("the prices projection is registered");
    projections::replay_into_schema(&app.store, &chosen, "replay_prices", position).await.expect("replay");
    for table in ["rm_prices", "rm_price_history"] {
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
