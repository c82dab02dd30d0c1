//! The marketplace beyond the happy path: market prices, changing and cancelling listings,
//! compensation, expiry, a race of buyers for one listing, and a replay of what it left.

mod common;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use common::{eventually, SpawnOptions, TestApp, TestDb, TestUser};
use ecoledger::configuration::Component;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Buyers racing for one listing, each for `RACE_QUANTITY` tonnes of `RACE_LISTED`.
const RACE_BUYERS: usize = 50;
const RACE_LISTED: &str = "10";
const RACE_QUANTITY: &str = "0.5";
/// What a listing of `RACE_LISTED` can sell at `RACE_QUANTITY` a purchase.
const RACE_WINNERS: usize = 20;
/// Registrations and deposits in flight at once while setting the race up.
const SETUP_IN_FLIGHT_MAX: usize = 8;
const REPLAY_SCHEMA: &str = "replay_market";

fn dec(text: &str) -> Decimal {
    text.parse().expect("a decimal")
}

fn options(components: &[Component]) -> SpawnOptions {
    SpawnOptions { components: components.to_vec(), ..SpawnOptions::default() }
}

/// A second handle on the same test database (TestApp::spawn_on takes one by value).
fn same_db(db: &TestDb) -> TestDb {
    TestDb { name: db.name.clone(), url: db.url.clone(), pool: db.pool.clone() }
}

async fn become_seller(app: &TestApp, user: &TestUser) {
    let body = json!({"is_seller": true, "is_buyer": true});
    let path = format!("/api/v1/users/{}/profile", user.id);
    let reply = app.request(Method::PUT, &path, Some(&user.token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

/// A registered seller holding `carbon` tonnes.
async fn seller_with(app: &TestApp, admin: &TestUser, username: &str, carbon: &str) -> TestUser {
    let seller = app.register(username).await;
    become_seller(app, &seller).await;
    app.deposit(admin, seller.wallet("CARBON"), carbon).await;
    seller
}

fn credit() -> Value {
    json!({"project_id": "VCS-1234", "registry": "Verra", "vintage": 2024})
}

fn fixed(quantity: &str, unit_price: &str) -> Value {
    json!({"quantity": quantity, "pricing": {"kind": "fixed", "unit_price": unit_price, "currency": "EUR"}, "credit": credit()})
}

fn market(quantity: &str, premium_bps: i32) -> Value {
    json!({
        "quantity": quantity,
        "pricing": {"kind": "market", "index": "EUA", "currency": "EUR", "premium_bps": premium_bps},
        "credit": credit(),
    })
}

/// Lists `terms` as `seller`, asserting 201; returns the listing id.
async fn list(app: &TestApp, seller: &TestUser, terms: Value) -> String {
    let reply = app.post("/api/v1/announcements", &seller.token, terms).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body["id"].as_str().expect("listing id").to_string()
}

async fn buy(app: &TestApp, buyer: &TestUser, listing: &str, quantity: &str, max_total: &str) -> common::Reply {
    let order = json!({"announcement_id": listing, "quantity": quantity, "max_total": max_total});
    app.post("/api/v1/purchases", &buyer.token, order).await
}

async fn patch(app: &TestApp, who: &TestUser, listing: &str, body: Value) -> common::Reply {
    app.request(Method::PATCH, &format!("/api/v1/announcements/{listing}"), Some(&who.token), Some(body)).await
}

async fn cancel(app: &TestApp, who: &TestUser, listing: &str) -> common::Reply {
    app.request(Method::DELETE, &format!("/api/v1/announcements/{listing}"), Some(&who.token), None).await
}

/// (status, code) of a reply, for one-line comparisons.
fn outcome(reply: &common::Reply) -> (u16, String) {
    (reply.status.as_u16(), reply.code().to_string())
}

/// A wallet's view once the read models reached the head: (balance, held).
async fn wallet(app: &TestApp, user: &TestUser, currency: &str) -> (String, String) {
    let head = app.head_position().await;
    let path = format!("/api/v1/wallets/{}?min_position={head}", user.wallet(currency));
    let reply = app.get(&path, &user.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let text = |field: &str| reply.body[field].as_str().expect("an amount").to_string();
    (text("balance"), text("held"))
}

/// A listing's view once the read models reached the head.
async fn listing_view(app: &TestApp, user: &TestUser, listing: &str) -> Value {
    let head = app.head_position().await;
    let reply = app.get(&format!("/api/v1/announcements/{listing}?min_position={head}"), &user.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

/// Polls a purchase until it is no longer pending.
async fn settled(app: &TestApp, user: &TestUser, purchase: &str) -> Value {
    eventually("the purchase to settle", || async {
        let reply = app.get(&format!("/api/v1/purchases/{purchase}"), &user.token).await;
        (reply.status == StatusCode::OK && reply.body["status"] != "pending").then_some(reply.body)
    })
    .await
}

async fn scalar_decimal(pool: &PgPool, sql: &str) -> Decimal {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

async fn post_price(app: &TestApp, admin: &TestUser, price: &str, observed_at: DateTime<Utc>) {
    let body = json!({"base": "CARBON", "quote": "EUR", "index": "EUA", "price": price, "observed_at": observed_at.to_rfc3339()});
    let reply = app.post("/api/v1/prices", &admin.token, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

// ---------------------------------------------------------------------------------------------
// 1. Market pricing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_market_listing_is_priced_from_the_latest_fresh_index_price_plus_its_premium() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let seller = seller_with(&app, &admin, "seller", "10").await;
    let buyer = app.register("buyer").await;
    app.deposit(&admin, buyer.wallet("EUR"), "100").await;
    let listing = list(&app, &seller, market("10", 500)).await;

    let repriced = patch(&app, &seller, &listing, json!({"unit_price": "10.00"})).await;
    assert_eq!(outcome(&repriced), (422, "not_fixed_price".to_string()), "{:?}", repriced.body);
    let no_price = buy(&app, &buyer, &listing, "2", "100").await;
    assert_eq!(outcome(&no_price), (422, "price_unavailable".to_string()), "{:?}", no_price.body);

    // Older than ECOLEDGER_PRICE_MAX_AGE_SECS (an hour in tests).
    post_price(&app, &admin, "9.00", Utc::now().trunc_subsecs(0) - Duration::hours(2)).await;
    let stale = buy(&app, &buyer, &listing, "2", "100").await;
    assert_eq!(outcome(&stale), (422, "price_stale".to_string()), "{:?}", stale.body);

    // 10.10 × 1.05 = 10.605: half-even gives 10.60 (half-up would give 10.61).
    let observed_at = Utc::now().trunc_subsecs(0) - Duration::seconds(30);
    post_price(&app, &admin, "10.10", observed_at).await;
    let bought = buy(&app, &buyer, &listing, "2", "100").await;
    assert_eq!(bought.status, StatusCode::ACCEPTED, "{:?}", bought.body);
    let terms = |body: &Value| {
        ["unit_price", "subtotal", "fee", "total", "price_source"]
            .map(|field| body[field].as_str().unwrap_or("").to_string())
    };
    let expected = ["10.60", "21.20", "0.21", "21.41", "manual"].map(str::to_string);
    assert_eq!(terms(&bought.body), expected);
    let id = bought.body["id"].as_str().unwrap().to_string();
    let view = settled(&app, &buyer, &id).await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(terms(&view), expected);
    let recorded: DateTime<Utc> = view["price_observed_at"].as_str().expect("an observation time").parse().unwrap();
    assert_eq!(recorded, observed_at);
    assert_eq!(wallet(&app, &buyer, "EUR").await.0, "78.59");
    assert_eq!(wallet(&app, &seller, "EUR").await.0, "21.20");
}

// ---------------------------------------------------------------------------------------------
// 2. Changing and cancelling a listing
// ---------------------------------------------------------------------------------------------

/// Runs without the saga worker, so purchases stay pending and their quantities reserved.
#[tokio::test]
async fn a_seller_resizes_reprices_and_cancels_a_listing_within_what_is_committed_and_reserved_sales_still_settle() {
    let app = TestApp::spawn_with(options(&[Component::Api, Component::Relay, Component::Projections])).await;
    let admin = app.admin().await;
    let seller = seller_with(&app, &admin, "seller", "10").await;
    let buyer = app.register("buyer").await;
    app.deposit(&admin, buyer.wallet("EUR"), "100").await;
    let listing = list(&app, &seller, fixed("6", "10.00")).await;
    assert_eq!(wallet(&app, &seller, "CARBON").await, ("10.000".into(), "6.000".into()));

    let grown = patch(&app, &seller, &listing, json!({"quantity": "8"})).await;
    assert_eq!(grown.status, StatusCode::OK, "{:?}", grown.body);
    assert_eq!(wallet(&app, &seller, "CARBON").await, ("10.000".into(), "8.000".into()));
    let too_big = patch(&app, &seller, &listing, json!({"quantity": "10.001"})).await;
    assert_eq!(outcome(&too_big), (422, "insufficient_funds".to_string()), "{:?}", too_big.body);

    let first = buy(&app, &buyer, &listing, "2", "100").await;
    assert_eq!((first.status, first.body["subtotal"].as_str()), (StatusCode::ACCEPTED, Some("20.00")));
    let below = patch(&app, &seller, &listing, json!({"quantity": "1.999"})).await;
    assert_eq!(outcome(&below), (422, "quantity_below_committed".to_string()), "{:?}", below.body);
    let repriced = patch(&app, &seller, &listing, json!({"unit_price": "11.00"})).await;
    assert_eq!(repriced.status, StatusCode::OK, "{:?}", repriced.body);
    let second = buy(&app, &buyer, &listing, "1", "100").await;
    assert_eq!((second.status, second.body["unit_price"].as_str()), (StatusCode::ACCEPTED, Some("11.00")));
    assert_eq!(second.body["subtotal"], "11.00");
    let exact = patch(&app, &seller, &listing, json!({"quantity": "3"})).await;
    assert_eq!(exact.status, StatusCode::OK, "the quantity may equal what is committed: {:?}", exact.body);
    assert_eq!((exact.body["reserved"].as_str(), exact.body["available"].as_str()), (Some("3.000"), Some("0.000")));
    let shrunk = patch(&app, &seller, &listing, json!({"quantity": "5"})).await;
    assert_eq!(shrunk.status, StatusCode::OK, "{:?}", shrunk.body);
    assert_eq!(wallet(&app, &seller, "CARBON").await, ("10.000".into(), "5.000".into()));

    for stranger in [&buyer, &admin] {
        let reply = patch(&app, stranger, &listing, json!({"quantity": "6"})).await;
        assert_eq!(outcome(&reply), (404, "announcement_not_found".to_string()), "{}", stranger.username);
    }
    let by_buyer = cancel(&app, &buyer, &listing).await;
    assert_eq!(outcome(&by_buyer), (404, "announcement_not_found".to_string()));

    let cancelled = cancel(&app, &seller, &listing).await;
    assert_eq!((cancelled.status, cancelled.body["status"].as_str()), (StatusCode::OK, Some("cancelled")));
    assert_eq!(
        wallet(&app, &seller, "CARBON").await,
        ("10.000".into(), "3.000".into()),
        "only the reserved stays held"
    );
    let view = listing_view(&app, &seller, &listing).await;
    assert_eq!((view["status"].as_str(), view["available"].as_str()), (Some("cancelled"), Some("0.000")));
    let refused = buy(&app, &buyer, &listing, "1", "100").await;
    assert_eq!(outcome(&refused), (422, "announcement_not_active".to_string()), "{:?}", refused.body);
    let again = patch(&app, &seller, &listing, json!({"quantity": "6"})).await;
    assert_eq!(outcome(&again), (422, "announcement_not_active".to_string()));

    let idle = list(&app, &seller, fixed("1", "10.00")).await;
    assert_eq!(wallet(&app, &seller, "CARBON").await.1, "4.000");
    assert_eq!(cancel(&app, &seller, &idle).await.status, StatusCode::OK);
    assert_eq!(wallet(&app, &seller, "CARBON").await.1, "3.000", "nothing in flight: the whole hold is released");

    // The purchases reserved before the cancellation still settle from what stayed held.
    let _worker = TestApp::spawn_on(same_db(&app.db), app.prefix.clone(), options(&[Component::Sagas])).await;
    for reply in [&first, &second] {
        let view = settled(&app, &buyer, reply.body["id"].as_str().unwrap()).await;
        assert_eq!(view["status"], "completed", "{view}");
    }
    let view = listing_view(&app, &seller, &listing).await;
    let figures = ["status", "sold", "reserved", "available"].map(|f| view[f].as_str().unwrap_or("").to_string());
    assert_eq!(figures, ["cancelled", "3.000", "0.000", "0.000"].map(str::to_string));
    assert_eq!(wallet(&app, &seller, "CARBON").await, ("7.000".into(), "0.000".into()));
    assert_eq!(wallet(&app, &seller, "EUR").await, ("31.00".into(), "0.00".into()));
    assert_eq!(wallet(&app, &buyer, "EUR").await, ("68.69".into(), "0.00".into()));
    assert_eq!(wallet(&app, &buyer, "CARBON").await, ("3.000".into(), "0.000".into()));
}

// ---------------------------------------------------------------------------------------------
// 3. Compensation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_purchase_whose_buyer_wallet_froze_before_settlement_fails_and_releases_everything() {
    let app = TestApp::spawn_with(options(&[Component::Api, Component::Relay, Component::Projections])).await;
    let admin = app.admin().await;
    let seller = seller_with(&app, &admin, "seller", "10").await;
    let buyer = app.register("buyer").await;
    app.deposit(&admin, buyer.wallet("EUR"), "100").await;
    let listing = list(&app, &seller, fixed("10", "12.50")).await;
    let bought = buy(&app, &buyer, &listing, "4", "100").await;
    assert_eq!((bought.status, bought.body["total"].as_str()), (StatusCode::ACCEPTED, Some("50.50")));
    let id = bought.body["id"].as_str().unwrap().to_string();
    let freeze = json!({"reason": "compliance review"});
    let frozen = app.post(&format!("/api/v1/wallets/{}/freeze", buyer.wallet("EUR")), &admin.token, freeze).await;
    assert_eq!(frozen.status, StatusCode::OK, "{:?}", frozen.body);
    assert_eq!(wallet(&app, &buyer, "EUR").await, ("100.00".into(), "50.50".into()));
    assert_eq!(listing_view(&app, &seller, &listing).await["available"], "6.000");
    let pending = app.get(&format!("/api/v1/purchases/{id}"), &buyer.token).await;
    assert_eq!(pending.body["status"], "pending", "no saga worker runs yet");

    let _worker = TestApp::spawn_on(same_db(&app.db), app.prefix.clone(), options(&[Component::Sagas])).await;
    let view = settled(&app, &buyer, &id).await;

    assert_eq!((view["status"].as_str(), view["reason"].as_str()), (Some("failed"), Some("wallet_frozen")), "{view}");
    let shown = listing_view(&app, &seller, &listing).await;
    let figures = ["status", "sold", "reserved", "available"].map(|f| shown[f].as_str().unwrap_or("").to_string());
    assert_eq!(figures, ["active", "0.000", "0.000", "10.000"].map(str::to_string));
    assert_eq!(wallet(&app, &buyer, "EUR").await, ("100.00".into(), "0.00".into()));
    assert_eq!(wallet(&app, &buyer, "CARBON").await, ("0.000".into(), "0.000".into()));
    assert_eq!(wallet(&app, &seller, "EUR").await, ("0.00".into(), "0.00".into()));
    assert_eq!(wallet(&app, &seller, "CARBON").await, ("10.000".into(), "10.000".into()));
    let moved = "SELECT COALESCE(sum(abs(balance)), 0) FROM rm_system_accounts WHERE account IN ('transit', 'fees')";
    assert_eq!(scalar_decimal(&app.db.pool, moved).await, Decimal::ZERO, "nothing in transit, no fee");
    let saga = format!("SELECT count(*) FROM sagas WHERE saga_id = '{id}' AND status = 'failed'");
    assert_eq!(count(&app.db.pool, &saga).await, 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_listing_expires_at_its_time_and_releases_the_sellers_unsold_hold() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let seller = seller_with(&app, &admin, "seller", "10").await;
    let buyer = app.register("buyer").await;
    app.deposit(&admin, buyer.wallet("EUR"), "100").await;
    let mut terms = fixed("5", "10.00");
    terms["expires_at"] = json!((Utc::now() + Duration::seconds(2)).to_rfc3339());
    let listing = list(&app, &seller, terms).await;
    let bought = buy(&app, &buyer, &listing, "1", "100").await;
    assert_eq!(bought.status, StatusCode::ACCEPTED, "{:?}", bought.body);
    let purchase = bought.body["id"].as_str().unwrap().to_string();
    assert_eq!(settled(&app, &buyer, &purchase).await["status"], "completed");

    let expired = eventually("the listing to expire", || async {
        let reply = app.get(&format!("/api/v1/announcements/{listing}"), &seller.token).await;
        (reply.body["status"] == "expired").then_some(reply.body)
    })
    .await;

    assert_eq!((expired["sold"].as_str(), expired["available"].as_str()), (Some("1.000"), Some("0.000")));
    assert_eq!(wallet(&app, &seller, "CARBON").await, ("9.000".into(), "0.000".into()));
    let refused = buy(&app, &buyer, &listing, "1", "100").await;
    assert_eq!(outcome(&refused), (422, "announcement_not_active".to_string()), "{:?}", refused.body);
    let saga = format!("SELECT count(*) FROM sagas WHERE saga_id = '{listing}' AND status = 'completed'");
    assert_eq!(count(&app.db.pool, &saga).await, 1, "the expiry saga closed");
}

// ---------------------------------------------------------------------------------------------
// 5. Fifty buyers, one listing
// ---------------------------------------------------------------------------------------------

struct Race {
    listing: String,
    buyers: Vec<TestUser>,
    head: i64,
}

/// Lists `RACE_LISTED` tonnes and lets `RACE_BUYERS` buyers race for `RACE_QUANTITY` each;
/// returns once every purchase saga ended and the read models reached the head.
async fn race(app: &TestApp) -> Race {
    let admin = app.admin().await;
    let seller = seller_with(app, &admin, "seller", RACE_LISTED).await;
    // Setup runs a few at a time: 50 logins at once can wait past the pool's acquire limit on
    // a small machine and answer 503 database_unavailable, which is not what this test is about.
    let admin = &admin;
    let buyers: Vec<TestUser> = futures::stream::iter(0..RACE_BUYERS)
        .map(|i| async move {
            let buyer = app.register(&format!("buyer{i}")).await;
            app.deposit(admin, buyer.wallet("EUR"), "10").await;
            buyer
        })
        .buffer_unordered(SETUP_IN_FLIGHT_MAX)
        .collect()
        .await;
    let listing = list(app, &seller, fixed(RACE_LISTED, "12.50")).await;

    let replies = futures::future::join_all(buyers.iter().map(|b| buy(app, b, &listing, RACE_QUANTITY, "10"))).await;

    let answers: Vec<(u16, String)> = replies.iter().map(outcome).collect();
    let accepted = answers.iter().filter(|a| a.0 == 202).count();
    let unexpected: Vec<_> = answers.iter().filter(|a| a.0 != 202 && a.1 != "insufficient_quantity").collect();
    assert!(unexpected.is_empty(), "answers other than 202 or insufficient_quantity: {unexpected:?}");
    assert_eq!(accepted, RACE_WINNERS, "exactly what the listing holds is reserved");
    let pool = app.db.pool.clone();
    eventually("every purchase saga to end", || async {
        let open = count(&pool, "SELECT count(*) FROM sagas WHERE kind = 'purchase' AND status = 'pending'").await;
        (open == 0).then_some(())
    })
    .await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    Race { listing, buyers, head }
}

#[tokio::test]
async fn fifty_buyers_racing_for_one_listing_never_oversell_it_and_the_books_balance() {
    let app = TestApp::spawn().await;
    let Race { listing, buyers, head } = race(&app).await;
    let pool = &app.db.pool;

    let (quantity, sold, reserved): (Decimal, Decimal, Decimal) =
        sqlx::query_as("SELECT quantity, sold, reserved FROM rm_listings WHERE listing_id = $1::uuid")
            .bind(&listing)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(sold <= quantity, "sold {sold} of {quantity}");
    assert_eq!((sold, reserved), (dec(RACE_LISTED), Decimal::ZERO), "every accepted purchase settled");
    let completed =
        scalar_decimal(pool, "SELECT COALESCE(sum(quantity), 0) FROM rm_purchases WHERE status = 'completed'");
    assert_eq!(completed.await, sold);
    assert_eq!(count(pool, "SELECT count(*) FROM rm_purchases WHERE status <> 'completed'").await, 0);
    assert_eq!(count(pool, "SELECT count(*) FROM sagas WHERE kind = 'purchase' AND status <> 'completed'").await, 0);
    let negative =
        count(pool, "SELECT count(*) FROM rm_wallets WHERE balance < 0 OR held < 0 OR balance - held < 0").await;
    assert_eq!(negative, 0, "a negative balance, hold or available amount");
    let overdrawn = count(pool, "SELECT count(*) FROM rm_listings WHERE quantity - sold - reserved < 0").await;
    assert_eq!(overdrawn, 0);

    let ids: Vec<Uuid> = buyers.iter().map(|b| b.id).collect();
    let bought: Decimal = sqlx::query_scalar(
        "SELECT COALESCE(sum(balance), 0) FROM rm_wallets WHERE currency = 'CARBON' AND owner_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(bought, sold, "buyers hold exactly what was sold");

    let admin_token = app.login("admin", common::PASSWORD).await;
    let report = app.get(&format!("/api/v1/reports/trial-balance?min_position={head}"), &admin_token).await;
    assert_eq!(report.status, StatusCode::OK, "{:?}", report.body);
    assert_eq!(report.body["balanced"], true, "{}", report.body);
    let currencies = report.body["currencies"].as_object().expect("currencies");
    for (code, figures) in currencies {
        assert_eq!(dec(figures["total"].as_str().unwrap()), Decimal::ZERO, "{code} total: {figures}");
    }
    let fees_charged = scalar_decimal(pool, "SELECT sum(fee) FROM rm_purchases WHERE status = 'completed'").await;
    assert_eq!(fees_charged, dec("1.20"), "twenty fees of 0.06");
    let fees =
        scalar_decimal(pool, "SELECT balance FROM rm_system_accounts WHERE currency = 'EUR' AND account = 'fees'");
    assert_eq!(fees.await, fees_charged);
    let reported = currencies["EUR"]["accounts"].as_array().unwrap().iter().find(|a| a["account"] == "system:fees");
    assert_eq!(reported.map(|a| dec(a["balance"].as_str().unwrap())), Some(fees_charged), "{}", currencies["EUR"]);
    let transit =
        scalar_decimal(pool, "SELECT COALESCE(sum(abs(balance)), 0) FROM rm_system_accounts WHERE account = 'transit'");
    assert_eq!(transit.await, Decimal::ZERO, "nothing left in transit");
}

// ---------------------------------------------------------------------------------------------
// 6. Replay
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_replay_after_the_race_reproduces_every_read_model_row_for_row() {
    let app = TestApp::spawn().await;
    let Race { head, .. } = race(&app).await;
    let pool = app.db.pool.clone();
    eventually("the relay to publish up to the head", || async {
        let published = count(&pool, "SELECT published_position FROM relay_state WHERE id = 1").await;
        (published >= head).then_some(())
    })
    .await;

    let all = projections::all();
    let report = projections::replay_into_schema(&app.store, &all, REPLAY_SCHEMA, head).await.expect("replay");

    assert_eq!(report.position, head, "the replay reached the head");
    for projection in &all {
        for table in projection.tables() {
            let rows = count(&pool, &format!("SELECT count(*) FROM public.{table}")).await;
            for (a, b) in [("public", REPLAY_SCHEMA), (REPLAY_SCHEMA, "public")] {
                let sample: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT to_jsonb(d)::text FROM (SELECT * FROM {a}.{table} EXCEPT ALL SELECT * FROM {b}.{table}) d \
                     LIMIT 3"
                ))
                .fetch_all(&pool)
                .await
                .expect("compare");
                assert!(sample.is_empty(), "{table} ({rows} live rows): rows in {a} but not in {b}: {sample:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. A crash with purchases pending
// ---------------------------------------------------------------------------------------------

/// Purchases accepted (buyer's total held, quantity reserved) but not yet settled when the
/// process is SIGKILLed.
const CRASH_PURCHASES: usize = 6;

/// Sends one purchase of 1 t to a server started as a child process; returns its id.
async fn buy_over(client: &reqwest::Client, base: &str, buyer: &TestUser, listing: &str) -> String {
    let order = json!({"announcement_id": listing, "quantity": "1", "max_total": "3.00"});
    let reply = client.post(format!("{base}/api/v1/purchases")).bearer_auth(&buyer.token).json(&order).send().await;
    let reply = reply.expect("purchase sent");
    let status = reply.status();
    let body: Value = reply.json().await.expect("a JSON answer");
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().expect("purchase id").to_string()
}

#[tokio::test]
async fn purchases_left_pending_by_a_killed_process_settle_exactly_once_after_restart() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let seller = seller_with(&app, &admin, "sally", "10").await;
    let listing = list(&app, &seller, fixed("10", "2.00")).await;
    let buyers = [app.register("bob").await, app.register("carol").await];
    for buyer in &buyers {
        app.deposit(&admin, buyer.wallet("EUR"), "100").await;
    }
    let (db, prefix) = app.stop();

    // A process without saga workers takes the purchases, then dies with all of them pending.
    let (mut child, base) = common::spawn_binary(&db, &prefix, "api,relay,projections").await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for k in 0..CRASH_PURCHASES {
        let buyer = &buyers[k % buyers.len()];
        ids.push((buyer, buy_over(&client, &base, buyer, &listing).await));
    }
    let pending = "SELECT count(*) FROM sagas WHERE kind = 'purchase' AND status = 'pending'";
    assert_eq!(count(&db.pool, pending).await, CRASH_PURCHASES as i64);
    child.kill().await.expect("SIGKILL delivered");

    let app = TestApp::spawn_on(db, prefix, SpawnOptions::default()).await;
    for (buyer, id) in &ids {
        assert_eq!(settled(&app, buyer, id).await["status"], "completed", "purchase {id}");
    }
    let completed = "SELECT count(*) FROM events WHERE event_type = 'PurchaseCompleted'";
    assert_eq!(count(&app.db.pool, completed).await, CRASH_PURCHASES as i64, "each purchase settled once");
    // Each purchase: 2.00 to the seller, 0.02 fee (1 %), 1 t to the buyer.
    let sold = CRASH_PURCHASES as i64;
    assert_eq!(wallet(&app, &seller, "EUR").await, (format!("{}.00", 2 * sold), "0.00".to_string()));
    assert_eq!(wallet(&app, &seller, "CARBON").await.0, format!("{}.000", 10 - sold));
    for buyer in &buyers {
        let bought = sold / buyers.len() as i64;
        let spent = Decimal::from(bought) * dec("2.02");
        assert_eq!(wallet(&app, buyer, "EUR").await, ((dec("100.00") - spent).to_string(), "0.00".to_string()));
        assert_eq!(wallet(&app, buyer, "CARBON").await.0, format!("{bought}.000"));
    }
    let transit = "SELECT COALESCE(sum(balance), 0) FROM rm_system_accounts WHERE account = 'transit'";
    assert_eq!(scalar_decimal(&app.db.pool, transit).await, Decimal::ZERO, "nothing is left in transit");
}
