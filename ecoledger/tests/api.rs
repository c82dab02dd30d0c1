//! The REST API end to end over real HTTP: a user's whole session, every class of bad input
//! (each answering its status and code and changing nothing), roles and the audit routes, and
//! the operational endpoints (DESIGN.md sections 3, 4 and 6).

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{Reply, TestApp, TestUser, JWT_SECRET, PASSWORD};
use domain::user::Role;
use ecoledger::configuration::Component;
use ecoledger::startup;
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Sends a request built by hand (raw bodies, forms, odd headers) and reads it like the harness.
async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body read");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, body }
}

/// A GET answered as text (metrics, docs), with its status and content type.
async fn get_text(app: &TestApp, path: &str) -> (StatusCode, String, String) {
    let response = app.client.get(format!("{}{path}", app.base)).send().await.expect("request sent");
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, content_type, response.text().await.expect("body read"))
}

/// Asserts an RFC 9457 problem document with `status` and `code`.
#[track_caller]
fn assert_problem(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{code}: {:?}", reply.body);
    assert_eq!(reply.code(), code, "{:?}", reply.body);
    assert_eq!(reply.body["status"], status, "{:?}", reply.body);
    assert_eq!(reply.header("content-type").as_deref(), Some("application/problem+json"));
}

fn transaction_id(reply: &Reply) -> Uuid {
    reply.body["transaction_id"].as_str().expect("a transaction id").parse().expect("uuid")
}

async fn deposit_with(app: &TestApp, admin: &TestUser, wallet: Uuid, amount: &str, reference: &str) -> Reply {
    app.post(
        &format!("/api/v1/wallets/{wallet}/deposits"),
        &admin.token,
        json!({"amount": amount, "reference": reference}),
    )
    .await
}

async fn withdraw(app: &TestApp, user: &TestUser, wallet: Uuid, amount: &str, reference: &str) -> Reply {
    let body = json!({"amount": amount, "reference": reference, "destination": "IBAN DE89 3704 0044 0532 0130 00"});
    app.post(&format!("/api/v1/wallets/{wallet}/withdrawals"), &user.token, body).await
}

/// Completes (`reason` None) or fails a withdrawal as `admin`.
async fn settle(app: &TestApp, admin: &TestUser, withdrawal: Uuid, reason: Option<&str>) -> Reply {
    match reason {
        None => app.post(&format!("/api/v1/withdrawals/{withdrawal}/complete"), &admin.token, json!({})).await,
        Some(reason) => {
            app.post(&format!("/api/v1/withdrawals/{withdrawal}/fail"), &admin.token, json!({"reason": reason})).await
        }
    }
}

async fn reverse(app: &TestApp, admin: &TestUser, transaction: Uuid) -> Reply {
    app.post(
        &format!("/api/v1/transactions/{transaction}/reversal"),
        &admin.token,
        json!({"reason": "booked in error"}),
    )
    .await
}

/// A query answered once its read model reached `position` (asserting 200).
async fn get_at(app: &TestApp, token: &str, path: &str, position: i64) -> Value {
    let separator = if path.contains('?') { '&' } else { '?' };
    let reply = app.get(&format!("{path}{separator}min_position={position}"), token).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    let reached: i64 = reply.header("ledger-position").expect("a Ledger-Position header").parse().expect("a number");
    assert!(reached >= position, "{path} answered at {reached}, before {position}");
    reply.body
}

async fn wallet_at(app: &TestApp, token: &str, wallet: Uuid, position: i64) -> Value {
    get_at(app, token, &format!("/api/v1/wallets/{wallet}"), position).await
}

/// What a refused request must leave alone: the number of events and, once projected, the
/// balances of `wallets`.
async fn ledger_state(app: &TestApp, admin: &TestUser, wallets: &[Uuid]) -> (i64, Vec<String>) {
    let head = app.head_position().await;
    let mut balances = Vec::new();
    for wallet in wallets {
        let view = wallet_at(app, &admin.token, *wallet, head).await;
        balances.push(view["balance"].as_str().expect("a balance").to_string());
    }
    (app.event_count().await, balances)
}

/// Every item of a cursor-paged list, following `next_cursor` with pages of `limit`; also
/// returns how many pages it took.
async fn all_pages(app: &TestApp, token: &str, path: &str, limit: u32) -> (Vec<Value>, usize) {
    let separator = if path.contains('?') { '&' } else { '?' };
    let (mut items, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let reply = app.get(&url, token).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {:?}", reply.body);
        let page = reply.body["items"].as_array().expect("items").clone();
        assert!(page.len() <= limit as usize, "a page longer than its limit");
        items.extend(page);
        pages += 1;
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (items, pages),
        }
    }
}

/// The whole security log, as an auditor or admin reads it.
async fn security_log(app: &TestApp, reader: &TestUser) -> Vec<Value> {
    all_pages(app, &reader.token, "/api/v1/audit/security", 200).await.0
}

fn strings(items: &[Value], field: &str) -> Vec<String> {
    items.iter().map(|item| item[field].as_str().unwrap_or_default().to_string()).collect()
}

/// The strings of a JSON array, sorted (role lists come in no promised order).
fn sorted(value: &Value) -> Vec<String> {
    let mut items: Vec<String> =
        value.as_array().expect("an array").iter().map(|v| v.as_str().expect("a string").to_string()).collect();
    items.sort();
    items
}

fn decimal(value: &Value) -> Decimal {
    value.as_str().expect("a decimal string").parse().expect("a decimal")
}

/// A token signed with `secret` for `claims`.
fn signed_token(claims: &Value, secret: &str) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
        .expect("token signed")
}

fn claims_for(user: Uuid, roles: &[&str], lifetime_secs: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": user, "roles": roles, "iat": now.min(now + lifetime_secs) - 60, "exp": now + lifetime_secs})
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A second API (no relay, no projections) over the same database, whose `?min_position=`
/// waits only `wait_ms`; its tasks stop when it is dropped.
struct ExtraApi {
    base: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ExtraApi {
    async fn start(app: &TestApp, wait_ms: u64) -> ExtraApi {
        let mut settings = app.settings.clone();
        settings.min_position_wait_ms = wait_ms;
        settings.components = vec![Component::Api];
        let server = startup::start(&settings).await.expect("a second API starts");
        ExtraApi { base: format!("http://{}", server.address), tasks: server.tasks }
    }
}

impl Drop for ExtraApi {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The full session
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_answers_201_with_the_user_four_empty_wallets_a_position_and_a_location() {
    let app = TestApp::spawn().await;
    let body =
        json!({"username": "dora", "email": "Dora@Example.org", "password": PASSWORD, "display_name": "Dora D."});
    let reply = app.request(Method::POST, "/api/v1/users", None, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let id = reply.body["user"]["id"].as_str().expect("id").to_string();
    assert_eq!(reply.header("location"), Some(format!("/api/v1/users/{id}")));
    let position = reply.position();
    assert!(position > 0);
    assert_eq!(reply.header("ledger-position"), Some(position.to_string()));
    assert_eq!(reply.body["user"]["roles"], json!(["user"]));
    let wallets = reply.body["wallets"].as_array().expect("wallets");
    assert_eq!(strings(wallets, "currency"), ["EUR", "USD", "ETH", "CARBON"]);
    assert_eq!(strings(wallets, "balance"), ["0.00", "0.00", "0.000000000000000000", "0.000"]);

    let token = app.login("dora", PASSWORD).await;
    let me = get_at(&app, &token, "/api/v1/users/me", position).await;
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["username"], "dora");
    assert_eq!(me["email"], "Dora@Example.org");
    assert_eq!(me["display_name"], "Dora D.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_issued_for_form_encoded_and_for_json_credentials() {
    let app = TestApp::spawn().await;
    let erin = app.register("erin").await;
    let url = format!("{}/api/v1/auth/token", app.base);
    let form = [("grant_type", "password"), ("username", "erin"), ("password", PASSWORD)];
    let by_form = send(app.client.post(&url).form(&form)).await;
    let by_json = send(app.client.post(&url).json(&json!({"username": "ERIN", "password": PASSWORD}))).await;
    for reply in [by_form, by_json] {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.body["token_type"], "bearer");
        assert_eq!(reply.body["expires_in"], 3600);
        assert_eq!(reply.body["user_id"], erin.id.to_string());
        assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
        let token = reply.body["access_token"].as_str().expect("a token");
        let me = app.get("/api/v1/users/me", token).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["id"], erin.id.to_string());
    }
    let unsupported = send(app.client.post(&url).form(&[
        ("grant_type", "client_credentials"),
        ("username", "erin"),
        ("password", PASSWORD),
    ]))
    .await;
    assert_problem(&unsupported, 400, "unsupported_grant_type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_answer_the_same_401_whether_or_not_the_user_exists() {
    let app = TestApp::spawn().await;
    app.register("erin").await;
    let wrong_password = app
        .request(
            Method::POST,
            "/api/v1/auth/token",
            None,
            Some(json!({"username": "erin", "password": "not-the-password"})),
        )
        .await;
    let unknown_user = app
        .request(Method::POST, "/api/v1/auth/token", None, Some(json!({"username": "nobody", "password": PASSWORD})))
        .await;
    assert_problem(&wrong_password, 401, "invalid_credentials");
    assert_problem(&unknown_user, 401, "invalid_credentials");
    assert_eq!(wrong_password.body, unknown_user.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_answers_201_with_the_balance_its_position_and_a_location() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let reply = deposit_with(&app, &admin, wallet, "100", "SEPA-0001").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let id = transaction_id(&reply);
    assert_eq!(reply.header("location"), Some(format!("/api/v1/transactions/{id}")));
    assert_eq!(reply.position(), app.head_position().await, "the deposit is the newest event");
    assert_eq!(reply.header("ledger-position"), Some(reply.position().to_string()));
    assert_eq!(reply.body["kind"], "deposit");
    assert_eq!(reply.body["status"], "completed");
    assert_eq!(reply.body["amount"], "100.00");
    assert_eq!(reply.body["balance"], "100.00");
    assert_eq!(reply.body["available"], "100.00");

    let seen = get_at(&app, &alice.token, &format!("/api/v1/transactions/{id}"), reply.position()).await;
    assert_eq!(seen["reference"], "SEPA-0001");
    assert_eq!(seen["position"], reply.position());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_takes_the_funds_at_once_and_completes_or_fails_back_into_the_wallet() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    app.deposit(&admin, wallet, "100").await;

    let first = withdraw(&app, &alice, wallet, "30", "payout-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let first_id = transaction_id(&first);
    assert_eq!(first.header("location"), Some(format!("/api/v1/transactions/{first_id}")));
    assert_eq!((first.body["status"].as_str(), first.body["kind"].as_str()), (Some("pending"), Some("withdrawal")));
    assert_eq!((first.body["balance"].as_str(), first.body["available"].as_str()), (Some("70.00"), Some("70.00")));
    let view = wallet_at(&app, &alice.token, wallet, first.position()).await;
    assert_eq!((view["balance"].as_str(), view["available"].as_str()), (Some("70.00"), Some("70.00")));
    let pending = get_at(&app, &alice.token, &format!("/api/v1/transactions/{first_id}"), first.position()).await;
    assert_eq!(pending["status"], "pending");

    let completed = settle(&app, &admin, first_id, None).await;
    assert_eq!(completed.status, StatusCode::OK, "{:?}", completed.body);
    assert_eq!(completed.body["status"], "completed");
    let done = get_at(&app, &alice.token, &format!("/api/v1/transactions/{first_id}"), completed.position()).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(wallet_at(&app, &alice.token, wallet, completed.position()).await["balance"], "70.00");

    let second = withdraw(&app, &alice, wallet, "20", "payout-2").await;
    assert_eq!(second.status, StatusCode::CREATED, "{:?}", second.body);
    assert_eq!(second.body["balance"], "50.00");
    let second_id = transaction_id(&second);
    let failed = settle(&app, &admin, second_id, Some("account closed")).await;
    assert_eq!(failed.status, StatusCode::OK, "{:?}", failed.body);
    assert_eq!(
        (failed.body["status"].as_str(), failed.body["reason"].as_str()),
        (Some("failed"), Some("account closed"))
    );
    assert_eq!(wallet_at(&app, &alice.token, wallet, failed.position()).await["balance"], "70.00");
    let returned = get_at(&app, &alice.token, &format!("/api/v1/transactions/{second_id}"), failed.position()).await;
    assert_eq!((returned["status"].as_str(), returned["reason"].as_str()), (Some("failed"), Some("account closed")));

    let events = app.event_count().await;
    assert_problem(&settle(&app, &admin, second_id, None).await, 409, "withdrawal_not_pending");
    assert_problem(&settle(&app, &admin, first_id, Some("too late")).await, 409, "withdrawal_not_pending");
    assert_problem(&settle(&app, &admin, Uuid::new_v4(), None).await, 404, "withdrawal_not_found");
    assert_problem(&withdraw(&app, &alice, wallet, "70.01", "payout-3").await, 422, "insufficient_funds");
    assert_eq!(app.event_count().await, events);
}

/// A deposit of 100, a withdrawal of 30 completed, a withdrawal of 20 failed.
struct History {
    admin: TestUser,
    alice: TestUser,
    wallet: Uuid,
    /// Transaction ids: the deposit, the completed and the failed withdrawal.
    ids: [Uuid; 3],
    /// Positions of the four balance-changing events, in order.
    positions: [i64; 4],
    last: i64,
}

async fn history(app: &TestApp) -> History {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let deposit = deposit_with(app, &admin, wallet, "100", "SEPA-0001").await;
    let first = withdraw(app, &alice, wallet, "30", "payout-1").await;
    let completed = settle(app, &admin, transaction_id(&first), None).await;
    let second = withdraw(app, &alice, wallet, "20", "payout-2").await;
    let failed = settle(app, &admin, transaction_id(&second), Some("account closed")).await;
    for reply in [&deposit, &first, &second] {
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    for reply in [&completed, &failed] {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    History {
        ids: [transaction_id(&deposit), transaction_id(&first), transaction_id(&second)],
        positions: [deposit.position(), first.position(), second.position(), failed.position()],
        last: failed.position(),
        admin,
        alice,
        wallet,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_pages_its_entries_with_a_running_balance_and_positions() {
    let app = TestApp::spawn().await;
    let h = history(&app).await;
    let path = format!("/api/v1/wallets/{}/entries?min_position={}", h.wallet, h.last);
    let (entries, pages) = all_pages(&app, &h.alice.token, &path, 3).await;
    assert_eq!(pages, 2);
    assert_eq!(strings(&entries, "kind"), ["deposit", "withdrawal", "withdrawal", "withdrawal_returned"]);
    assert_eq!(strings(&entries, "amount"), ["100.00", "-30.00", "-20.00", "20.00"]);
    assert_eq!(strings(&entries, "balance_after"), ["100.00", "70.00", "50.00", "70.00"]);
    let positions: Vec<i64> = entries.iter().map(|e| e["position"].as_i64().expect("position")).collect();
    assert_eq!(positions, h.positions);
    let ids = strings(&entries, "transaction_id");
    let expected = [h.ids[0], h.ids[1], h.ids[2], h.ids[2]].map(|id| id.to_string());
    assert_eq!(ids, expected);
    let mut running = Decimal::ZERO;
    for entry in &entries {
        running += decimal(&entry["amount"]);
        assert_eq!(decimal(&entry["balance_after"]), running, "{entry}");
    }

    let one_by_one = all_pages(&app, &h.alice.token, &path, 1).await;
    assert_eq!((one_by_one.0, one_by_one.1), (entries, 4));
    let entries_path = format!("/api/v1/wallets/{}/entries", h.wallet);
    for bad in ["?limit=0", "?limit=201", "?cursor=not-a-cursor", "?limit=ten"] {
        let reply = app.get(&format!("{entries_path}{bad}"), &h.alice.token).await;
        assert_problem(&reply, 422, "validation_failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transactions_list_and_each_transaction_show_their_status() {
    let app = TestApp::spawn().await;
    let h = history(&app).await;
    let path = format!("/api/v1/transactions?wallet_id={}&min_position={}", h.wallet, h.last);
    let (items, pages) = all_pages(&app, &h.alice.token, &path, 2).await;
    assert_eq!(pages, 2);
    assert_eq!(strings(&items, "id"), h.ids.map(|id| id.to_string()));
    assert_eq!(strings(&items, "kind"), ["deposit", "withdrawal", "withdrawal"]);
    assert_eq!(strings(&items, "status"), ["completed", "completed", "failed"]);
    assert_eq!(strings(&items, "amount"), ["100.00", "30.00", "20.00"]);
    assert_eq!(strings(&items, "reference"), ["SEPA-0001", "payout-1", "payout-2"]);
    assert_eq!(items[2]["reason"], "account closed");

    let mine = all_pages(&app, &h.alice.token, &format!("/api/v1/transactions?min_position={}", h.last), 50).await.0;
    assert_eq!(mine, items, "alice's only transactions are in her EUR wallet");
    let staff = all_pages(&app, &h.admin.token, &format!("/api/v1/transactions?min_position={}", h.last), 50).await.0;
    assert_eq!(staff.len(), 3);

    let bob = app.register("bob").await;
    let (others, _) = all_pages(&app, &bob.token, &path, 50).await;
    assert!(others.is_empty(), "bob sees alice's transactions: {others:?}");
    let hidden = app.get(&format!("/api/v1/transactions/{}", h.ids[0]), &bob.token).await;
    let unknown = app.get(&format!("/api/v1/transactions/{}", Uuid::new_v4()), &bob.token).await;
    assert_problem(&hidden, 404, "transaction_not_found");
    assert_eq!(hidden.body, unknown.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_deposit_is_reversed_once_and_a_pending_withdrawal_not_at_all() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let original = transaction_id(&app.deposit(&admin, wallet, "50").await);
    app.deposit(&admin, wallet, "100").await;

    let reversal = reverse(&app, &admin, original).await;
    assert_eq!(reversal.status, StatusCode::CREATED, "{:?}", reversal.body);
    let reversal_id = transaction_id(&reversal);
    assert_eq!(reversal.header("location"), Some(format!("/api/v1/transactions/{reversal_id}")));
    assert_eq!(reversal.body["reversal_of"], original.to_string());
    assert_eq!((reversal.body["amount"].as_str(), reversal.body["balance"].as_str()), (Some("50.00"), Some("100.00")));
    assert_eq!(wallet_at(&app, &alice.token, wallet, reversal.position()).await["balance"], "100.00");
    let seen = get_at(&app, &alice.token, &format!("/api/v1/transactions/{original}"), reversal.position()).await;
    assert_eq!(seen["reversed_by"], reversal_id.to_string());
    assert_eq!(seen["status"], "completed");
    let seen = get_at(&app, &alice.token, &format!("/api/v1/transactions/{reversal_id}"), reversal.position()).await;
    assert_eq!(
        (seen["kind"].as_str(), seen["reversal_of"].as_str()),
        (Some("reversal"), Some(original.to_string().as_str()))
    );

    let pending = transaction_id(&withdraw(&app, &alice, wallet, "10", "payout-1").await);
    let before = ledger_state(&app, &admin, &[wallet]).await;
    assert_problem(&reverse(&app, &admin, original).await, 409, "already_reversed");
    assert_problem(&reverse(&app, &admin, pending).await, 409, "transaction_not_reversible");
    assert_problem(&reverse(&app, &admin, reversal_id).await, 409, "transaction_not_reversible");
    assert_problem(&reverse(&app, &admin, Uuid::new_v4()).await, 404, "transaction_not_found");
    assert_eq!(ledger_state(&app, &admin, &[wallet]).await, before);
    assert_eq!(before.1, ["90.00"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_reversed_once_answers_already_reversed_even_when_the_wallet_is_empty() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let original = transaction_id(&app.deposit(&admin, wallet, "50").await);
    let first = reverse(&app, &admin, original).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.body["balance"], "0.00");
    let events = app.event_count().await;
    assert_problem(&reverse(&app, &admin, original).await, 409, "already_reversed");
    assert_eq!(app.event_count().await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversing_a_completed_withdrawal_credits_the_wallet_back_and_a_failed_one_is_not_reversible() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    app.deposit(&admin, wallet, "100").await;
    let completed = transaction_id(&withdraw(&app, &alice, wallet, "40", "payout-1").await);
    assert_eq!(settle(&app, &admin, completed, None).await.status, StatusCode::OK);
    let failed = transaction_id(&withdraw(&app, &alice, wallet, "5", "payout-2").await);
    assert_eq!(settle(&app, &admin, failed, Some("bounced")).await.status, StatusCode::OK);

    let reversal = reverse(&app, &admin, completed).await;
    assert_eq!(reversal.status, StatusCode::CREATED, "{:?}", reversal.body);
    assert_eq!(reversal.body["balance"], "100.00");
    assert_eq!(wallet_at(&app, &alice.token, wallet, reversal.position()).await["balance"], "100.00");
    let events = app.event_count().await;
    assert_problem(&reverse(&app, &admin, failed).await, 409, "transaction_not_reversible");
    assert_eq!(app.event_count().await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_wallet_refuses_withdrawals_with_wallet_frozen_until_it_is_unfrozen() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    app.deposit(&admin, wallet, "50").await;

    let frozen =
        app.post(&format!("/api/v1/wallets/{wallet}/freeze"), &admin.token, json!({"reason": "KYC review"})).await;
    assert_eq!(frozen.status, StatusCode::OK, "{:?}", frozen.body);
    assert_eq!(frozen.body["frozen"], true);
    assert_eq!(wallet_at(&app, &alice.token, wallet, frozen.position()).await["frozen"], true);
    let before = ledger_state(&app, &admin, &[wallet]).await;
    assert_problem(&withdraw(&app, &alice, wallet, "10", "payout-1").await, 422, "wallet_frozen");
    let again = app.post(&format!("/api/v1/wallets/{wallet}/freeze"), &admin.token, json!({"reason": "again"})).await;
    assert_problem(&again, 409, "wallet_already_frozen");
    assert_eq!(ledger_state(&app, &admin, &[wallet]).await, before);

    let unfrozen = app.post(&format!("/api/v1/wallets/{wallet}/unfreeze"), &admin.token, json!({})).await;
    assert_eq!(unfrozen.status, StatusCode::OK, "{:?}", unfrozen.body);
    assert_eq!(unfrozen.body["frozen"], false);
    let withdrawal = withdraw(&app, &alice, wallet, "10", "payout-1").await;
    assert_eq!(withdrawal.status, StatusCode::CREATED, "{:?}", withdrawal.body);
    assert_eq!(withdrawal.body["balance"], "40.00");
    let view = wallet_at(&app, &alice.token, wallet, withdrawal.position()).await;
    assert_eq!((view["frozen"].as_bool(), view["balance"].as_str()), (Some(false), Some("40.00")));
    let again = app.post(&format!("/api/v1/wallets/{wallet}/unfreeze"), &admin.token, json!({})).await;
    assert_problem(&again, 409, "wallet_not_frozen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_at_a_commands_position_already_shows_that_command() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    for round in 1..=5 {
        let reply = app.deposit(&admin, wallet, "10").await;
        let (position, id) = (reply.position(), transaction_id(&reply));
        let expected = format!("{}.00", round * 10);
        assert_eq!(wallet_at(&app, &alice.token, wallet, position).await["balance"], expected.as_str());
        let wallets = get_at(&app, &alice.token, &format!("/api/v1/users/{}/wallets", alice.id), position).await;
        assert_eq!(wallets[0]["balance"], expected.as_str());
        let entries =
            get_at(&app, &alice.token, &format!("/api/v1/wallets/{wallet}/entries?limit=200"), position).await;
        assert_eq!(entries["items"].as_array().expect("items").len(), round);
        let transaction = get_at(&app, &alice.token, &format!("/api/v1/transactions/{id}"), position).await;
        assert_eq!(transaction["status"], "completed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_waits_for_a_position_that_is_reached_while_it_waits() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let next = app.head_position().await + 1;
    let path = format!("/api/v1/wallets/{wallet}?min_position={next}");
    let query = app.get(&path, &alice.token);
    let (reply, deposit) = tokio::join!(query, async {
        tokio::task::yield_now().await;
        app.deposit(&admin, wallet, "7").await
    });
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(deposit.position() >= next);
    assert_eq!(reply.body["balance"], "7.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_for_a_position_far_ahead_answers_503_projection_lagging_after_a_bounded_wait() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let api = ExtraApi::start(&app, 300).await;
    let far = app.head_position().await + 1_000_000;
    let started = Instant::now();
    let url = format!("{}/api/v1/wallets/{}?min_position={far}", api.base, alice.wallet("EUR"));
    let reply = send(app.client.get(url).bearer_auth(&alice.token)).await;
    let waited = started.elapsed();
    assert_problem(&reply, 503, "projection_lagging");
    assert!(reply.header("retry-after").is_some(), "no Retry-After");
    assert!(waited >= Duration::from_millis(300), "answered after {waited:?}, before the wait");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    let reply = app.get(&format!("/api/v1/wallets/{}?min_position=-1", alice.wallet("EUR")), &alice.token).await;
    assert_problem(&reply, 422, "validation_failed");
}

// ---------------------------------------------------------------------------------------------
// 2. Bad input: the right status and code, and nothing changes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_mistyped_and_unknown_bodies_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    app.deposit(&admin, wallet, "10").await;
    let before = ledger_state(&app, &admin, &[wallet]).await;
    let oversized = json!({"amount": "1", "reference": "x".repeat(70 * 1024)}).to_string();
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (Some("application/json"), r#"{"amount": "1", "reference": "#.to_string(), 400, "malformed_json"),
        (Some("application/json"), "not json".to_string(), 400, "malformed_json"),
        (Some("application/json"), oversized, 413, "payload_too_large"),
        (Some("text/plain"), r#"{"amount": "1", "reference": "r-1"}"#.to_string(), 415, "unsupported_media_type"),
        (None, r#"{"amount": "1", "reference": "r-2"}"#.to_string(), 415, "unsupported_media_type"),
        (
            Some("application/json"),
            r#"{"amount": "1", "reference": "r-3", "extra": 1}"#.to_string(),
            422,
            "validation_failed",
        ),
        (Some("application/json"), r#"{"amount": 1, "reference": "r-4"}"#.to_string(), 422, "validation_failed"),
        (Some("application/json"), r#"{"reference": "r-5"}"#.to_string(), 422, "validation_failed"),
        (Some("application/json"), r#"{"amount": "1", "reference": " "}"#.to_string(), 422, "validation_failed"),
        (Some("application/json"), r#"["amount", "1"]"#.to_string(), 422, "validation_failed"),
    ];
    let url = format!("{}/api/v1/wallets/{wallet}/deposits", app.base);
    for (content_type, body, status, code) in cases {
        let mut request = app.client.post(&url).bearer_auth(&admin.token).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_problem(&send(request).await, status, code);
    }
    assert_eq!(ledger_state(&app, &admin, &[wallet]).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_that_break_a_currency_rule_are_refused_with_the_rule_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallets: Vec<Uuid> = ["EUR", "USD", "ETH", "CARBON"].iter().map(|c| alice.wallet(c)).collect();
    for wallet in &wallets {
        app.deposit(&admin, *wallet, "1000").await;
    }
    let before = ledger_state(&app, &admin, &wallets).await;
    let cases: &[(&str, &str, &str)] = &[
        ("EUR", "0", "amount_not_positive"),
        ("EUR", "0.00", "amount_not_positive"),
        ("EUR", "-5", "amount_malformed"),
        ("EUR", "ten", "amount_malformed"),
        ("EUR", "1e3", "amount_malformed"),
        ("EUR", "", "amount_malformed"),
        ("EUR", "1.001", "amount_precision_exceeded"),
        ("USD", "0.005", "amount_precision_exceeded"),
        ("CARBON", "0.0001", "amount_precision_exceeded"),
        ("ETH", "0.0000000000000000001", "amount_precision_exceeded"),
        ("EUR", "99999999999999999999", "amount_overflow"),
        ("CARBON", "10000000000.001", "amount_overflow"),
    ];
    for (index, (currency, amount, rule)) in cases.iter().enumerate() {
        let wallet = alice.wallet(currency);
        let deposit = deposit_with(&app, &admin, wallet, amount, &format!("bad-{index}")).await;
        let withdrawal = withdraw(&app, &alice, wallet, amount, &format!("bad-{index}")).await;
        for reply in [deposit, withdrawal] {
            assert_problem(&reply, 422, rule);
            assert_eq!(reply.body["errors"][0]["field"], "amount", "{currency} {amount:?}: {:?}", reply.body);
            assert_eq!(reply.body["errors"][0]["code"], *rule, "{currency} {amount:?}: {:?}", reply.body);
        }
    }
    assert_eq!(ledger_state(&app, &admin, &wallets).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_wallet_answers_the_same_404_as_a_wallet_that_does_not_exist() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let wallet = alice.wallet("EUR");
    app.deposit(&admin, wallet, "10").await;
    let before = ledger_state(&app, &admin, &[wallet]).await;
    let unknown = Uuid::new_v4();
    for suffix in ["", "/entries"] {
        let hidden = app.get(&format!("/api/v1/wallets/{wallet}{suffix}"), &bob.token).await;
        let missing = app.get(&format!("/api/v1/wallets/{unknown}{suffix}"), &bob.token).await;
        assert_problem(&hidden, 404, "wallet_not_found");
        assert_eq!(hidden.body, missing.body, "{suffix}");
    }
    let hidden = withdraw(&app, &bob, wallet, "5", "steal-1").await;
    let missing = withdraw(&app, &bob, unknown, "5", "steal-2").await;
    assert_problem(&hidden, 404, "wallet_not_found");
    assert_eq!(hidden.body, missing.body);
    assert_problem(&withdraw(&app, &admin, wallet, "5", "admin-1").await, 404, "wallet_not_found");
    assert_problem(&deposit_with(&app, &admin, unknown, "5", "nowhere").await, 404, "wallet_not_found");
    let wallets = app.get(&format!("/api/v1/users/{}/wallets", alice.id), &bob.token).await;
    assert_problem(&wallets, 404, "user_not_found");
    assert_problem(&app.get(&format!("/api/v1/users/{}", alice.id), &bob.token).await, 404, "user_not_found");
    assert_eq!(ledger_state(&app, &admin, &[wallet]).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_expired_tampered_foreign_and_unsigned_tokens_answer_401_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let before = ledger_state(&app, &admin, &[wallet]).await;

    let expired = signed_token(&claims_for(admin.id, &["admin"], -3600), JWT_SECRET);
    let foreign = signed_token(&claims_for(admin.id, &["admin"], 3600), "another-secret-of-someone-else");
    let parts: Vec<&str> = alice.token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims_for(alice.id, &["user", "admin"], 3600)), parts[2]);
    let unsigned =
        format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims_for(admin.id, &["admin"], 3600)));
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "unauthenticated"),
        (Some(format!("Basic {}", URL_SAFE_NO_PAD.encode("admin:pw"))), "unauthenticated"),
        (Some(format!("Bearer {expired}")), "invalid_token"),
        (Some(format!("Bearer {foreign}")), "invalid_token"),
        (Some(format!("Bearer {tampered}")), "invalid_token"),
        (Some(format!("Bearer {unsigned}")), "invalid_token"),
        (Some("Bearer not-a-jwt".to_string()), "invalid_token"),
    ];
    let body = json!({"amount": "10", "reference": "forged"});
    for (authorization, code) in cases {
        let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", a.as_str())).collect();
        let path = format!("/api/v1/wallets/{wallet}/deposits");
        let reply = app.request_with(Method::POST, &path, None, Some(body.clone()), &headers).await;
        assert_problem(&reply, 401, code);
        let reply = app.request_with(Method::GET, "/api/v1/users/me", None, None, &headers).await;
        assert_problem(&reply, 401, code);
    }
    assert_eq!(ledger_state(&app, &admin, &[wallet]).await, before);

    // The forged tokens fail for what is wrong with them, not for their shape: the same claims,
    // signed with the right secret and still valid, are accepted.
    let genuine = signed_token(&claims_for(alice.id, &["user"], 3600), JWT_SECRET);
    assert_eq!(app.get("/api/v1/users/me", &genuine).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_calling_admin_routes_is_forbidden_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let deposit = transaction_id(&app.deposit(&admin, wallet, "50").await);
    let withdrawal = transaction_id(&withdraw(&app, &alice, wallet, "5", "payout-1").await);
    let before = ledger_state(&app, &admin, &[wallet]).await;
    let attempts: Vec<(String, Value)> = vec![
        (format!("/api/v1/wallets/{wallet}/deposits"), json!({"amount": "1000", "reference": "self-service"})),
        (format!("/api/v1/wallets/{wallet}/freeze"), json!({"reason": "why not"})),
        (format!("/api/v1/wallets/{wallet}/unfreeze"), json!({})),
        (format!("/api/v1/withdrawals/{withdrawal}/complete"), json!({})),
        (format!("/api/v1/withdrawals/{withdrawal}/fail"), json!({"reason": "changed my mind"})),
        (format!("/api/v1/transactions/{deposit}/reversal"), json!({"reason": "oops"})),
        (format!("/api/v1/users/{}/roles", alice.id), json!({"role": "admin"})),
    ];
    for (path, body) in attempts {
        let reply = app.post(&path, &alice.token, body).await;
        assert_problem(&reply, 403, "forbidden");
    }
    let revoke =
        app.request(Method::DELETE, &format!("/api/v1/users/{}/roles/user", admin.id), Some(&alice.token), None).await;
    assert_problem(&revoke, 403, "forbidden");
    assert_eq!(ledger_state(&app, &admin, &[wallet]).await, before);
    let me = get_at(&app, &alice.token, "/api/v1/users/me", app.head_position().await).await;
    assert_eq!(me["roles"], json!(["user"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failed_logins_lock_the_username_with_429_even_for_the_right_password() {
    let app = TestApp::spawn().await;
    app.register("frank").await;
    app.register("gina").await;
    let login = |username: &str, password: &str| {
        app.request(Method::POST, "/api/v1/auth/token", None, Some(json!({"username": username, "password": password})))
    };
    for _ in 0..5 {
        assert_problem(&login("frank", "wrong-password-1").await, 401, "invalid_credentials");
    }
    let limited = login("frank", "wrong-password-1").await;
    assert_problem(&limited, 429, "too_many_login_attempts");
    let retry_after: u64 = limited.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!(retry_after > 0);
    assert_problem(&login("frank", PASSWORD).await, 429, "too_many_login_attempts");
    assert_problem(&login("FRANK", PASSWORD).await, 429, "too_many_login_attempts");
    let form = [("username", "frank"), ("password", PASSWORD)];
    let by_form = send(app.client.post(format!("{}/api/v1/auth/token", app.base)).form(&form)).await;
    assert_problem(&by_form, 429, "too_many_login_attempts");
    assert_eq!(login("gina", PASSWORD).await.status, StatusCode::OK, "the limit is per username");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_username_or_email_is_refused_whatever_its_case_and_claims_nothing() {
    let app = TestApp::spawn().await;
    app.register("carol").await;
    let events = app.event_count().await;
    let register = |username: &str, email: &str| {
        let body = json!({"username": username, "email": email, "password": PASSWORD});
        app.request(Method::POST, "/api/v1/users", None, Some(body))
    };
    assert_problem(&register("carol", "other@example.org").await, 409, "username_taken");
    assert_problem(&register("CaRoL", "other@example.org").await, 409, "username_taken");
    assert_problem(&register("carol2", "carol@example.org").await, 409, "email_taken");
    assert_problem(&register("carol2", "CAROL@Example.ORG").await, 409, "email_taken");
    assert_problem(&register("x", "x@example.org").await, 422, "validation_failed");
    assert_problem(&register("carol3", "not-an-email").await, 422, "validation_failed");
    assert_eq!(app.event_count().await, events);
    // The refused attempts left no claim behind.
    let reply = register("carol2", "other@example.org").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_reference_used_before_is_refused_with_duplicate_reference() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let (eur, usd) = (alice.wallet("EUR"), alice.wallet("USD"));
    assert_eq!(deposit_with(&app, &admin, eur, "10", "SEPA-42").await.status, StatusCode::CREATED);
    let before = ledger_state(&app, &admin, &[eur, usd]).await;
    assert_problem(&deposit_with(&app, &admin, eur, "10", "SEPA-42").await, 409, "duplicate_reference");
    assert_problem(&deposit_with(&app, &admin, eur, "99", "SEPA-42").await, 409, "duplicate_reference");
    assert_problem(&deposit_with(&app, &admin, usd, "10", "SEPA-42").await, 409, "duplicate_reference");
    assert_eq!(ledger_state(&app, &admin, &[eur, usd]).await, before);
    assert_eq!(before.1, ["10.00", "0.00"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_idempotency_key_is_refused_and_a_valid_one_replays_the_first_answer() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let path = format!("/api/v1/wallets/{wallet}/deposits");
    let body = json!({"amount": "10", "reference": "SEPA-7"});
    let before = ledger_state(&app, &admin, &[wallet]).await;
    let too_long = "k".repeat(256);
    for key in ["", "has space", too_long.as_str()] {
        let reply = app
            .request_with(Method::POST, &path, Some(&admin.token), Some(body.clone()), &[("idempotency-key", key)])
            .await;
        assert_problem(&reply, 400, "invalid_idempotency_key");
    }
    assert_eq!(ledger_state(&app, &admin, &[wallet]).await, before);

    let key = [("idempotency-key", "deposit-sepa-7")];
    let first = app.request_with(Method::POST, &path, Some(&admin.token), Some(body.clone()), &key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let events = app.event_count().await;
    let repeat = app.request_with(Method::POST, &path, Some(&admin.token), Some(body), &key).await;
    assert_eq!(repeat.status, StatusCode::CREATED, "{:?}", repeat.body);
    assert_eq!(repeat.body, first.body);
    assert_eq!(repeat.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(app.event_count().await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_repeated_right_after_a_replayed_or_refused_command_answers_its_outcome_not_in_progress() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let path = format!("/api/v1/wallets/{wallet}/withdrawals");
    let body = json!({"amount": "1000", "reference": "payout-1", "destination": "IBAN DE89"});
    let other = json!({"amount": "999", "reference": "payout-1", "destination": "IBAN DE89"});
    // A lock left behind by an abandoned transaction showed up in about half of single rounds.
    for round in 0..50 {
        let key = format!("withdrawal-{round}");
        let key = [("idempotency-key", key.as_str())];
        let first = app.request_with(Method::POST, &path, Some(&alice.token), Some(body.clone()), &key).await;
        assert_problem(&first, 422, "insufficient_funds");
        let repeat = app.request_with(Method::POST, &path, Some(&alice.token), Some(body.clone()), &key).await;
        assert_problem(&repeat, 422, "insufficient_funds");
        assert_eq!(repeat.header("idempotent-replayed").as_deref(), Some("true"), "round {round}");
        let reused = app.request_with(Method::POST, &path, Some(&alice.token), Some(other.clone()), &key).await;
        assert_problem(&reused, 409, "idempotency_key_reused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_answer_a_problem_document() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    assert_problem(&app.get("/api/v1/nowhere", &alice.token).await, 404, "route_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_id_in_the_path_answers_a_problem_document() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let reply = app.get("/api/v1/wallets/not-a-uuid", &alice.token).await;
    assert!(reply.status.is_client_error(), "{:?}", reply.status);
    assert_eq!(reply.header("content-type").as_deref(), Some("application/problem+json"), "{}", reply.status);
    assert!(!reply.code().is_empty(), "{:?}", reply.body);
}

// ---------------------------------------------------------------------------------------------
// 3. Roles and audit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_every_event_in_position_order_and_every_chain_verifies() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    app.deposit(&admin, alice.wallet("EUR"), "10").await;
    let withdrawal = withdraw(&app, &alice, alice.wallet("EUR"), "4", "payout-1").await;
    let auditor = app.staff("audra", Role::Auditor).await;
    let head = app.head_position().await;

    let mut events = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = get_at(&app, &auditor.token, &format!("/api/v1/audit/events?after={after}&limit=4"), head).await;
        events.extend(page["items"].as_array().expect("items").clone());
        pages += 1;
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(pages > 1);
    assert_eq!(events.len() as i64, app.event_count().await);
    let positions: Vec<i64> = events.iter().map(|e| e["position"].as_i64().expect("position")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(positions.last(), Some(&head));
    for event in &events {
        assert!(event["payload"].as_object().is_some_and(|p| !p.is_empty()), "{event}");
        assert_eq!(event["metadata"]["actor"], event["actor"], "metadata comes from the stored event: {event}");
        assert!(!event["event_type"].as_str().unwrap_or("").is_empty(), "{event}");
    }
    let types = strings(&events, "event_type");
    for expected in ["WalletOpened", "Deposited", "WithdrawalRequested"] {
        assert!(types.iter().any(|t| t == expected), "{expected} missing from {types:?}");
    }
    let requested = events.iter().find(|e| e["event_type"] == "WithdrawalRequested").expect("a withdrawal");
    assert_eq!(requested["position"], withdrawal.position());

    let verify = app.get("/api/v1/audit/verify", &auditor.token).await;
    assert_eq!(verify.status, StatusCode::OK, "{:?}", verify.body);
    assert_eq!(verify.body["ok"], true, "{:?}", verify.body);
    assert_eq!(verify.body["first_problem"], Value::Null);
    assert_eq!(verify.body["events"].as_i64(), Some(app.event_count().await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_cannot_move_money_and_a_plain_user_cannot_read_the_audit_routes() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let auditor = app.staff("audra", Role::Auditor).await;
    let wallet = alice.wallet("EUR");
    let before = ledger_state(&app, &admin, &[wallet]).await;
    assert_problem(&deposit_with(&app, &auditor, wallet, "10", "audit-1").await, 403, "forbidden");
    let freeze = app.post(&format!("/api/v1/wallets/{wallet}/freeze"), &auditor.token, json!({"reason": "look"})).await;
    assert_problem(&freeze, 403, "forbidden");
    assert_eq!(ledger_state(&app, &admin, &[wallet]).await, before);
    assert_eq!(
        wallet_at(&app, &auditor.token, wallet, app.head_position().await).await["balance"],
        "0.00",
        "auditors read every wallet"
    );
    for path in ["/api/v1/audit/events", "/api/v1/audit/verify", "/api/v1/audit/security"] {
        assert_problem(&app.get(path, &alice.token).await, 403, "forbidden");
        assert_eq!(app.get(path, &auditor.token).await.status, StatusCode::OK, "{path}");
        assert_eq!(app.get(path, &admin.token).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_log_records_failed_logins_refusals_and_rejected_commands() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let auditor = app.staff("audra", Role::Auditor).await;
    let wallet = alice.wallet("EUR");
    let login = json!({"username": "alice", "password": "wrong-password-1"});
    assert_eq!(
        app.request(Method::POST, "/api/v1/auth/token", None, Some(login)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get("/api/v1/audit/events", &alice.token).await.status, StatusCode::FORBIDDEN);
    assert_eq!(deposit_with(&app, &auditor, wallet, "5", "audit-1").await.status, StatusCode::FORBIDDEN);
    assert_problem(&withdraw(&app, &alice, wallet, "1000", "payout-1").await, 422, "insufficient_funds");
    assert_eq!(app.request(Method::GET, "/api/v1/users/me", None, None).await.status, StatusCode::UNAUTHORIZED);

    let log = security_log(&app, &auditor).await;
    let has = |kind: &str, check: &dyn Fn(&Value) -> bool| log.iter().any(|e| e["kind"] == kind && check(e));
    assert!(has("login_failed", &|e| e["subject"] == "alice" && e["code"] == "invalid_credentials"), "{log:#?}");
    assert!(has("login_succeeded", &|e| e["actor"] == alice.id.to_string()), "{log:#?}");
    assert!(
        has("forbidden", &|e| e["actor"] == alice.id.to_string() && e["details"]["path"] == "/api/v1/audit/events"),
        "{log:#?}"
    );
    let deposits = format!("/api/v1/wallets/{wallet}/deposits");
    assert!(
        has("forbidden", &|e| e["actor"] == auditor.id.to_string() && e["details"]["path"] == deposits.as_str()),
        "{log:#?}"
    );
    assert!(
        has("command_rejected", &|e| e["actor"] == alice.id.to_string() && e["code"] == "insufficient_funds"),
        "{log:#?}"
    );
    assert!(has("unauthenticated", &|e| e["details"]["path"] == "/api/v1/users/me"), "{log:#?}");
    let ids: Vec<i64> = log.iter().map(|e| e["id"].as_i64().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(log.iter().all(|e| e["request_id"].is_string()), "every entry names its request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_a_role_is_logged_as_role_changed_and_the_next_token_carries_it() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let granted =
        app.post(&format!("/api/v1/users/{}/roles", alice.id), &admin.token, json!({"role": "auditor"})).await;
    assert_eq!(granted.status, StatusCode::OK, "{:?}", granted.body);
    assert_eq!(sorted(&granted.body["roles"]), ["auditor", "user"]);
    let me = get_at(&app, &alice.token, "/api/v1/users/me", granted.position()).await;
    assert_eq!(sorted(&me["roles"]), ["auditor", "user"]);

    let token = app.login("alice", PASSWORD).await;
    let log = all_pages(&app, &token, "/api/v1/audit/security", 200).await.0;
    let changes: Vec<&Value> = log.iter().filter(|e| e["kind"] == "role_changed").collect();
    assert_eq!(changes.len(), 1, "{log:#?}");
    assert_eq!(changes[0]["actor"], admin.id.to_string());
    assert_eq!(changes[0]["subject"], alice.id.to_string());

    let unknown =
        app.post(&format!("/api/v1/users/{}/roles", alice.id), &admin.token, json!({"role": "emperor"})).await;
    assert_problem(&unknown, 422, "validation_failed");
    let revoked = app
        .request(Method::DELETE, &format!("/api/v1/users/{}/roles/auditor", alice.id), Some(&admin.token), None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    assert_eq!(sorted(&revoked.body["roles"]), ["user"]);
    let token = app.login("alice", PASSWORD).await;
    assert_problem(&app.get("/api/v1/audit/verify", &token).await, 403, "forbidden");
    let log = security_log(&app, &admin).await;
    assert_eq!(log.iter().filter(|e| e["kind"] == "role_changed").count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 4. Health, metrics, OpenAPI and docs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_openapi_and_docs_are_served() {
    let app = TestApp::spawn().await;
    let live = app.request(Method::GET, "/health/live", None, None).await;
    assert_eq!(live.status, StatusCode::OK);
    // The NATS client connects in the background: readiness says "down" until it has.
    let ready = common::eventually("readiness", || async {
        let ready = app.request(Method::GET, "/health/ready", None, None).await;
        (ready.status == StatusCode::OK).then_some(ready)
    })
    .await;
    assert_eq!((ready.body["postgres"].as_str(), ready.body["nats"].as_str()), (Some("up"), Some("up")));

    let (status, content_type, metrics) = get_text(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(metrics.contains("ecoledger_http_requests_total"), "{metrics}");
    assert!(metrics.contains(r#"route="/health/ready""#), "{metrics}");

    let openapi = app.request(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(openapi.status, StatusCode::OK);
    assert!(openapi.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{:?}", openapi.body["openapi"]);
    for path in ["/api/v1/users", "/api/v1/auth/token", "/api/v1/wallets/{id}/deposits", "/api/v1/audit/security"] {
        assert!(openapi.body["paths"][path].is_object(), "{path} missing");
    }

    let (status, content_type, docs) = get_text(&app, "/docs/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(docs.to_lowercase().contains("swagger"), "{docs}");
}
