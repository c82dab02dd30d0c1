//! A wallet's command latency must not grow with its history (DESIGN.md section 2: snapshots
//! keep loading flat). Events are appended in bulk through the store, not over HTTP.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{TestApp, TestUser};
use cqrs_es::EventStore;
use domain::accounts::SystemAccount;
use domain::wallet::{Wallet, WalletEvent};
use domain::{Amount, Currency};
use event_store::pg_event_store::{PgAggregateContext, PgEventStore};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Events appended per transaction while seeding.
const SEED_BATCH: usize = 1000;

/// Appends `count` deposits of 1.00 EUR to an open wallet whose balance is zero.
async fn seed_deposits(app: &TestApp, wallet: Uuid, count: usize) {
    let store = PgEventStore::<Wallet>::new(app.store.clone());
    let mut context = store.load_aggregate(&wallet.to_string()).await.expect("load");
    let mut balance = context.aggregate.balance;
    let mut appended = 0;
    while appended < count {
        let batch = SEED_BATCH.min(count - appended);
        let events: Vec<WalletEvent> = (0..batch)
            .map(|_| {
                balance += Decimal::ONE;
                WalletEvent::Deposited {
                    currency: Currency::Eur,
                    transaction_id: Uuid::new_v4(),
                    amount: Amount::parse("1", Currency::Eur).unwrap(),
                    reference: "seed".into(),
                    counter_account: SystemAccount::External,
                    balance_after: balance,
                }
            })
            .collect();
        store.commit(events, context, HashMap::new()).await.expect("bulk append");
        appended += batch;
        let head: (i64, Vec<u8>) = sqlx::query_as(
            "SELECT sequence, hash FROM events WHERE aggregate_type = 'Wallet' AND aggregate_id = $1 \
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(wallet.to_string())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        context = PgAggregateContext {
            aggregate_id: wallet.to_string(),
            aggregate: Wallet::default(),
            sequence: head.0,
            head_hash: head.1,
        };
    }
}

/// Latencies of `count` deposits to `wallet` over HTTP, sorted.
async fn deposit_latencies(app: &TestApp, admin: &TestUser, wallet: Uuid, count: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        app.deposit(admin, wallet, "1").await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test]
async fn a_wallet_with_thousands_of_bulk_events_keeps_its_balance_and_gets_a_snapshot() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("EUR");
    seed_deposits(&app, wallet, 5_000).await;
    let reply = app.deposit(&admin, wallet, "0.50").await;
    assert_eq!(reply.body["balance"], "5000.50");
    let snapshot = common::eventually("a snapshot of the seeded wallet", || {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT last_sequence FROM snapshots WHERE aggregate_id = $1")
                .bind(wallet.to_string())
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    assert_eq!(snapshot, 5_002, "opened + 5,000 seeded + 1 deposit");
    let verify = event_store::verify::verify(&app.db.pool).await.unwrap();
    assert!(verify.ok(), "{:?}", verify.first_problem);
}

/// Measures command latency on a new wallet and on one with 100,000 events (or
/// `ECOLEDGER_GROWTH_EVENTS`). Run with
/// `cargo test --release -p ecoledger --test growth -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement: prints figures, takes about a minute"]
async fn measure_command_latency_on_a_new_wallet_and_on_a_100k_event_wallet() {
    let events: usize = std::env::var("ECOLEDGER_GROWTH_EVENTS").map_or(100_000, |n| n.parse().expect("a count"));
    const SAMPLES: usize = 200;
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let fresh = app.register("fresh").await.wallet("EUR");
    let grown = app.register("grown").await.wallet("EUR");
    let seeding = Instant::now();
    seed_deposits(&app, grown, events).await;
    println!("seeded {events} events in {:.1?}", seeding.elapsed());
    let first = Instant::now();
    app.deposit(&admin, grown, "1").await;
    println!("first command on the grown wallet (full load, snapshot written after): {:.1?}", first.elapsed());
    deposit_latencies(&app, &admin, fresh, 20).await; // warm-up
    let on_fresh = deposit_latencies(&app, &admin, fresh, SAMPLES).await;
    let on_grown = deposit_latencies(&app, &admin, grown, SAMPLES).await;
    for (name, sorted) in [("new wallet", &on_fresh), ("grown wallet", &on_grown)] {
        println!(
            "{name}: p50 {:.2?} p95 {:.2?} p99 {:.2?} max {:.2?}",
            percentile(sorted, 0.5),
            percentile(sorted, 0.95),
            percentile(sorted, 0.99),
            sorted[sorted.len() - 1]
        );
    }
    let ratio = percentile(&on_grown, 0.5).as_secs_f64() / percentile(&on_fresh, 0.5).as_secs_f64();
    println!("p50 ratio grown/new: {ratio:.2}");
    assert!(ratio < 3.0, "latency grew with history: ratio {ratio:.2}");
}
