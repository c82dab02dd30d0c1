//! Integrity of the ledger end to end: idempotent commands, read models that a replay
//! reproduces row for row, the trial balance, tamper detection by `verify`, erasable
//! personal data, and snapshots that load the same state as a full replay.

mod common;

use std::future::Future;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{eventually, Reply, SpawnOptions, TestApp, TestUser, PASSWORD};
use domain::wallet::Wallet;
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Concurrent repeats of one idempotent request.
const CONCURRENT_REPEATS: usize = 10;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn dec(text: &str) -> Decimal {
    text.parse().expect("a decimal")
}

async fn deposit_keyed(
    app: &TestApp,
    admin: &TestUser,
    wallet: Uuid,
    amount: &str,
    reference: &str,
    key: &str,
) -> Reply {
    let body = json!({"amount": amount, "reference": reference});
    let path = format!("/api/v1/wallets/{wallet}/deposits");
    app.request_with(Method::POST, &path, Some(&admin.token), Some(body), &[("Idempotency-Key", key)]).await
}

async fn withdraw(
    app: &TestApp,
    user: &TestUser,
    wallet: Uuid,
    amount: &str,
    reference: &str,
    key: Option<&str>,
) -> Reply {
    let body = json!({"amount": amount, "reference": reference, "destination": "IBAN DE89 3704 0044"});
    let path = format!("/api/v1/wallets/{wallet}/withdrawals");
    let headers: Vec<(&str, &str)> = key.map(|key| ("Idempotency-Key", key)).into_iter().collect();
    app.request_with(Method::POST, &path, Some(&user.token), Some(body), &headers).await
}

/// Events of `event_type` in the stream `stream_id`.
async fn events_of(app: &TestApp, stream_id: Uuid, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = $2")
        .bind(stream_id.to_string())
        .bind(event_type)
        .fetch_one(&app.db.pool)
        .await
        .expect("count events")
}

/// The wallet's balance as the command side sees it (its aggregate, loaded from events).
async fn aggregate_balance(app: &TestApp, wallet: Uuid) -> Decimal {
    app.store.load_current::<Wallet>(&wallet.to_string()).await.expect("wallet loads").aggregate.balance
}

/// Sends a sequential repeat again while it answers `idempotency_key_in_progress`, as a
/// client honouring `Retry-After` would: a prompt repeat can still meet the lock of the
/// previous, finished request (the bug that
/// `a_finished_command_repeated_at_once_never_answers_in_progress` shows).
async fn settled<F, Fut>(mut send: F) -> Reply
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Reply>,
{
    eventually("an answer other than idempotency_key_in_progress", || {
        let reply = send();
        async move {
            let reply = reply.await;
            (reply.code() != "idempotency_key_in_progress").then_some(reply)
        }
    })
    .await
}

fn replayed(reply: &Reply) -> bool {
    reply.header("idempotent-replayed").as_deref() == Some("true")
}

fn transaction_id(reply: &Reply) -> Uuid {
    reply.body["transaction_id"].as_str().expect("a transaction id").parse().expect("uuid")
}

/// Runs the `ecoledger` binary against the app's database.
async fn ecoledger(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ecoledger"))
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("ECOLEDGER_LOG", "warn")
        .output()
        .await
        .expect("the ecoledger binary runs")
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Waits until the relay has published (and chained) every event up to `position`.
async fn wait_for_relay(app: &TestApp, position: i64) {
    let pool = app.db.pool.clone();
    eventually("the relay to publish", || {
        let pool = pool.clone();
        async move {
            let published: i64 = sqlx::query_scalar("SELECT published_position FROM relay_state WHERE id = 1")
                .fetch_one(&pool)
                .await
                .ok()?;
            (published >= position).then_some(())
        }
    })
    .await;
}

/// Runs `statements` against `events` with its immutability triggers disabled, as a database
/// owner could; each statement must change exactly one row.
async fn tamper(app: &TestApp, statements: &[String]) {
    let mut tx = app.db.pool.begin().await.expect("begin");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER").execute(&mut *tx).await.expect("disable triggers");
    for statement in statements {
        let changed = sqlx::query(statement).execute(&mut *tx).await.expect("tampering statement runs");
        assert_eq!(changed.rows_affected(), 1, "{statement} changes one row");
    }
    sqlx::query("ALTER TABLE events ENABLE TRIGGER USER").execute(&mut *tx).await.expect("enable triggers");
    tx.commit().await.expect("commit tampering");
}

/// Every projection's table names.
fn projection_tables() -> Vec<&'static str> {
    projections::all().iter().flat_map(|p| p.tables().iter().copied()).collect()
}

/// Asserts that `schema` holds the same rows as the live tables, for every projection table,
/// and that none of them is empty (so the comparison proves something).
async fn assert_tables_equal_to_live(pool: &PgPool, schema: &str) {
    for table in projection_tables() {
        let (live, other, only_live, only_other): (i64, i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM public.{table}), (SELECT count(*) FROM {schema}.{table}), \
                    (SELECT count(*) FROM (SELECT * FROM public.{table} EXCEPT ALL SELECT * FROM {schema}.{table}) a), \
                    (SELECT count(*) FROM (SELECT * FROM {schema}.{table} EXCEPT ALL SELECT * FROM public.{table}) b)"
        ))
        .fetch_one(pool)
        .await
        .expect("compare tables");
        assert!(live > 0, "public.{table} is empty: the comparison would prove nothing");
        assert_eq!(live, other, "{table}: live and {schema} row counts differ");
        assert_eq!((only_live, only_other), (0, 0), "{table}: rows only live, rows only in {schema}");
    }
}

/// Row count and a digest of every row of each projection table in `schema`.
async fn fingerprint(pool: &PgPool, schema: &str) -> Vec<(&'static str, i64, String)> {
    let mut prints = Vec::new();
    for table in projection_tables() {
        let (count, digest): (i64, String) = sqlx::query_as(&format!(
            "SELECT count(*), md5(COALESCE(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {schema}.{table} t"
        ))
        .fetch_one(pool)
        .await
        .expect("fingerprint");
        prints.push((table, count, digest));
    }
    prints
}

/// For every currency: the sum of wallet and system account balances, in `schema`.
async fn currency_sums(pool: &PgPool, schema: &str) -> Vec<(String, Decimal)> {
    sqlx::query_as(&format!(
        "SELECT currency, sum(balance) FROM ( \
           SELECT currency, balance FROM {schema}.rm_wallets \
           UNION ALL SELECT currency, balance FROM {schema}.rm_system_accounts) x \
         GROUP BY currency ORDER BY currency"
    ))
    .fetch_all(pool)
    .await
    .expect("trial balance")
}

/// A user of `app` made by registering over the API with every personal field set.
async fn register_with_profile(app: &TestApp, username: &str, email: &str, display_name: &str, password: &str) -> Uuid {
    let body = json!({"username": username, "email": email, "password": password, "display_name": display_name});
    let reply = app.request(Method::POST, "/api/v1/users", None, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "register: {:?}", reply.body);
    reply.body["user"]["id"].as_str().expect("id").parse().expect("uuid")
}

/// Events whose canonical text contains `needle` (case-insensitive, no wildcards).
async fn events_containing(app: &TestApp, needle: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE strpos(lower(canonical), lower($1)) > 0")
        .bind(needle)
        .fetch_one(&app.db.pool)
        .await
        .expect("search events")
}

/// What [`mix`] did, for the assertions after it.
struct Mix {
    admin: TestUser,
    alice: TestUser,
    bob: TestUser,
    carol: TestUser,
    /// Position of alice's first deposit (100.00 EUR), before anything else moved money.
    first_deposit_position: i64,
}

/// A mix of commands: several users, deposits, a completed and a failed withdrawal, a
/// refused one, two reversals, a freeze and unfreeze, a profile update.
async fn mix(app: &TestApp) -> Mix {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let first_deposit_position = app.deposit(&admin, alice.wallet("EUR"), "100.00").await.position();
    app.deposit(&admin, bob.wallet("EUR"), "50.00").await;
    let carol_deposit = transaction_id(&app.deposit(&admin, carol.wallet("USD"), "30.00").await);
    app.deposit(&admin, alice.wallet("CARBON"), "5.000").await;

    let completed = withdraw(app, &alice, alice.wallet("EUR"), "30.00", "payout-1", None).await;
    assert_eq!(completed.status, StatusCode::CREATED, "{:?}", completed.body);
    let completed = transaction_id(&completed);
    let reply =
        app.request(Method::POST, &format!("/api/v1/withdrawals/{completed}/complete"), Some(&admin.token), None).await;
    assert_eq!(reply.status, StatusCode::OK, "complete: {:?}", reply.body);

    let failed = withdraw(app, &bob, bob.wallet("EUR"), "20.00", "payout-2", None).await;
    assert_eq!(failed.status, StatusCode::CREATED, "{:?}", failed.body);
    let failed = transaction_id(&failed);
    let reply =
        app.post(&format!("/api/v1/withdrawals/{failed}/fail"), &admin.token, json!({"reason": "bank refused"})).await;
    assert_eq!(reply.status, StatusCode::OK, "fail: {:?}", reply.body);

    let refused = withdraw(app, &alice, alice.wallet("EUR"), "1000.00", "payout-3", None).await;
    assert_eq!(refused.code(), "insufficient_funds");

    for (original, reason) in [(carol_deposit, "chargeback"), (completed, "payout bounced")] {
        let reply = app
            .post(&format!("/api/v1/transactions/{original}/reversal"), &admin.token, json!({"reason": reason}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "reversal: {:?}", reply.body);
    }

    let bob_eur = bob.wallet("EUR");
    let reply = app.post(&format!("/api/v1/wallets/{bob_eur}/freeze"), &admin.token, json!({"reason": "review"})).await;
    assert_eq!(reply.status, StatusCode::OK, "freeze: {:?}", reply.body);
    let frozen = withdraw(app, &bob, bob_eur, "1.00", "payout-4", None).await;
    assert_eq!(frozen.code(), "wallet_frozen");
    let reply =
        app.request(Method::POST, &format!("/api/v1/wallets/{bob_eur}/unfreeze"), Some(&admin.token), None).await;
    assert_eq!(reply.status, StatusCode::OK, "unfreeze: {:?}", reply.body);

    let profile = json!({"display_name": "Alice A.", "is_seller": true, "is_buyer": false});
    let reply = app
        .request(Method::PUT, &format!("/api/v1/users/{}/profile", alice.id), Some(&alice.token), Some(profile))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "profile: {:?}", reply.body);

    // The chain flows (no chain node: the bridge's side is recorded straight on the store).
    common::chain::every_chain_flow(app, &admin, &alice).await;

    // The ledger flows: a transfer, a listing, a purchase settled by its saga, and a price.
    let transfer =
        json!({"from_wallet_id": alice.wallet("EUR"), "amount": "5.00", "to_username": "carol", "currency": "EUR"});
    let reply = app.post("/api/v1/transfers", &alice.token, transfer).await;
    assert_eq!(reply.status, StatusCode::CREATED, "transfer: {:?}", reply.body);
    let listing = json!({
        "quantity": "2.000",
        "pricing": {"kind": "fixed", "unit_price": "10.00", "currency": "EUR"},
        "credit": {"project_id": "VCS-1", "registry": "Verra", "vintage": 2023},
    });
    let reply = app.post("/api/v1/announcements", &alice.token, listing).await;
    assert_eq!(reply.status, StatusCode::CREATED, "listing: {:?}", reply.body);
    let order = json!({"announcement_id": reply.body["id"], "quantity": "1.000", "max_total": "20.00"});
    let reply = app.post("/api/v1/purchases", &bob.token, order).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "purchase: {:?}", reply.body);
    let price =
        json!({"base": "CARBON", "quote": "EUR", "index": "EUA", "price": "71.25", "observed_at": chrono::Utc::now()});
    let reply = app.post("/api/v1/prices", &admin.token, price).await;
    assert_eq!(reply.status, StatusCode::CREATED, "price: {:?}", reply.body);
    let pool = app.db.pool.clone();
    common::eventually("the sagas to settle", || {
        let pool = pool.clone();
        async move {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM sagas WHERE status = 'pending' AND kind <> 'listing_expiry'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (pending == 0).then_some(())
        }
    })
    .await;

    Mix { admin, alice, bob, carol, first_deposit_position }
}

// ---------------------------------------------------------------------------------------
// 1. Idempotency
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_deposit_with_the_same_key_answers_the_stored_outcome_and_deposits_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");

    let first = deposit_keyed(&app, &admin, wallet, "10.00", "sepa-1", "deposit-key-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert!(!replayed(&first), "the first answer is not a replay");
    let again = deposit_keyed(&app, &admin, wallet, "10.00", "sepa-1", "deposit-key-1").await;

    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(again.body, first.body);
    assert!(replayed(&again), "a repeat says it is a replay");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(events_of(&app, wallet, "Deposited").await, 1);
    assert_eq!(aggregate_balance(&app, wallet).await, dec("10.00"));
}

#[tokio::test]
async fn a_deposit_key_reused_with_another_body_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let first = deposit_keyed(&app, &admin, wallet, "10.00", "sepa-1", "deposit-key-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let events_before = app.event_count().await;

    for (amount, reference) in [("11.00", "sepa-1"), ("10.00", "sepa-2")] {
        let other = settled(|| deposit_keyed(&app, &admin, wallet, amount, reference, "deposit-key-1")).await;
        assert_eq!(other.status, StatusCode::CONFLICT, "{:?}", other.body);
        assert_eq!(other.code(), "idempotency_key_reused");
    }

    assert_eq!(app.event_count().await, events_before);
    assert_eq!(aggregate_balance(&app, wallet).await, dec("10.00"));
    let original = settled(|| deposit_keyed(&app, &admin, wallet, "10.00", "sepa-1", "deposit-key-1")).await;
    assert!(replayed(&original), "the stored outcome survives the refused reuse");
    assert_eq!(original.body, first.body);
}

#[tokio::test]
async fn a_repeated_withdrawal_with_the_same_key_withdraws_once_and_another_body_is_refused() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    app.deposit(&admin, wallet, "100.00").await;

    let first = withdraw(&app, &alice, wallet, "40.00", "payout-1", Some("withdraw-key")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let again = withdraw(&app, &alice, wallet, "40.00", "payout-1", Some("withdraw-key")).await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert!(replayed(&again));
    let other = settled(|| withdraw(&app, &alice, wallet, "41.00", "payout-1", Some("withdraw-key"))).await;

    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.code(), "idempotency_key_reused");
    assert_eq!(events_of(&app, wallet, "WithdrawalRequested").await, 1);
    assert_eq!(aggregate_balance(&app, wallet).await, dec("60.00"));
}

#[tokio::test]
async fn the_same_key_from_another_user_is_a_different_command() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let other_admin = app.staff("admin2", domain::user::Role::Admin).await;
    let third_admin = app.staff("admin3", domain::user::Role::Admin).await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let first = deposit_keyed(&app, &admin, wallet, "10.00", "sepa-1", "shared-key").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);

    // Another body is not a reuse of someone else's key: a new deposit.
    let other_body = deposit_keyed(&app, &other_admin, wallet, "5.00", "sepa-2", "shared-key").await;
    // The same body from a third user is a new command too: it meets the reference's claim
    // instead of the first user's stored outcome.
    let same_body = deposit_keyed(&app, &third_admin, wallet, "10.00", "sepa-1", "shared-key").await;

    assert_eq!(other_body.status, StatusCode::CREATED, "{:?}", other_body.body);
    assert!(!replayed(&other_body));
    assert_ne!(transaction_id(&other_body), transaction_id(&first));
    assert_eq!(same_body.code(), "duplicate_reference", "{:?}", same_body.body);
    assert!(!replayed(&same_body));
    assert_eq!(events_of(&app, wallet, "Deposited").await, 2);
    assert_eq!(aggregate_balance(&app, wallet).await, dec("15.00"));
}

#[tokio::test]
async fn a_rejected_withdrawal_repeated_with_its_key_answers_the_same_rejection_even_after_funds_arrive() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");

    let first = withdraw(&app, &alice, wallet, "50.00", "payout-1", Some("poor-key")).await;
    assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", first.body);
    assert_eq!(first.code(), "insufficient_funds");
    app.deposit(&admin, wallet, "100.00").await;
    let again = settled(|| withdraw(&app, &alice, wallet, "50.00", "payout-1", Some("poor-key"))).await;

    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", again.body);
    assert_eq!(again.body, first.body);
    assert!(replayed(&again), "the stored rejection is replayed");
    assert_eq!(events_of(&app, wallet, "WithdrawalRequested").await, 0);
    assert_eq!(aggregate_balance(&app, wallet).await, dec("100.00"));
}

#[tokio::test]
async fn concurrent_repeats_of_one_deposit_key_deposit_exactly_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");

    let attempts = (0..CONCURRENT_REPEATS).map(|_| deposit_keyed(&app, &admin, wallet, "25.00", "sepa-c", "busy-key"));
    let replies = join_all(attempts).await;

    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    assert!(!created.is_empty(), "one request deposits: {replies:?}");
    for reply in &replies {
        let in_progress = reply.status == StatusCode::CONFLICT && reply.code() == "idempotency_key_in_progress";
        assert!(reply.status == StatusCode::CREATED || in_progress, "unexpected answer {reply:?}");
    }
    let original = transaction_id(created[0]);
    assert!(created.iter().all(|r| transaction_id(r) == original), "one transaction id: {created:?}");
    assert_eq!(created.iter().filter(|r| !replayed(r)).count(), 1, "exactly one original answer");
    assert_eq!(events_of(&app, wallet, "Deposited").await, 1);
    assert_eq!(aggregate_balance(&app, wallet).await, dec("25.00"));
    let later = settled(|| deposit_keyed(&app, &admin, wallet, "25.00", "sepa-c", "busy-key")).await;
    assert!(replayed(&later));
    assert_eq!(transaction_id(&later), original);
}

#[tokio::test]
async fn concurrent_repeats_of_one_withdrawal_key_withdraw_exactly_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    app.deposit(&admin, wallet, "100.00").await;

    let attempts =
        (0..CONCURRENT_REPEATS).map(|_| withdraw(&app, &alice, wallet, "30.00", "payout-c", Some("busy-key")));
    let replies = join_all(attempts).await;

    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    assert!(!created.is_empty(), "one request withdraws: {replies:?}");
    for reply in &replies {
        let in_progress = reply.status == StatusCode::CONFLICT && reply.code() == "idempotency_key_in_progress";
        assert!(reply.status == StatusCode::CREATED || in_progress, "unexpected answer {reply:?}");
    }
    let original = transaction_id(created[0]);
    assert!(created.iter().all(|r| transaction_id(r) == original), "one withdrawal id: {created:?}");
    assert_eq!(events_of(&app, wallet, "WithdrawalRequested").await, 1);
    assert_eq!(aggregate_balance(&app, wallet).await, dec("70.00"));
}

/// Sequential repeats of a finished command: enough that a short race shows up.
const SEQUENTIAL_REPEATS: usize = 250;

#[tokio::test]
async fn a_finished_command_repeated_at_once_never_answers_in_progress() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let first = deposit_keyed(&app, &admin, wallet, "10.00", "sepa-1", "key").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);

    let mut answers = Vec::new();
    for _ in 0..SEQUENTIAL_REPEATS {
        let again = deposit_keyed(&app, &admin, wallet, "10.00", "sepa-1", "key").await;
        answers.push((again.status, again.code().to_string(), replayed(&again)));
        let other = deposit_keyed(&app, &admin, wallet, "11.00", "sepa-1", "key").await;
        answers.push((other.status, other.code().to_string(), replayed(&other)));
    }

    let replay = (StatusCode::CREATED, String::new(), true);
    let reuse = (StatusCode::CONFLICT, "idempotency_key_reused".to_string(), false);
    let wrong: Vec<_> = answers.iter().filter(|answer| **answer != replay && **answer != reuse).collect();
    assert_eq!(wrong, Vec::<&(StatusCode, String, bool)>::new(), "answers other than a replay or a reuse refusal");
}

// ---------------------------------------------------------------------------------------
// 2. Read models and replay
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_replay_into_a_new_schema_reproduces_every_live_read_model_row_for_row() {
    let app = TestApp::spawn().await;
    mix(&app).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    let live: i64 = sqlx::query_scalar("SELECT min(position) FROM projection_checkpoints")
        .fetch_one(&app.db.pool)
        .await
        .expect("live checkpoint");
    assert_eq!(live, head);

    let report =
        projections::replay_into_schema(&app.store, &projections::all(), "replay_check", live).await.expect("replay");

    assert_eq!(report.position, live);
    assert_eq!(report.events as i64, app.event_count().await);
    assert_tables_equal_to_live(&app.db.pool, "replay_check").await;
    assert_eq!(
        index_columns(&app.db.pool, "replay_check").await,
        index_columns(&app.db.pool, "public").await,
        "the replay builds the indexes it deferred"
    );
}

/// Every index of the read-model tables in `schema`, as (table, unique, key columns; none for
/// an expression), sorted; not by name, which differs between a replay's copies and the live
/// tables.
async fn index_columns(pool: &sqlx::PgPool, schema: &str) -> Vec<(String, bool, Option<String>)> {
    sqlx::query_as(
        "SELECT t.relname::text, i.indisunique, \
                (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) \
         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND t.relname LIKE 'rm\\_%' ORDER BY 1, 2, 3",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("indexes")
}

#[tokio::test]
async fn a_point_in_time_replay_holds_only_earlier_events_and_leaves_live_tables_alone() {
    let app = TestApp::spawn().await;
    let mix = mix(&app).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    let live_before = fingerprint(&app.db.pool, "public").await;
    let n = mix.first_deposit_position;

    let output = ecoledger(&app, &["replay", "--to-position", &n.to_string()]).await;

    assert!(output.status.success(), "replay failed: {}", output_text(&output));
    let schema = format!("pit_{n}");
    let checkpoints: Vec<i64> = sqlx::query_scalar(&format!("SELECT position FROM {schema}.projection_checkpoints"))
        .fetch_all(&app.db.pool)
        .await
        .expect("pit checkpoints");
    assert_eq!(checkpoints, vec![n; projections::all().len()]);
    let (audited, last): (i64, Option<i64>) =
        sqlx::query_as(&format!("SELECT count(*), max(position) FROM {schema}.rm_audit_events"))
            .fetch_one(&app.db.pool)
            .await
            .expect("pit audit");
    let expected: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position <= $1")
        .bind(n)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!((audited, last), (expected, Some(n)));
    let balances: Vec<(Uuid, Decimal)> =
        sqlx::query_as(&format!("SELECT wallet_id, balance FROM {schema}.rm_wallets WHERE balance <> 0"))
            .fetch_all(&app.db.pool)
            .await
            .expect("pit wallets");
    assert_eq!(balances, vec![(mix.alice.wallet("EUR"), dec("100.00"))]);
    assert_eq!(fingerprint(&app.db.pool, "public").await, live_before, "live tables were touched");
}

#[tokio::test]
async fn a_live_rebuild_reproduces_the_read_models_and_projection_continues_afterwards() {
    let app = TestApp::spawn().await;
    let mix = mix(&app).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    let live_before = fingerprint(&app.db.pool, "public").await;

    let output = ecoledger(&app, &["replay", "--projection", "all"]).await;

    assert!(output.status.success(), "rebuild failed: {}", output_text(&output));
    assert_eq!(fingerprint(&app.db.pool, "public").await, live_before, "the rebuild changed the read models");
    let position = app.deposit(&mix.admin, mix.bob.wallet("USD"), "7.00").await.position();
    app.wait_for_projections(position).await;
    let balance: Decimal = sqlx::query_scalar("SELECT balance FROM rm_wallets WHERE wallet_id = $1")
        .bind(mix.bob.wallet("USD"))
        .fetch_one(&app.db.pool)
        .await
        .expect("bob's USD wallet");
    assert_eq!(balance, dec("7.00"));
    projections::replay_into_schema(&app.store, &projections::all(), "after_rebuild", position).await.expect("replay");
    assert_tables_equal_to_live(&app.db.pool, "after_rebuild").await;
}

/// The rebuild moves every checkpoint under the live projector, which moves them first in each
/// batch: its batch in flight rolls back and goes again from the moved checkpoints, neither
/// side waits for the other forever, and no deposit is lost or applied twice.
#[tokio::test]
async fn a_live_rebuild_during_deposits_loses_none_and_applies_none_twice() {
    let app = TestApp::spawn().await;
    let mix = mix(&app).await;
    let wallet = mix.bob.wallet("USD");
    let rebuilt = AtomicBool::new(false);
    let rebuild = async {
        let output = ecoledger(&app, &["replay", "--projection", "all"]).await;
        rebuilt.store(true, Ordering::SeqCst);
        output
    };
    let deposits = async {
        let mut positions = Vec::new();
        while !rebuilt.load(Ordering::SeqCst) || positions.is_empty() {
            positions.push(app.deposit(&mix.admin, wallet, "1.00").await.position());
        }
        positions
    };

    let (output, positions) = tokio::join!(rebuild, deposits);

    assert!(output.status.success(), "rebuild failed: {}", output_text(&output));
    let last = *positions.iter().max().expect("a deposit at least");
    app.wait_for_projections(last).await;
    let balance: Decimal = sqlx::query_scalar("SELECT balance FROM rm_wallets WHERE wallet_id = $1")
        .bind(wallet)
        .fetch_one(&app.db.pool)
        .await
        .expect("bob's USD wallet");
    assert_eq!(balance, Decimal::from(positions.len()), "every deposit once");
    projections::replay_into_schema(&app.store, &projections::all(), "after_busy_rebuild", last).await.expect("replay");
    assert_tables_equal_to_live(&app.db.pool, "after_busy_rebuild").await;
}

// ---------------------------------------------------------------------------------------
// 3. Trial balance
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_currency_sums_to_zero_and_wallet_balances_equal_their_entries() {
    let app = TestApp::spawn().await;
    let mix = mix(&app).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;

    let sums = currency_sums(&app.db.pool, "public").await;
    assert!(sums.len() >= 3, "EUR, USD and CARBON moved: {sums:?}");
    for (currency, sum) in &sums {
        assert!(sum.is_zero(), "{currency} sums to {sum}, not zero");
    }
    let external: Decimal =
        sqlx::query_scalar("SELECT balance FROM rm_system_accounts WHERE currency = 'EUR' AND account = 'external'")
            .fetch_one(&app.db.pool)
            .await
            .expect("EUR external account");
    assert_eq!(external, dec("-150.00"), "100 + 50 in, 30 out, 30 back");
    let mismatched: Vec<(Uuid, Decimal, Decimal)> = sqlx::query_as(
        "SELECT w.wallet_id, w.balance, COALESCE(e.total, 0) FROM rm_wallets w \
         LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM rm_wallet_entries GROUP BY wallet_id) e \
           ON e.wallet_id = w.wallet_id \
         WHERE w.balance <> COALESCE(e.total, 0)",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("entries");
    assert_eq!(mismatched, vec![], "wallets whose balance is not the sum of their entries");
    // Alice: 100 - 30 paid out + 30 reversed back - 5 sent to Carol + 10 for the tonne Bob
    // bought; Bob: 50 - 10 for the tonne - 0.10 fee (1 %). Alice's CARBON: 5 - 1 sold, and the
    // chain flows: - 1 to the chain - 0.5 retired + 0.25 bridged in + 2 out of suspense.
    let expected = [
        (mix.alice.wallet("EUR"), "105.00"),
        (mix.alice.wallet("CARBON"), "4.750"),
        (mix.bob.wallet("EUR"), "39.90"),
        (mix.bob.wallet("CARBON"), "1.000"),
        (mix.carol.wallet("EUR"), "5.00"),
        (mix.carol.wallet("USD"), "0.00"),
    ];
    for (wallet, balance) in expected {
        assert_eq!(aggregate_balance(&app, wallet).await, dec(balance), "aggregate of {wallet}");
        let projected: Decimal = sqlx::query_scalar("SELECT balance FROM rm_wallets WHERE wallet_id = $1")
            .bind(wallet)
            .fetch_one(&app.db.pool)
            .await
            .expect("wallet row");
        assert_eq!(projected, dec(balance), "read model of {wallet}");
    }
}

#[tokio::test]
async fn the_trial_balance_holds_at_every_global_position_that_moved_money() {
    let app = TestApp::spawn().await;
    mix(&app).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM events WHERE aggregate_type = 'Wallet' \
         AND event_type NOT IN ('WalletOpened', 'WalletFrozen', 'WalletUnfrozen') ORDER BY position",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("positions");
    assert!(positions.len() >= 10, "the mix moved money: {positions:?}");
    let chosen: Vec<_> =
        projections::all().into_iter().filter(|p| matches!(p.name(), "wallets" | "system_accounts")).collect();

    for position in positions {
        projections::replay_into_schema(&app.store, &chosen, "trial", position).await.expect("replay");
        for (currency, sum) in currency_sums(&app.db.pool, "trial").await {
            assert!(sum.is_zero(), "{currency} sums to {sum} at position {position}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. verify
// ---------------------------------------------------------------------------------------

/// Alice's EUR wallet with two deposits (100.00 then 25.00), then a deposit to bob's, all
/// published by the relay. Returns (admin, alice's wallet, positions of alice's deposits).
async fn verify_fixture(app: &TestApp) -> (TestUser, Uuid, i64, i64) {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let wallet = alice.wallet("EUR");
    let first = app.deposit(&admin, wallet, "100.00").await.position();
    let second = app.deposit(&admin, wallet, "25.00").await.position();
    app.deposit(&admin, bob.wallet("EUR"), "1.00").await;
    wait_for_relay(app, app.head_position().await).await;
    (admin, wallet, first, second)
}

async fn audit_verify(app: &TestApp, admin: &TestUser) -> Value {
    let reply = app.get("/api/v1/audit/verify", &admin.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

#[tokio::test]
async fn verify_passes_on_an_untouched_store() {
    let app = TestApp::spawn().await;
    let (admin, ..) = verify_fixture(&app).await;

    let output = ecoledger(&app, &["verify"]).await;

    assert!(output.status.success(), "verify failed: {}", output_text(&output));
    let report = audit_verify(&app, &admin).await;
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["first_problem"], Value::Null);
    assert_eq!(report["events"], json!(app.event_count().await));
}

#[tokio::test]
async fn verify_names_an_event_whose_payload_was_altered() {
    let app = TestApp::spawn().await;
    let (admin, wallet, first, _) = verify_fixture(&app).await;
    tamper(
        &app,
        &[format!("UPDATE events SET canonical = replace(canonical, '\"100.00\"', '\"900.00\"') WHERE position = {first} AND canonical LIKE '%\"100.00\"%'")],
    )
    .await;

    let output = ecoledger(&app, &["verify"]).await;

    let text = output_text(&output);
    assert!(!output.status.success(), "verify passed over an altered event: {text}");
    assert!(text.contains(&format!("Wallet/{wallet}")), "names the stream: {text}");
    assert!(text.contains(&format!("position {first}")), "names the event: {text}");
    let report = audit_verify(&app, &admin).await;
    assert_eq!(report["ok"], json!(false), "{report}");
    let problem = report["first_problem"].as_str().expect("a first problem");
    assert!(problem.contains(&format!("position {first}")), "{problem}");
}

#[tokio::test]
async fn verify_detects_the_deletion_of_a_streams_last_published_event() {
    let app = TestApp::spawn().await;
    let (admin, _, _, second) = verify_fixture(&app).await;
    tamper(&app, &[format!("DELETE FROM events WHERE position = {second}")]).await;

    let output = ecoledger(&app, &["verify"]).await;

    let text = output_text(&output);
    assert!(!output.status.success(), "verify passed over a deleted event: {text}");
    assert!(text.contains("global chain"), "the global chain finds it: {text}");
    let report = audit_verify(&app, &admin).await;
    assert_eq!(report["ok"], json!(false), "{report}");
    assert!(report["first_problem"].is_string());
}

#[tokio::test]
async fn verify_detects_two_events_of_a_stream_swapped() {
    let app = TestApp::spawn().await;
    let (admin, wallet, first, second) = verify_fixture(&app).await;
    let (a, b): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sequence FROM events WHERE position = $1), (SELECT sequence FROM events WHERE position = $2)",
    )
    .bind(first)
    .bind(second)
    .fetch_one(&app.db.pool)
    .await
    .expect("sequences");
    tamper(
        &app,
        &[
            format!("UPDATE events SET sequence = 1000000 WHERE position = {first}"),
            format!("UPDATE events SET sequence = {a} WHERE position = {second}"),
            format!("UPDATE events SET sequence = {b} WHERE position = {first}"),
        ],
    )
    .await;

    let output = ecoledger(&app, &["verify"]).await;

    let text = output_text(&output);
    assert!(!output.status.success(), "verify passed over swapped events: {text}");
    assert!(text.contains(&format!("Wallet/{wallet}")), "names the stream: {text}");
    let report = audit_verify(&app, &admin).await;
    assert_eq!(report["ok"], json!(false), "{report}");
}

// ---------------------------------------------------------------------------------------
// 5. Personal data
// ---------------------------------------------------------------------------------------

const DORA_EMAIL: &str = "Dora.Private@Example.org";
const DORA_NAME: &str = "Dora Secretname";
const DORA_NEW_NAME: &str = "Dora Othername";
const DORA_PASSWORD: &str = "dora-very-secret-password-42";

#[tokio::test]
async fn erasing_personal_data_removes_it_and_events_never_held_it() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let dora = register_with_profile(&app, "dora", DORA_EMAIL, DORA_NAME, DORA_PASSWORD).await;
    let token = app.login("dora", DORA_PASSWORD).await;
    let profile = json!({"display_name": DORA_NEW_NAME, "is_seller": true, "is_buyer": true});
    let reply = app.request(Method::PUT, &format!("/api/v1/users/{dora}/profile"), Some(&token), Some(profile)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
        .bind(dora)
        .fetch_one(&app.db.pool)
        .await
        .expect("credentials");
    let (email, name): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT email, display_name FROM personal_data WHERE user_id = $1")
            .bind(dora)
            .fetch_one(&app.db.pool)
            .await
            .expect("personal data");
    assert_eq!((email.as_deref(), name.as_deref()), (Some(DORA_EMAIL), Some(DORA_NEW_NAME)));
    let secrets = [DORA_EMAIL, DORA_NAME, DORA_NEW_NAME, DORA_PASSWORD, hash.as_str(), PASSWORD];
    for secret in secrets {
        assert_eq!(events_containing(&app, secret).await, 0, "an event holds {secret:?}");
    }

    let path = format!("/api/v1/users/{dora}/personal-data");
    let reply = app.request(Method::DELETE, &path, Some(&admin.token), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let position = reply.position();

    let (email, name, erased): (Option<String>, Option<String>, bool) =
        sqlx::query_as("SELECT email, display_name, erased_at IS NOT NULL FROM personal_data WHERE user_id = $1")
            .bind(dora)
            .fetch_one(&app.db.pool)
            .await
            .expect("personal data");
    assert_eq!((email, name, erased), (None, None, true));
    let view = app.get(&format!("/api/v1/users/{dora}?min_position={position}"), &admin.token).await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    assert_eq!((&view.body["email"], &view.body["display_name"]), (&Value::Null, &Value::Null), "{}", view.body);
    assert_eq!(view.body["username"], json!("dora"));
    let report = event_store::verify::verify(&app.db.pool).await.expect("verify runs");
    assert!(report.ok(), "erasure broke a chain: {report:?}");
    for secret in secrets {
        assert_eq!(events_containing(&app, secret).await, 0, "an event holds {secret:?}");
    }
    let again = app.request(Method::DELETE, &path, Some(&admin.token), None).await;
    assert_eq!(again.code(), "personal_data_already_erased");
}

#[tokio::test]
async fn after_erasure_the_email_is_stored_nowhere_in_the_database() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let dora = register_with_profile(&app, "dora", DORA_EMAIL, DORA_NAME, DORA_PASSWORD).await;
    let reply =
        app.request(Method::DELETE, &format!("/api/v1/users/{dora}/personal-data"), Some(&admin.token), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    app.wait_for_projections(reply.position()).await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("tables");

    let mut holding = Vec::new();
    for table in tables {
        let found: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM public.{table} t WHERE strpos(lower(t::text), lower($1)) > 0"
        ))
        .bind(DORA_EMAIL)
        .fetch_one(&app.db.pool)
        .await
        .expect("search table");
        if found > 0 {
            holding.push(table);
        }
    }

    assert_eq!(holding, Vec::<String>::new(), "tables still holding the erased email");
}

// ---------------------------------------------------------------------------------------
// 6. Snapshots
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_wallet_loaded_from_its_snapshot_equals_a_full_replay() {
    let app = TestApp::spawn_with(SpawnOptions { snapshot_interval: 3, ..Default::default() }).await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    let amounts: Vec<Decimal> = (1..=20).map(|i| Decimal::new(i * 125, 2)).collect();
    for amount in &amounts {
        app.deposit(&admin, wallet, &amount.to_string()).await;
    }
    let total: Decimal = amounts.iter().sum();

    let pool = app.db.pool.clone();
    let (snapshot_sequence, snapshot_balance): (i64, String) = eventually("a snapshot of the wallet", || {
        let pool = pool.clone();
        async move {
            sqlx::query_as(
                "SELECT last_sequence, state->>'balance' FROM snapshots \
                 WHERE aggregate_type = 'Wallet' AND aggregate_id = $1 AND last_sequence >= 18",
            )
            .bind(wallet.to_string())
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
        }
    })
    .await;
    // The snapshot's state is that of its head (no event applied twice): event 1 opened the
    // wallet, events 2.. are the deposits.
    let deposits_in_snapshot = (snapshot_sequence - 1) as usize;
    assert_eq!(dec(&snapshot_balance), amounts[..deposits_in_snapshot].iter().sum::<Decimal>());

    let mut conn = app.db.pool.acquire().await.expect("connection");
    let from_snapshot = app.store.load::<Wallet>(&mut conn, &wallet.to_string(), true).await.expect("load");
    let replayed = app.store.load::<Wallet>(&mut conn, &wallet.to_string(), false).await.expect("load");

    assert!(from_snapshot.snapshot_sequence >= 18, "the snapshot was used");
    assert_eq!(replayed.snapshot_sequence, 0);
    assert_eq!(from_snapshot.aggregate, replayed.aggregate);
    assert_eq!((from_snapshot.sequence, &from_snapshot.head_hash), (replayed.sequence, &replayed.head_hash));
    assert_eq!(replayed.sequence, 21);
    assert_eq!(from_snapshot.aggregate.balance, total);
    let over = withdraw(&app, &alice, wallet, &(total + dec("0.01")).to_string(), "payout-over", None).await;
    assert_eq!(over.code(), "insufficient_funds", "the snapshot must not inflate the balance");
    let all = withdraw(&app, &alice, wallet, &total.to_string(), "payout-all", None).await;
    assert_eq!(all.status, StatusCode::CREATED, "{:?}", all.body);
}
