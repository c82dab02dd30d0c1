//! Fault tests: NATS down, messages lost or reordered on the way, SIGKILL between commit and
//! publish, concurrent commits, and a standby relay (DESIGN.md sections 1, 2 and 5). Postgres is
//! the source of truth: whatever happens to NATS or to a process, every committed event ends up
//! published in position order and projected exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use command_api::registration::{self, NewUser};
use common::{
    eventually, nats_url, unique_prefix, PrivateNats, SpawnOptions, TestApp, TestDb, TestUser, DEADLINE, PASSWORD,
};
use cqrs_es::Aggregate;
use domain::user::{Role, User};
use domain::wallet::{wallet_id, Wallet, WalletEvent};
use domain::Currency;
use ecoledger::configuration::Component;
use event_store::{Begun, Bus, CommandContext, PublishedEvent, RecordedEvent, Store};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A command must answer within this while NATS is down: the command path never waits for it.
const COMMAND_WHILE_NATS_DOWN_MAX: Duration = Duration::from_secs(2);
/// Deposits fired at once in the ordering test.
const CONCURRENT_DEPOSITS: usize = 200;
/// Deposits in the burst that a SIGKILL interrupts, and how many are acknowledged before it.
const BURST_DEPOSITS: usize = 48;
const BURST_ACKS_BEFORE_KILL: usize = 24;
/// The relay's advisory lock (event_store::relay::RELAY_LOCK).
const RELAY_LOCK: (i32, i32) = event_store::relay::RELAY_LOCK;
/// Event types that write a statement line (projections/src/wallet_entries.rs).
const ENTRY_EVENT_TYPES: &[&str] =
    &["Deposited", "WithdrawalRequested", "WithdrawalFailed", "TransactionReversed", "HoldCaptured"];

// ---------------------------------------------------------------------------------------------
// Helpers: database checks
// ---------------------------------------------------------------------------------------------

async fn positions(pool: &PgPool, sql: &str) -> Vec<i64> {
    sqlx::query_scalar(sql).fetch_all(pool).await.expect("positions query")
}

async fn published_position(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT published_position FROM relay_state WHERE id = 1")
        .fetch_one(pool)
        .await
        .expect("relay_state")
}

async fn head(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events").fetch_one(pool).await.expect("head")
}

/// The lowest checkpoint over every projection (0 for one that has none yet).
async fn lowest_checkpoint(pool: &PgPool) -> i64 {
    let names: Vec<&str> = projections::all().iter().map(|p| p.name()).collect();
    sqlx::query_scalar(
        "SELECT min(COALESCE(c.position, 0)) FROM unnest($1::text[]) p(name) \
         LEFT JOIN projection_checkpoints c ON c.name = p.name",
    )
    .bind(&names)
    .fetch_one(pool)
    .await
    .expect("checkpoints")
}

async fn highest_checkpoint(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM projection_checkpoints")
        .fetch_one(pool)
        .await
        .expect("checkpoints")
}

/// Waits until the relay's watermark reached the head of the events table.
async fn wait_for_published_head(pool: &PgPool) -> i64 {
    eventually("the relay to publish up to the head", || async {
        let (published, head) = (published_position(pool).await, head(pool).await);
        (published == head).then_some(head)
    })
    .await
}

/// Every stored event, in position order.
async fn stored_events(pool: &PgPool) -> Vec<RecordedEvent> {
    let texts: Vec<String> =
        sqlx::query_scalar("SELECT canonical FROM events ORDER BY position").fetch_all(pool).await.expect("events");
    texts.iter().map(|text| RecordedEvent::from_canonical(text).expect("canonical event parses")).collect()
}

/// Every stored event's hash, by position: what the relay's deduplication ids are made of.
async fn stored_hashes(pool: &PgPool) -> BTreeMap<i64, Vec<u8>> {
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT position, hash FROM events").fetch_all(pool).await.expect("event hashes");
    rows.into_iter().collect()
}

/// Wallet id, transaction id and amount of every `Deposited` event in the store.
async fn stored_deposits(pool: &PgPool) -> Vec<(Uuid, Uuid, Decimal)> {
    let mut deposits = Vec::new();
    for event in stored_events(pool).await {
        if event.event_type != "Deposited" {
            continue;
        }
        let decoded = event_store::store::decode_event::<Wallet>(&event).expect("wallet event decodes");
        if let WalletEvent::Deposited { transaction_id, amount, .. } = decoded {
            deposits.push((event.aggregate_id.parse().expect("wallet id"), transaction_id, amount.value()));
        }
    }
    deposits
}

/// Read models agree with the events table: each event audited exactly once, each
/// balance-changing event one statement line, each wallet's balance the sum of its lines.
async fn assert_read_models_match_events(pool: &PgPool) {
    let events = positions(pool, "SELECT position FROM events ORDER BY position").await;
    let audited = positions(pool, "SELECT position FROM rm_audit_events ORDER BY position").await;
    assert_eq!(audited, events, "rm_audit_events holds every event position exactly once");
    let types: Vec<String> = ENTRY_EVENT_TYPES.iter().map(|t| t.to_string()).collect();
    let moving: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE event_type = ANY($1) ORDER BY position")
            .bind(&types)
            .fetch_all(pool)
            .await
            .expect("query");
    let entries = positions(pool, "SELECT position FROM rm_wallet_entries ORDER BY position").await;
    assert_eq!(entries, moving, "one statement line per balance-changing event");
    let unbalanced: Vec<Uuid> = sqlx::query_scalar(
        "SELECT wallet_id FROM rm_wallets w WHERE balance <> \
           (SELECT COALESCE(sum(amount), 0) FROM rm_wallet_entries e WHERE e.wallet_id = w.wallet_id)",
    )
    .fetch_all(pool)
    .await
    .expect("query");
    assert!(unbalanced.is_empty(), "wallets whose balance is not the sum of their lines: {unbalanced:?}");
}

/// `rm_wallets` balances equal what the commands add up to.
async fn assert_balances(pool: &PgPool, expected: &BTreeMap<Uuid, Decimal>) {
    for (wallet, balance) in expected {
        let projected: Decimal = sqlx::query_scalar("SELECT balance FROM rm_wallets WHERE wallet_id = $1")
            .bind(wallet)
            .fetch_one(pool)
            .await
            .expect("wallet row");
        assert_eq!(projected, *balance, "balance of wallet {wallet}");
    }
}

/// How many of `ids` have a row in rm_transactions (its primary key forbids doubles).
async fn transactions_found(pool: &PgPool, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM rm_transactions WHERE transaction_id = ANY($1)")
        .bind(ids)
        .fetch_one(pool)
        .await
        .expect("query")
}

/// Session ids holding the relay's advisory lock in this database.
async fn relay_lock_holder(pool: &PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 AND objid::bigint = $2 \
         AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(RELAY_LOCK.0 as i64)
    .bind(RELAY_LOCK.1 as i64)
    .fetch_optional(pool)
    .await
    .expect("pg_locks")
}

// ---------------------------------------------------------------------------------------------
// Helpers: commands
// ---------------------------------------------------------------------------------------------

fn transaction_id(reply: &Value) -> Uuid {
    reply["transaction_id"].as_str().expect("transaction_id").parse().expect("uuid")
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("decimal")
}

/// A deposit or withdrawal through a running TestApp, timed.
async fn timed_command(app: &TestApp, user: &TestUser, path: String, body: Value) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let reply = app.post(&path, &user.token, body).await;
    (reply.status, reply.body, started.elapsed())
}

fn deposit_body(amount: &str) -> Value {
    json!({"amount": amount, "reference": format!("ref-{}", Uuid::new_v4())})
}

fn withdrawal_body(amount: &str) -> Value {
    json!({"amount": amount, "reference": format!("payout-{}", Uuid::new_v4()), "destination": "IBAN DE89 3704 0044 0532 0130 00"})
}

/// Creates an admin directly in the store, as `ecoledger admin create` does.
async fn create_admin(pool: &PgPool, username: &str) {
    let user = new_user(Uuid::new_v4(), username, Role::Admin).await;
    let store = Store::new(pool.clone());
    let Begun::Fresh(uow) = store.begin(CommandContext::new("test"), None).await.expect("begin") else {
        unreachable!("a command without an idempotency key is always fresh")
    };
    registration::register(*uow, user).await.expect("admin registered");
}

async fn new_user(user_id: Uuid, username: &str, role: Role) -> NewUser {
    NewUser {
        user_id,
        username: username.to_string(),
        email: format!("{username}@example.org"),
        display_name: None,
        password_hash: command_api::auth::hash_password(PASSWORD.to_string()).await.expect("hash"),
        roles: BTreeSet::from([role]),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers: the ecoledger binary as a child process
// ---------------------------------------------------------------------------------------------

/// `ecoledger serve` in a child process, killed on drop.
struct Binary {
    child: tokio::process::Child,
    http: Http,
}

impl Binary {
    async fn start(db: &TestDb, prefix: &str, components: &str) -> Binary {
        let (child, base) = common::spawn_binary(db, prefix, components).await;
        Binary { child, http: Http { base, client: reqwest::Client::new() } }
    }

    /// SIGKILL, then reap the process.
    async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL delivered");
    }
}

/// An HTTP client of a server started as a child process.
#[derive(Clone)]
struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    /// Posts JSON; `Err` when the connection fails (the process may be dead).
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn login(&self, username: &str) -> String {
        let (status, body) = self
            .post("/api/v1/auth/token", None, json!({"username": username, "password": PASSWORD}))
            .await
            .expect("login sent");
        assert_eq!(status, StatusCode::OK, "login {username}: {body:?}");
        body["access_token"].as_str().expect("token").to_string()
    }

    /// Registers a user and returns the wallet ids by currency code.
    async fn register(&self, username: &str) -> HashMap<String, Uuid> {
        let body = json!({"username": username, "email": format!("{username}@example.org"), "password": PASSWORD});
        let (status, body) = self.post("/api/v1/users", None, body).await.expect("register sent");
        assert_eq!(status, StatusCode::CREATED, "register {username}: {body:?}");
        body["wallets"]
            .as_array()
            .expect("wallets")
            .iter()
            .map(|w| (w["currency"].as_str().unwrap().to_string(), w["id"].as_str().unwrap().parse().unwrap()))
            .collect()
    }

    /// Deposits and returns the transaction id, asserting 201.
    async fn deposit(&self, token: &str, wallet: Uuid, amount: &str) -> Uuid {
        let (status, body) = self
            .post(&format!("/api/v1/wallets/{wallet}/deposits"), Some(token), deposit_body(amount))
            .await
            .expect("deposit sent");
        assert_eq!(status, StatusCode::CREATED, "deposit: {body:?}");
        transaction_id(&body)
    }
}

fn options(components: &[Component]) -> SpawnOptions {
    SpawnOptions { components: components.to_vec(), ..SpawnOptions::default() }
}

/// A second handle on the same test database (TestApp::spawn_on takes one by value).
fn same_db(db: &TestDb) -> TestDb {
    TestDb { name: db.name.clone(), url: db.url.clone(), pool: db.pool.clone() }
}

// ---------------------------------------------------------------------------------------------
// 1. NATS down
// ---------------------------------------------------------------------------------------------

/// Commands sent while NATS is down: each answers 201 promptly. Returns the expected balance
/// change per wallet and the transaction ids.
async fn commands_while_nats_is_down(
    app: &TestApp,
    admin: &TestUser,
    alice: &TestUser,
    bob: &TestUser,
) -> (BTreeMap<Uuid, Decimal>, Vec<Uuid>) {
    let mut changes: BTreeMap<Uuid, Decimal> = BTreeMap::new();
    let mut ids = Vec::new();
    let deposits = [
        (alice, "EUR", "10.10"),
        (alice, "USD", "7.00"),
        (bob, "EUR", "3.33"),
        (bob, "CARBON", "1.500"),
        (alice, "EUR", "0.90"),
    ];
    for (user, currency, amount) in deposits {
        let wallet = user.wallet(currency);
        let (status, body, took) =
            timed_command(app, admin, format!("/api/v1/wallets/{wallet}/deposits"), deposit_body(amount)).await;
        assert_eq!(status, StatusCode::CREATED, "deposit while NATS is down: {body:?}");
        assert!(took < COMMAND_WHILE_NATS_DOWN_MAX, "deposit took {took:?} while NATS is down");
        *changes.entry(wallet).or_default() += dec(amount);
        ids.push(transaction_id(&body));
    }
    let withdrawals = [(alice, "EUR", "30.00"), (bob, "EUR", "1.11")];
    for (user, currency, amount) in withdrawals {
        let wallet = user.wallet(currency);
        let (status, body, took) =
            timed_command(app, user, format!("/api/v1/wallets/{wallet}/withdrawals"), withdrawal_body(amount)).await;
        assert_eq!(status, StatusCode::CREATED, "withdrawal while NATS is down: {body:?}");
        assert!(took < COMMAND_WHILE_NATS_DOWN_MAX, "withdrawal took {took:?} while NATS is down");
        *changes.entry(wallet).or_default() -= dec(amount);
        ids.push(transaction_id(&body));
    }
    (changes, ids)
}

#[tokio::test]
async fn commands_succeed_while_nats_is_down_and_are_projected_exactly_once_when_it_returns() {
    let mut nats = PrivateNats::start().await;
    let app = TestApp::spawn_with(SpawnOptions { nats_url: nats.url(), ..SpawnOptions::default() }).await;
    let admin = app.admin().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let mut expected: BTreeMap<Uuid, Decimal> = BTreeMap::new();
    let mut ids = Vec::new();
    for (user, amount) in [(&alice, "100.00"), (&bob, "50.25")] {
        ids.push(transaction_id(&app.deposit(&admin, user.wallet("EUR"), amount).await.body));
        expected.insert(user.wallet("EUR"), dec(amount));
    }
    wait_for_published_head(&app.db.pool).await;
    app.wait_for_projections(app.head_position().await).await;

    nats.stop();
    let (changes, more_ids) = commands_while_nats_is_down(&app, &admin, &alice, &bob).await;
    for (wallet, change) in changes {
        *expected.entry(wallet).or_default() += change;
    }
    ids.extend(more_ids);
    let head = app.head_position().await;
    let published = published_position(&app.db.pool).await;
    assert!(published < head, "nothing can be published while NATS is down: published {published}, head {head}");
    assert!(highest_checkpoint(&app.db.pool).await <= published, "projections never pass the published watermark");

    nats.resume().await;
    assert_eq!(wait_for_published_head(&app.db.pool).await, head);
    app.wait_for_projections(head).await;
    assert_balances(&app.db.pool, &expected).await;
    assert_eq!(transactions_found(&app.db.pool, &ids).await, ids.len() as i64, "every command has its transaction row");
    assert_read_models_match_events(&app.db.pool).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Messages lost or reordered on the way
// ---------------------------------------------------------------------------------------------

/// The projector's durable consumer (one for every projection).
const PROJECTOR_CONSUMER: &str = "projections";

/// Waits until the projector's durable consumer exists: it delivers only new messages.
async fn wait_for_projection_consumers(stream: &jetstream::stream::Stream) {
    eventually("the projector's consumer to exist", || async {
        stream.consumer_info(PROJECTOR_CONSUMER).await.ok().map(|_| ())
    })
    .await;
}

/// Waits until the projector acknowledged every message up to `sequence`.
async fn wait_for_projection_acks(stream: &jetstream::stream::Stream, sequence: u64) {
    eventually("the projector to acknowledge every message", || async {
        let info = stream.consumer_info(PROJECTOR_CONSUMER).await.ok()?;
        (info.ack_floor.stream_sequence >= sequence).then_some(())
    })
    .await;
}

/// Publishes as the relay would (with the event's deduplication id); `message_id: None` sends
/// a repeat JetStream cannot dedupe.
async fn publish(js: &jetstream::Context, bus: &Bus, message: &PublishedEvent, message_id: Option<String>) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = message_id {
        headers.insert("Nats-Msg-Id", id.as_str());
    }
    let payload = serde_json::to_vec(message).expect("serialises");
    let ack = js
        .publish_with_headers(bus.event_subject(&message.event.aggregate_type), headers, payload.into())
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    ack.sequence
}

#[tokio::test]
async fn projections_fill_a_dropped_message_and_a_swapped_pair_from_postgres() {
    let app = TestApp::spawn_with(options(&[Component::Api, Component::Projections])).await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let mut expected: BTreeMap<Uuid, Decimal> = BTreeMap::new();
    for (currency, amount) in
        [("EUR", "10.00"), ("USD", "20.00"), ("EUR", "5.50"), ("CARBON", "2.125"), ("EUR", "1.01"), ("USD", "0.99")]
    {
        app.deposit(&admin, alice.wallet(currency), amount).await;
        *expected.entry(alice.wallet(currency)).or_default() += dec(amount);
    }
    let head = app.head_position().await;
    assert_eq!(published_position(&app.db.pool).await, 0, "no relay runs, so nothing is published");

    let bus = Bus::new(&app.prefix).expect("valid prefix");
    let js = jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
    let stream = bus.ensure_stream(&js).await.expect("stream");
    wait_for_projection_consumers(&stream).await;

    let events = stored_events(&app.db.pool).await;
    let n = events.len();
    let (dropped, swapped) = (n / 3, 2 * n / 3);
    assert!(swapped + 2 < n, "enough events to drop one and swap two before the last: {n}");
    let messages: Vec<PublishedEvent> = events
        .iter()
        .enumerate()
        .map(|(i, event)| PublishedEvent {
            prev_position: if i == 0 { 0 } else { events[i - 1].position },
            event: event.clone(),
        })
        .collect();
    let mut order: Vec<usize> = (0..n).filter(|&i| i != dropped).collect();
    let at = order.iter().position(|&i| i == swapped).expect("swapped index sent");
    order.swap(at, at + 1);
    // The watermark stays at 0 while messages are sent: only the message path can apply them.
    let hashes = stored_hashes(&app.db.pool).await;
    for i in order {
        let position = messages[i].event.position;
        publish(&js, &bus, &messages[i], Some(bus.message_id(position, &hashes[&position]))).await;
    }
    let last_sequence = publish(&js, &bus, &messages[0], None).await;
    app.wait_for_projections(head).await;
    wait_for_projection_acks(&stream, last_sequence).await;
    assert_eq!(published_position(&app.db.pool).await, 0, "the projections got there from messages alone");

    sqlx::query("UPDATE relay_state SET published_position = $1 WHERE id = 1")
        .bind(head)
        .execute(&app.db.pool)
        .await
        .expect("update");
    assert_eq!(lowest_checkpoint(&app.db.pool).await, head);
    assert_balances(&app.db.pool, &expected).await;
    assert_read_models_match_events(&app.db.pool).await;
}

// ---------------------------------------------------------------------------------------------
// 3. SIGKILL between commit and publish
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn events_committed_by_a_process_killed_before_publishing_are_published_after_restart() {
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let mut binary = Binary::start(&db, &prefix, "api").await;
    create_admin(&db.pool, "admin").await;
    let admin = binary.http.login("admin").await;
    let wallets = binary.http.register("alice").await;
    let mut expected: BTreeMap<Uuid, Decimal> = BTreeMap::new();
    let mut ids = Vec::new();
    for (currency, amount) in [("EUR", "40.00"), ("USD", "12.34"), ("EUR", "2.00"), ("ETH", "0.000000000000000001")] {
        ids.push(binary.http.deposit(&admin, wallets[currency], amount).await);
        *expected.entry(wallets[currency]).or_default() += dec(amount);
    }
    let head = head(&db.pool).await;
    assert_eq!(published_position(&db.pool).await, 0, "an api-only process publishes nothing");
    binary.kill().await;

    let app = TestApp::spawn_on(db, prefix, SpawnOptions::default()).await;
    assert_eq!(wait_for_published_head(&app.db.pool).await, head, "nothing was committed after the kill");
    app.wait_for_projections(head).await;
    assert_balances(&app.db.pool, &expected).await;
    assert_eq!(transactions_found(&app.db.pool, &ids).await, ids.len() as i64);
    assert_read_models_match_events(&app.db.pool).await;
}

/// Fires `BURST_DEPOSITS` deposits at once and SIGKILLs the process as soon as
/// `BURST_ACKS_BEFORE_KILL` are acknowledged. Returns the acknowledged transaction ids.
async fn burst_then_kill(binary: &mut Binary, admin: &str, wallets: &[Uuid]) -> Vec<Uuid> {
    let mut acknowledged = Vec::new();
    let http = binary.http.clone();
    let mut pending: FuturesUnordered<_> = (0..BURST_DEPOSITS)
        .map(|i| {
            let path = format!("/api/v1/wallets/{}/deposits", wallets[i % wallets.len()]);
            let amount = format!("{}.00", i + 1);
            let http = &http;
            async move { http.post(&path, Some(admin), deposit_body(&amount)).await }
        })
        .collect();
    let mut killed = false;
    while let Some(result) = pending.next().await {
        if let Ok((StatusCode::CREATED, body)) = result {
            acknowledged.push(transaction_id(&body));
        }
        if !killed && acknowledged.len() >= BURST_ACKS_BEFORE_KILL {
            binary.kill().await;
            killed = true;
        }
    }
    assert!(killed, "the burst got {} acknowledgements", acknowledged.len());
    acknowledged
}

#[tokio::test]
async fn a_sigkill_right_after_a_burst_of_deposits_loses_and_doubles_nothing() {
    let db = TestDb::create().await;
    let prefix = unique_prefix();
    let mut binary = Binary::start(&db, &prefix, "api,relay,projections").await;
    create_admin(&db.pool, "admin").await;
    let admin = binary.http.login("admin").await;
    let mut wallets: Vec<Uuid> = Vec::new();
    for username in ["alice", "bob"] {
        wallets.extend(binary.http.register(username).await.into_values());
    }
    let acknowledged = burst_then_kill(&mut binary, &admin, &wallets).await;

    let app = TestApp::spawn_on(db, prefix, SpawnOptions::default()).await;
    let head = wait_for_published_head(&app.db.pool).await;
    app.wait_for_projections(head).await;
    let deposits = stored_deposits(&app.db.pool).await;
    let committed: BTreeSet<Uuid> = deposits.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(committed.len(), deposits.len(), "each deposit committed once");
    for id in &acknowledged {
        assert!(committed.contains(id), "acknowledged deposit {id} was committed");
    }
    assert_eq!(
        transactions_found(&app.db.pool, &acknowledged).await,
        acknowledged.len() as i64,
        "each acknowledged deposit projected"
    );
    let all: Vec<Uuid> = committed.into_iter().collect();
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_transactions").fetch_one(&app.db.pool).await.expect("count");
    assert_eq!(rows, all.len() as i64, "one transaction row per committed deposit, acknowledged or not");
    assert_eq!(transactions_found(&app.db.pool, &all).await, all.len() as i64);
    let mut expected: BTreeMap<Uuid, Decimal> = wallets.iter().map(|w| (*w, Decimal::ZERO)).collect();
    for (wallet, _, amount) in deposits {
        *expected.get_mut(&wallet).expect("a burst wallet") += amount;
    }
    assert_balances(&app.db.pool, &expected).await;
    assert_read_models_match_events(&app.db.pool).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Publishing order under concurrent commits
// ---------------------------------------------------------------------------------------------

/// Collects published messages from the start of the stream until `last` arrives.
async fn collect_until(
    messages: &mut consumer::pull::Stream,
    bus: &Bus,
    hashes: &BTreeMap<i64, Vec<u8>>,
    last: i64,
) -> Vec<PublishedEvent> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut received = Vec::new();
    loop {
        let message = tokio::time::timeout_at(deadline, messages.next())
            .await
            .unwrap_or_else(|_| panic!("timed out at {} messages waiting for position {last}", received.len()))
            .expect("the consumer stream continues")
            .expect("a message");
        let published: PublishedEvent = serde_json::from_slice(&message.payload).expect("a PublishedEvent");
        let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str().to_string());
        let position = published.event.position;
        assert_eq!(id, Some(bus.message_id(position, &hashes[&position])), "deduplication id");
        received.push(published);
        if position >= last {
            return received;
        }
    }
}

#[tokio::test]
async fn the_relay_publishes_concurrent_commits_in_position_order_with_an_unbroken_chain() {
    let app = TestApp::spawn().await;
    let bus = Bus::new(&app.prefix).expect("valid prefix");
    let js = jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
    let stream = bus.ensure_stream(&js).await.expect("stream");
    let config = consumer::pull::Config {
        durable_name: Some("faults_order".to_string()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::None,
        ..Default::default()
    };
    let consumer = stream.get_or_create_consumer("faults_order", config).await.expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");

    let admin = app.admin().await;
    let mut wallets = Vec::new();
    for username in ["alice", "bob", "carol", "dave", "erin"] {
        wallets.extend(app.register(username).await.wallets.into_values());
    }
    let deposits = (0..CONCURRENT_DEPOSITS).map(|i| app.deposit(&admin, wallets[i % wallets.len()], "1.00"));
    futures::future::join_all(deposits).await;
    let head = app.head_position().await;

    let hashes = stored_hashes(&app.db.pool).await;
    let received = collect_until(&mut messages, &bus, &hashes, head).await;
    let mut previous = 0;
    for message in &received {
        assert_eq!(message.prev_position, previous, "prev_position of message at {}", message.event.position);
        assert!(message.event.position > previous, "positions strictly increase");
        previous = message.event.position;
    }
    let published: Vec<i64> = received.iter().map(|m| m.event.position).collect();
    assert_eq!(
        published,
        positions(&app.db.pool, "SELECT position FROM events ORDER BY position").await,
        "every event published once"
    );
}

/// A database restored from a backup, or a replica promoted after losing its last commits,
/// gives new events positions that were published under the same prefix a moment ago.
/// JetStream must store them, not drop them as repeats of the events it had at those positions.
#[tokio::test]
async fn a_new_history_under_a_prefix_in_use_is_published_whole_not_dropped_as_repeats() {
    let first = TestApp::spawn().await;
    let admin = first.admin().await;
    let alice = first.register("alice").await;
    first.deposit(&admin, alice.wallet("EUR"), "1.00").await;
    let first_head = wait_for_published_head(&first.db.pool).await;
    let first_events = first.event_count().await;
    let (_, prefix) = first.stop();

    let second = TestApp::spawn_on(TestDb::create().await, prefix.clone(), SpawnOptions::default()).await;
    let admin = second.admin().await;
    let bob = second.register("bob").await;
    second.deposit(&admin, bob.wallet("EUR"), "2.00").await;
    let second_head = wait_for_published_head(&second.db.pool).await;
    let second_events = second.event_count().await;
    assert!(second_head >= first_head, "the new history reuses every published position: {second_head} < {first_head}");

    let js = jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
    let mut stream = Bus::new(&prefix).expect("valid prefix").ensure_stream(&js).await.expect("stream");
    let stored = stream.info().await.expect("stream info").state.messages;
    assert_eq!(stored as i64, first_events + second_events, "messages in the stream: both histories, each event once");
    second.wait_for_projections(second_head).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Standby relay
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_standby_relay_takes_over_when_the_active_one_stops() {
    let active = TestApp::spawn_with(options(&[Component::Relay])).await;
    let pool = active.db.pool.clone();
    let first_holder = eventually("the first relay to take the lock", || relay_lock_holder(&pool)).await;
    let standby =
        TestApp::spawn_on(same_db(&active.db), active.prefix.clone(), options(&[Component::Api, Component::Relay]))
            .await;
    let admin = standby.admin().await;
    let alice = standby.register("alice").await;
    standby.deposit(&admin, alice.wallet("EUR"), "10.00").await;
    wait_for_published_head(&pool).await;
    assert_eq!(relay_lock_holder(&pool).await, Some(first_holder), "the first relay stayed active; the second waited");

    let _ = active.stop();
    let second_holder = eventually("the standby relay to take the lock", || async {
        relay_lock_holder(&pool).await.filter(|pid| *pid != first_holder)
    })
    .await;
    assert_ne!(second_holder, first_holder);
    for amount in ["1.00", "2.00", "3.00"] {
        standby.deposit(&admin, alice.wallet("EUR"), amount).await;
    }
    let head = wait_for_published_head(&pool).await;
    assert_eq!(head, standby.head_position().await);

    let bus = Bus::new(&standby.prefix).expect("valid prefix");
    let js = jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
    let mut stream = js.get_stream(bus.events_stream()).await.expect("stream");
    let state = stream.info().await.expect("stream info").state.clone();
    assert_eq!(state.messages as i64, standby.event_count().await, "each event in the stream once");
}

// ---------------------------------------------------------------------------------------------
// In-process stream locks: a unit of work whose streams share a stripe takes it once
// ---------------------------------------------------------------------------------------------

/// Whether registering `user_id` locks two of its five streams on the same stripe.
fn user_streams_share_a_stripe(store: &Store, user_id: Uuid) -> bool {
    let user = user_id.to_string();
    let wallets: Vec<String> = Currency::ALL.iter().map(|currency| wallet_id(user_id, *currency).to_string()).collect();
    let mut streams = vec![(<User as Aggregate>::TYPE, user.as_str())];
    streams.extend(wallets.iter().map(|wallet| (<Wallet as Aggregate>::TYPE, wallet.as_str())));
    streams.iter().enumerate().any(|(i, a)| streams[i + 1..].iter().any(|b| store.share_a_stripe(*a, *b)))
}

#[tokio::test]
async fn a_user_whose_streams_share_a_lock_stripe_can_register() {
    let db = TestDb::create().await;
    let store = Store::new(db.pool.clone());
    let user_id = (0..1_000_000)
        .map(|_| Uuid::new_v4())
        .find(|id| user_streams_share_a_stripe(&store, *id))
        .expect("about 1 in 400 user ids has two streams on one stripe");
    let Begun::Fresh(uow) = store.begin(CommandContext::new("test"), None).await.expect("begin") else {
        unreachable!("a command without an idempotency key is always fresh")
    };
    let user = new_user(user_id, "stripey", Role::Auditor).await;
    let result = registration::register(*uow, user).await;
    assert!(result.is_ok(), "registration failed: {:?}", result.err().map(|e| e.code));
}
