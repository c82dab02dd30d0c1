//! Transfer flows under load and faults (DESIGN.md sections 3 to 5): a ring of concurrent
//! transfers settles every accepted transfer once, keeps every book balanced and replays row for
//! row; a transfer saga an earlier version left pending, resumed after a restart or raced by two
//! workers, credits each transfer exactly once; a request repeated with the same
//! Idempotency-Key moves the money once.
//!
//! The ring tests also print throughput and Postgres commits per transfer (a measurement, not
//! an assertion).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{eventually, SpawnOptions, TestApp, TestDb, TestUser, DEADLINE};
use domain::wallet::{Wallet, WalletEvent};
use ecoledger::configuration::Component;
use event_store::{Begun, CommandContext, RecordedEvent, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Users in the ring; user i sends to user i + 1 (mod the ring).
const RING_USERS: usize = 10;
/// Transfers fired at once around the ring.
const RING_TRANSFERS: usize = 200;
/// Each ring user's deposit, in cents.
const RING_FUNDING_CENTS: i64 = 10_000;
/// Random ring amounts are 0.01 to this, in cents: large enough that some are refused.
const RING_AMOUNT_CENTS_MAX: i64 = 900;
/// Every this-many-th ring transfer asks for more than the whole ring holds: always refused.
const RING_OVERDRAFT_EVERY: usize = 25;
/// Environment variable that fixes the ring's random amounts (the seed is printed).
const RING_SEED_ENV: &str = "TRANSFER_FLOWS_SEED";
/// Transfers in flight when the process is killed, and in each round of the worker race.
const CRASH_TRANSFERS: usize = 8;
const RACE_TRANSFERS: usize = 24;
/// Postgres backends report their counters at most once a second (PGSTAT_MIN_INTERVAL): a
/// commit count is read once it grew by at most `QUIET_COMMITS_MAX` (background polls) over
/// `QUIET_WINDOW`, not counting the reads themselves.
const QUIET_WINDOW: Duration = Duration::from_millis(1500);
const QUIET_COMMITS_MAX: i64 = 60;
/// Pause between two reads of the commit counter.
const COMMIT_POLL: Duration = Duration::from_millis(50);
/// Pause between two looks at the `sagas` table.
const SAGA_POLL: Duration = Duration::from_millis(10);
/// Schema the replay check writes into.
const REPLAY_SCHEMA: &str = "replay_check";

/// The ring tests measure throughput: they run one at a time, not alongside each other.
static RING_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// Helpers: setup
// ---------------------------------------------------------------------------------------------

fn options(components: &[Component]) -> SpawnOptions {
    SpawnOptions { components: components.to_vec(), ..SpawnOptions::default() }
}

/// A second handle on the same test database (TestApp::spawn_on takes one by value).
fn same_db(db: &TestDb) -> TestDb {
    TestDb { name: db.name.clone(), url: db.url.clone(), pool: db.pool.clone() }
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("decimal")
}

fn cents(amount: i64) -> Decimal {
    Decimal::new(amount, 2)
}

fn transfer_id(body: &Value) -> Uuid {
    body["id"].as_str().expect("a transfer id").parse().expect("uuid")
}

fn transfer_body(from: Uuid, to: Uuid, amount: &str) -> Value {
    json!({"from_wallet_id": from, "amount": amount, "to_wallet_id": to})
}

// ---------------------------------------------------------------------------------------------
// Helpers: the test's own queries, and commit counting
// ---------------------------------------------------------------------------------------------

/// The test's queries, counted so that a commit measurement can leave them out (each is a
/// transaction of its own).
struct Probe {
    pool: PgPool,
    queries: AtomicU64,
}

impl Probe {
    fn new(pool: &PgPool) -> Probe {
        Probe { pool: pool.clone(), queries: AtomicU64::new(0) }
    }

    async fn number(&self, sql: &str) -> i64 {
        self.queries.fetch_add(1, Ordering::Relaxed);
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    async fn commits(&self) -> i64 {
        self.number("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").await
    }

    /// The database's commit count once every backend has reported its commits (see
    /// `QUIET_WINDOW`); returns it with this probe's query count at that read.
    async fn settled_commits(&self) -> (i64, u64) {
        let started = Instant::now();
        let mut readings: Vec<(Instant, i64, u64)> = Vec::new();
        loop {
            let commits = self.commits().await;
            let (now, queries) = (Instant::now(), self.queries());
            let window_start = readings.iter().rev().find(|(at, _, _)| now.duration_since(*at) >= QUIET_WINDOW);
            if let Some((_, earlier, earlier_queries)) = window_start {
                let others = commits - earlier - (queries - earlier_queries) as i64;
                if others <= QUIET_COMMITS_MAX {
                    return (commits, queries);
                }
            }
            readings.push((now, commits, queries));
            assert!(started.elapsed() < DEADLINE, "the commit counter never settled");
            tokio::time::sleep(COMMIT_POLL).await;
        }
    }

    /// Waits until no saga is pending any more; at the deadline, shows the ones left.
    async fn wait_for_sagas_settled(&self) {
        let started = Instant::now();
        while self.number("SELECT count(*) FROM sagas WHERE status = 'pending'").await > 0 {
            if started.elapsed() >= DEADLINE {
                let left: Vec<(Uuid, i32, Option<String>)> = sqlx::query_as(
                    "SELECT saga_id, attempts, last_error FROM sagas WHERE status = 'pending' ORDER BY saga_id",
                )
                .fetch_all(&self.pool)
                .await
                .expect("sagas");
                panic!("timed out waiting for every saga to settle; pending: {left:?}");
            }
            tokio::time::sleep(SAGA_POLL).await;
        }
    }
}

/// Commits between two settled readings, less the probe's own queries.
fn commits_between(before: (i64, u64), after: (i64, u64)) -> i64 {
    after.0 - before.0 - (after.1 - before.1) as i64
}

// ---------------------------------------------------------------------------------------------
// Helpers: checks on the events and read models
// ---------------------------------------------------------------------------------------------

/// How many wallet events of `event_type` each transfer has.
async fn transfer_events(pool: &PgPool, event_type: &str) -> HashMap<Uuid, usize> {
    let texts: Vec<String> = sqlx::query_scalar("SELECT canonical FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_all(pool)
        .await
        .expect("events");
    let mut counts = HashMap::new();
    for text in texts {
        let event = RecordedEvent::from_canonical(&text).expect("canonical event parses");
        let id = match event_store::store::decode_event::<Wallet>(&event).expect("wallet event decodes") {
            WalletEvent::TransferDebited { transfer_id, .. }
            | WalletEvent::TransferCredited { transfer_id, .. }
            | WalletEvent::TransferReturned { transfer_id, .. } => transfer_id,
            other => panic!("{event_type} decoded as {other:?}"),
        };
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// Each of `ids` was debited once, credited once, never returned, and shows as completed
/// with its two history lines; no other transfer moved money.
async fn assert_each_transfer_settled_once(pool: &PgPool, ids: &[Uuid]) {
    let debits = transfer_events(pool, "TransferDebited").await;
    let credits = transfer_events(pool, "TransferCredited").await;
    let returns = transfer_events(pool, "TransferReturned").await;
    for id in ids {
        assert_eq!(debits.get(id), Some(&1), "transfer {id}: TransferDebited events");
        assert_eq!(credits.get(id), Some(&1), "transfer {id}: TransferCredited events");
    }
    assert_eq!(debits.len(), ids.len(), "debits of transfers that were not accepted");
    assert_eq!(credits.len(), ids.len(), "credits of transfers that were not accepted");
    assert!(returns.is_empty(), "no transfer should fail here: {returns:?}");
    let statuses: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT transfer_id, status FROM rm_transfers WHERE transfer_id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await
            .expect("rm_transfers");
    assert_eq!(statuses.len(), ids.len(), "one rm_transfers row per transfer");
    for (id, status) in statuses {
        assert_eq!(status, "completed", "transfer {id}");
    }
    let lines: Vec<(Uuid, Vec<String>, Vec<String>)> = sqlx::query_as(
        "SELECT transaction_id, array_agg(kind ORDER BY kind), array_agg(status ORDER BY kind) FROM rm_transactions \
         WHERE transaction_id = ANY($1) GROUP BY transaction_id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .expect("rm_transactions");
    assert_eq!(lines.len(), ids.len(), "every transfer has history lines");
    for (id, kinds, statuses) in lines {
        assert_eq!(kinds, ["transfer_in", "transfer_out"], "transfer {id}: one line per side");
        assert_eq!(statuses, ["completed", "completed"], "transfer {id}: both lines completed");
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE status <> 'completed'")
        .fetch_one(pool)
        .await
        .expect("sagas");
    assert_eq!(pending, 0, "every saga row completed");
}

async fn scalar_decimal(pool: &PgPool, sql: &str) -> Decimal {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The books: the given EUR wallets hold `expected` (their sum is `total`), no balance or
/// available amount was ever negative, `transit` is empty, every currency's trial balance is
/// zero and every wallet's balance is the sum of its statement lines.
async fn assert_books_balance(pool: &PgPool, wallets: &[Uuid], expected: &[Decimal], total: Decimal) {
    for (wallet, balance) in wallets.iter().zip(expected) {
        let projected: Decimal = sqlx::query_scalar("SELECT balance FROM rm_wallets WHERE wallet_id = $1")
            .bind(wallet)
            .fetch_one(pool)
            .await
            .expect("wallet row");
        assert_eq!(projected, *balance, "balance of wallet {wallet}");
    }
    let held: Decimal =
        sqlx::query_scalar("SELECT COALESCE(sum(balance), 0) FROM rm_wallets WHERE wallet_id = ANY($1)")
            .bind(wallets)
            .fetch_one(pool)
            .await
            .expect("sum");
    assert_eq!(held, total, "the wallets hold exactly what was deposited");
    let negative_lines = count(pool, "SELECT count(*) FROM rm_wallet_entries WHERE balance_after < 0").await;
    assert_eq!(negative_lines, 0, "a balance went below zero at some position");
    let negative =
        count(pool, "SELECT count(*) FROM rm_wallets WHERE balance < 0 OR held < 0 OR balance - held < 0").await;
    assert_eq!(negative, 0, "a negative balance or available amount");
    let transit = "SELECT COALESCE(sum(balance), 0) FROM rm_system_accounts WHERE account = 'transit'";
    assert_eq!(scalar_decimal(pool, transit).await, Decimal::ZERO, "transit is empty once every transfer settled");
    let unbalanced: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT currency, sum(balance) FROM (SELECT currency, balance FROM rm_wallets \
           UNION ALL SELECT currency, balance FROM rm_system_accounts) accounts \
         GROUP BY currency HAVING sum(balance) <> 0",
    )
    .fetch_all(pool)
    .await
    .expect("trial balance");
    assert!(unbalanced.is_empty(), "trial balance not zero: {unbalanced:?}");
    let drifted: Vec<Uuid> = sqlx::query_scalar(
        "SELECT wallet_id FROM rm_wallets w WHERE balance <> \
           (SELECT COALESCE(sum(amount), 0) FROM rm_wallet_entries e WHERE e.wallet_id = w.wallet_id)",
    )
    .fetch_all(pool)
    .await
    .expect("statement sums");
    assert!(drifted.is_empty(), "wallets whose balance is not the sum of their lines: {drifted:?}");
}

/// Replays every projection up to `head` into a side schema and compares each table with the
/// live one, both ways, duplicates included.
async fn assert_replay_matches_live(app: &TestApp, head: i64) {
    let all = projections::all();
    let report = projections::replay_into_schema(&app.store, &all, REPLAY_SCHEMA, head).await.expect("replay");
    assert_eq!(report.position, head, "the replay reached the head");
    for projection in &all {
        for table in projection.tables() {
            let live_rows = count(&app.db.pool, &format!("SELECT count(*) FROM public.{table}")).await;
            for (a, b) in [("public", REPLAY_SCHEMA), (REPLAY_SCHEMA, "public")] {
                let sample: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT to_jsonb(d)::text FROM (SELECT * FROM {a}.{table} EXCEPT ALL SELECT * FROM {b}.{table}) d \
                     LIMIT 3"
                ))
                .fetch_all(&app.db.pool)
                .await
                .expect("compare");
                assert!(sample.is_empty(), "{table} ({live_rows} live rows): rows in {a} but not in {b}: {sample:?}");
            }
        }
    }
}

/// Waits until the relay published up to `position` (replays stop at its watermark).
async fn wait_for_published(pool: &PgPool, position: i64) {
    eventually("the relay to publish up to the head", || async {
        let published = count(pool, "SELECT published_position FROM relay_state WHERE id = 1").await;
        (published >= position).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The ring
// ---------------------------------------------------------------------------------------------

struct Ring {
    users: Vec<TestUser>,
}

/// A transfer the API accepted.
struct Accepted {
    id: Uuid,
    from: usize,
    amount: i64,
}

struct RingRun {
    accepted: Vec<Accepted>,
    refused: usize,
    /// 503 answers that the client retried with the same Idempotency-Key.
    unavailable: usize,
    started: Instant,
}

impl Ring {
    /// Registers the ring's users and funds each EUR wallet.
    async fn fund(app: &TestApp) -> Ring {
        let admin = app.admin().await;
        let mut users = Vec::new();
        for i in 0..RING_USERS {
            let user = app.register(&format!("ring{i}")).await;
            app.deposit(&admin, user.wallet("EUR"), &cents(RING_FUNDING_CENTS).to_string()).await;
            users.push(user);
        }
        Ring { users }
    }

    fn wallets(&self) -> Vec<Uuid> {
        self.users.iter().map(|u| u.wallet("EUR")).collect()
    }

    fn total() -> Decimal {
        cents(RING_FUNDING_CENTS * RING_USERS as i64)
    }

    /// The amounts, in cents, of the ring's transfers (transfer k leaves user k mod the ring).
    fn amounts() -> Vec<i64> {
        let seed = std::env::var(RING_SEED_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64
        });
        println!("ring amounts: {RING_SEED_ENV}={seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let overdraft = RING_FUNDING_CENTS * RING_USERS as i64 + 1;
        (0..RING_TRANSFERS)
            .map(
                |k| if k % RING_OVERDRAFT_EVERY == 0 { overdraft } else { rng.random_range(1..=RING_AMOUNT_CENTS_MAX) },
            )
            .collect()
    }

    /// Fires every ring transfer at once, each in its own task; every answer is 201 (settled)
    /// or 422 `insufficient_funds`.
    async fn fire(&self, app: &TestApp) -> RingRun {
        let wallets = self.wallets();
        let url = format!("{}/api/v1/transfers", app.base);
        let requests: Vec<_> = Ring::amounts()
            .into_iter()
            .enumerate()
            .map(|(k, amount)| {
                let from = k % RING_USERS;
                let body = transfer_body(wallets[from], wallets[(from + 1) % RING_USERS], &cents(amount).to_string());
                let request = app.client.post(&url).bearer_auth(&self.users[from].token).json(&body);
                (from, amount, request)
            })
            .collect();
        let started = Instant::now();
        let tasks = requests.into_iter().map(|(from, amount, request)| {
            tokio::spawn(async move {
                let (status, body, unavailable) = send_until_answered(request).await;
                (from, amount, status, body, unavailable)
            })
        });
        let mut run = RingRun { accepted: Vec::new(), refused: 0, unavailable: 0, started };
        for result in futures::future::join_all(tasks).await {
            let (from, amount, status, body, unavailable) = result.expect("request task");
            run.unavailable += unavailable;
            match (status, body["code"].as_str()) {
                (StatusCode::CREATED, _) => run.accepted.push(Accepted { id: transfer_id(&body), from, amount }),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds")) => run.refused += 1,
                _ => panic!("transfer of {} from ring{from}: {status} {body}", cents(amount)),
            }
        }
        let overdrafts = RING_TRANSFERS.div_ceil(RING_OVERDRAFT_EVERY);
        assert!(run.refused >= overdrafts, "the {overdrafts} overdrafts were refused: {} refusals", run.refused);
        assert!(!run.accepted.is_empty(), "some ring transfers were accepted");
        run
    }
}

/// Sends `request` with a fresh Idempotency-Key, and again with the same key while the server
/// answers 503 (saturated: its pool wait is bounded, DESIGN.md section 4), as a client should.
/// Returns the final status and body, and how many 503s came first.
async fn send_until_answered(request: reqwest::RequestBuilder) -> (StatusCode, Value, usize) {
    let request = request.header("Idempotency-Key", Uuid::new_v4().to_string());
    let started = Instant::now();
    let mut unavailable = 0;
    loop {
        let response = request.try_clone().expect("a JSON request clones").send().await.expect("transfer sent");
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        if status != StatusCode::SERVICE_UNAVAILABLE || started.elapsed() >= DEADLINE {
            return (status, body, unavailable);
        }
        unavailable += 1;
    }
}

impl RingRun {
    fn ids(&self) -> Vec<Uuid> {
        self.accepted.iter().map(|a| a.id).collect()
    }

    /// Each ring wallet's balance once every accepted transfer completed.
    fn expected_balances(&self) -> Vec<Decimal> {
        let mut balances = vec![RING_FUNDING_CENTS; RING_USERS];
        for transfer in &self.accepted {
            balances[transfer.from] -= transfer.amount;
            balances[(transfer.from + 1) % RING_USERS] += transfer.amount;
        }
        balances.into_iter().map(cents).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_ring_transfers_complete_once_keep_the_books_balanced_and_replay_row_for_row() {
    let _serial = RING_SERIAL.lock().await;
    let app = TestApp::spawn().await;
    let ring = Ring::fund(&app).await;
    app.wait_for_projections(app.head_position().await).await;
    let probe = Probe::new(&app.db.pool);
    let before = probe.settled_commits().await;

    let run = ring.fire(&app).await;
    let accepted = run.accepted.len() as i64;
    let completed_at = eventually("every accepted transfer to show as completed", || async {
        let completed = probe.number("SELECT count(*) FROM rm_transfers WHERE status = 'completed'").await;
        (completed == accepted).then(Instant::now)
    })
    .await;
    let elapsed = completed_at.duration_since(run.started);
    let after = probe.settled_commits().await;
    let commits = commits_between(before, after);
    println!(
        "ring, all components: {accepted} transfers accepted, {} refused, {} 503s retried; completed end to end in \
         {elapsed:?}: {:.0} transfers/s",
        run.refused,
        run.unavailable,
        accepted as f64 / elapsed.as_secs_f64()
    );
    println!(
        "ring, all components: {commits} Postgres commits ({:.1} per transfer), including projections, relay and \
         idle polls, not the test's own queries",
        commits as f64 / accepted as f64
    );

    assert_eq!(count(&app.db.pool, "SELECT count(*) FROM sagas WHERE status = 'pending'").await, 0);
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    assert_each_transfer_settled_once(&app.db.pool, &run.ids()).await;
    assert_books_balance(&app.db.pool, &ring.wallets(), &run.expected_balances(), Ring::total()).await;
    wait_for_published(&app.db.pool, head).await;
    assert_replay_matches_live(&app, head).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ring_transfers_settle_on_the_command_path_alone_and_projections_started_later_catch_up() {
    let _serial = RING_SERIAL.lock().await;
    let app = TestApp::spawn_with(options(&[Component::Api])).await;
    let ring = Ring::fund(&app).await;
    let head_before = app.head_position().await;
    let probe = Probe::new(&app.db.pool);
    let before = probe.settled_commits().await;

    let run = ring.fire(&app).await;
    let elapsed = run.started.elapsed();
    let after = probe.settled_commits().await;
    let accepted = run.accepted.len() as i64;
    let commits = commits_between(before, after);
    let writers =
        count(&app.db.pool, &format!("SELECT count(DISTINCT xact_id) FROM events WHERE position > {head_before}"))
            .await;
    println!(
        "ring, command path only (api): {accepted} transfers accepted, {} refused ({} 503s retried), \
         settled in {elapsed:?}: {:.0} transfers/s; {commits} commits ({:.1} per accepted transfer, refusals \
         included), {writers} of them wrote events ({:.2} per transfer: group commits hold several)",
        run.refused,
        run.unavailable,
        accepted as f64 / elapsed.as_secs_f64(),
        commits as f64 / accepted as f64,
        writers as f64 / accepted as f64
    );

    assert!(writers <= accepted, "a transfer is written by one transaction at most: {writers} for {accepted}");
    let projector =
        TestApp::spawn_on(same_db(&app.db), app.prefix.clone(), options(&[Component::Relay, Component::Projections]))
            .await;
    let head = projector.head_position().await;
    projector.wait_for_projections(head).await;
    assert_each_transfer_settled_once(&app.db.pool, &run.ids()).await;
    assert_books_balance(&app.db.pool, &ring.wallets(), &run.expected_balances(), Ring::total()).await;
}

// ---------------------------------------------------------------------------------------------
// Transfer sagas an earlier version left pending
// ---------------------------------------------------------------------------------------------

/// Leaves a transfer pending as an earlier version did: the source debited into `transit`, the
/// transfer initiated and a `transfer` saga row to credit the destination, in one unit of work
/// (retried while saga workers in other processes write the same wallets).
async fn legacy_pending_transfer(store: &Store, from: &TestUser, to: &TestUser, amount: Decimal) -> Uuid {
    let parties = domain::transfer::TransferParties {
        transfer_id: Uuid::new_v4(),
        from_wallet_id: from.wallet("EUR"),
        from_user_id: from.id,
        to_wallet_id: to.wallet("EUR"),
        to_user_id: to.id,
        currency: domain::Currency::Eur,
        amount: domain::Amount::parse(&amount.to_string(), domain::Currency::Eur).expect("amount"),
    };
    let started = Instant::now();
    loop {
        match try_legacy_pending_transfer(store, &parties).await {
            Ok(()) => return parties.transfer_id,
            Err(event_store::StoreError::Conflict) if started.elapsed() < DEADLINE => continue,
            Err(error) => panic!("legacy transfer {}: {error}", parties.transfer_id),
        }
    }
}

async fn try_legacy_pending_transfer(
    store: &Store,
    parties: &domain::transfer::TransferParties,
) -> Result<(), event_store::StoreError> {
    use domain::transfer::{Transfer, TransferCommand};
    use domain::wallet::WalletCommand;
    let Begun::Fresh(uow) = store.begin(CommandContext::new(parties.from_user_id.to_string()), None).await? else {
        unreachable!("a command without an idempotency key is always fresh")
    };
    let mut uow = *uow;
    let debit = WalletCommand::DebitForTransfer {
        transfer_id: parties.transfer_id,
        to_wallet_id: parties.to_wallet_id,
        amount: parties.amount,
        currency: parties.currency,
    };
    uow.execute::<Wallet>(&parties.from_wallet_id.to_string(), debit, &()).await?.expect("debit");
    let initiate = TransferCommand::Initiate(parties.clone());
    uow.execute::<Transfer>(&parties.transfer_id.to_string(), initiate, &()).await?.expect("initiate");
    let saga = serde_json::to_value(sagas::TransferSaga { parties: parties.clone() }).expect("payload");
    let mut arguments = sqlx::postgres::PgArguments::default();
    sqlx::Arguments::add(&mut arguments, parties.transfer_id).expect("bind");
    sqlx::Arguments::add(&mut arguments, sagas::TRANSFER_SAGA).expect("bind");
    sqlx::Arguments::add(&mut arguments, saga).expect("bind");
    uow.stage_statement("INSERT INTO sagas (saga_id, kind, status, payload) VALUES ($1, $2, 'pending', $3)", arguments);
    uow.commit(|_| event_store::Outcome::new(202, Value::Null)).await?;
    Ok(())
}

/// Leaves `count` transfers pending round the users, as an earlier version did; returns their
/// ids and adds them to `expected`.
async fn legacy_round(app: &TestApp, users: &[TestUser], count: usize, expected: &mut [Decimal]) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for k in 0..count {
        let (from, to) = (k % users.len(), (k + 1) % users.len());
        let amount = cents(k as i64 + 1);
        ids.push(legacy_pending_transfer(&app.store, &users[from], &users[to], amount).await);
        expected[from] -= amount;
        expected[to] += amount;
    }
    ids
}

#[tokio::test]
async fn transfers_an_earlier_version_left_pending_complete_exactly_once_after_a_restart() {
    let app = TestApp::spawn_with(options(&[Component::Api, Component::Relay, Component::Projections])).await;
    let admin = app.admin().await;
    let users = [app.register("alice").await, app.register("bob").await, app.register("carol").await];
    for user in &users {
        app.deposit(&admin, user.wallet("EUR"), "50.00").await;
    }
    let mut expected = [dec("50.00"), dec("50.00"), dec("50.00")];
    let ids = legacy_round(&app, &users, CRASH_TRANSFERS, &mut expected).await;
    let in_transit: Decimal = (1..=CRASH_TRANSFERS as i64).map(cents).sum();
    let pool = app.db.pool.clone();
    eventually("the pending transfers to be projected, money in transit", || async {
        let pending = count(&pool, "SELECT count(*) FROM rm_transfers WHERE status = 'pending'").await;
        let transit =
            scalar_decimal(&pool, "SELECT COALESCE(sum(balance), 0) FROM rm_system_accounts WHERE account = 'transit'")
                .await;
        (pending == CRASH_TRANSFERS as i64 && transit == in_transit).then_some(())
    })
    .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM sagas WHERE status = 'pending'").await, CRASH_TRANSFERS as i64);
    let (db, prefix) = app.stop();

    let app = TestApp::spawn_on(db, prefix, SpawnOptions::default()).await;
    Probe::new(&app.db.pool).wait_for_sagas_settled().await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    assert_each_transfer_settled_once(&app.db.pool, &ids).await;
    let wallets: Vec<Uuid> = users.iter().map(|u| u.wallet("EUR")).collect();
    assert_books_balance(&app.db.pool, &wallets, &expected, dec("150.00")).await;
}

// ---------------------------------------------------------------------------------------------
// Two saga workers racing
// ---------------------------------------------------------------------------------------------

/// Makes every pending saga due again, over and over, as if each worker's lease had expired
/// while it was still working, so both workers lease the same sagas. Runs until `stop`. Its
/// update of many rows may deadlock with a group commit that settles several sagas in another
/// order: Postgres then aborts one of the two, and either way the next round goes on.
async fn expire_leases_until_settled(pool: PgPool, stop: Arc<tokio::sync::Notify>) {
    let expire = "UPDATE sagas SET next_attempt_at = now() WHERE status = 'pending'";
    loop {
        tokio::select! {
            _ = stop.notified() => return,
            result = sqlx::query(expire).execute(&pool) => match result {
                Ok(_) => {}
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("40P01") => {}
                Err(error) => panic!("expire leases: {error}"),
            },
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_saga_workers_racing_on_the_same_pending_transfers_credit_each_exactly_once() {
    let app = TestApp::spawn_with(options(&[Component::Api, Component::Relay, Component::Projections])).await;
    let admin = app.admin().await;
    let users = [app.register("alice").await, app.register("bob").await];
    for user in &users {
        app.deposit(&admin, user.wallet("EUR"), "20.00").await;
    }
    let mut expected = [dec("20.00"), dec("20.00")];
    let mut ids = legacy_round(&app, &users, RACE_TRANSFERS, &mut expected).await;
    assert_eq!(count(&app.db.pool, "SELECT count(*) FROM sagas WHERE status = 'pending'").await, ids.len() as i64);

    let stop = Arc::new(tokio::sync::Notify::new());
    let expirer = tokio::spawn(expire_leases_until_settled(app.db.pool.clone(), stop.clone()));
    let sagas_only = || options(&[Component::Sagas]);
    let (first, second) = tokio::join!(
        TestApp::spawn_on(same_db(&app.db), app.prefix.clone(), sagas_only()),
        TestApp::spawn_on(same_db(&app.db), app.prefix.clone(), sagas_only()),
    );
    // A second round while both workers run: each new saga is leased by both.
    ids.extend(legacy_round(&app, &users, RACE_TRANSFERS, &mut expected).await);
    let probe = Probe::new(&app.db.pool);
    probe.wait_for_sagas_settled().await;
    stop.notify_one();
    expirer.await.expect("lease expirer");
    let raced = count(&app.db.pool, "SELECT count(*) FROM sagas WHERE attempts > 1").await;
    let attempts = count(&app.db.pool, "SELECT sum(attempts) FROM sagas").await;
    println!("worker race: {raced} of {} sagas leased more than once, {attempts} leases in all", ids.len());
    assert!(raced > 0, "the workers never leased the same saga twice, so nothing raced");

    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    assert_each_transfer_settled_once(&app.db.pool, &ids).await;
    let wallets: Vec<Uuid> = users.iter().map(|u| u.wallet("EUR")).collect();
    assert_books_balance(&app.db.pool, &wallets, &expected, dec("40.00")).await;
    drop((first, second));
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_transfer_repeated_with_the_same_idempotency_key_is_one_transfer_and_one_debit() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    app.deposit(&admin, alice.wallet("EUR"), "50.00").await;
    let body = transfer_body(alice.wallet("EUR"), bob.wallet("EUR"), "12.50");
    let send = |key: String, body: Value| {
        let token = alice.token.clone();
        let app = &app;
        async move {
            app.request_with(
                Method::POST,
                "/api/v1/transfers",
                Some(&token),
                Some(body),
                &[("Idempotency-Key", key.as_str())],
            )
            .await
        }
    };

    let key = Uuid::new_v4().to_string();
    let first = send(key.clone(), body.clone()).await;
    let repeat = send(key.clone(), body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(repeat.status, StatusCode::CREATED, "{:?}", repeat.body);
    assert_eq!(repeat.body["id"], first.body["id"], "the repeat answers the same transfer");
    let other = send(key, transfer_body(alice.wallet("EUR"), bob.wallet("EUR"), "12.51")).await;
    assert_eq!((other.status.as_u16(), other.code()), (409, "idempotency_key_reused"), "{:?}", other.body);

    // The same key twice at once: one runs, the other waits for it or is told it is running.
    let key = Uuid::new_v4().to_string();
    let (a, b) = tokio::join!(send(key.clone(), body.clone()), send(key, body.clone()));
    let mut concurrent_ids = BTreeSet::new();
    for reply in [&a, &b] {
        match (reply.status.as_u16(), reply.code()) {
            (201, _) => {
                concurrent_ids.insert(transfer_id(&reply.body));
            }
            (409, "idempotency_key_in_progress") => {}
            other => panic!("a concurrent repeat answered {other:?}: {:?}", reply.body),
        }
    }
    assert_eq!(concurrent_ids.len(), 1, "one transfer for the concurrent pair: {a:?} {b:?}");

    let ids = [transfer_id(&first.body), *concurrent_ids.first().expect("one id")];
    Probe::new(&app.db.pool).wait_for_sagas_settled().await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    assert_each_transfer_settled_once(&app.db.pool, &ids).await;
    let wallets = [alice.wallet("EUR"), bob.wallet("EUR")];
    assert_books_balance(&app.db.pool, &wallets, &[dec("25.00"), dec("25.00")], dec("50.00")).await;
}
