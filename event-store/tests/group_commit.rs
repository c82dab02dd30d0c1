//! The group committer: units of work queued together commit in one transaction, chained in
//! order; a failed statement leaves each unit its own answer; a unit built on one that failed
//! fails too; and across processes an idempotency key's stored outcome decides.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use domain::wallet::{Wallet, WalletCommand};
use event_store::{
    Begun, CommandContext, Committed, Idempotency, Outcome, Store, StoreError, UnitOfWork, WAKE_CHANNEL,
};
use rust_decimal::Decimal;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

mod common;
use common::{deposit, open, test_pool};

/// Advisory lock the test holds to keep the committer busy with a blocking statement.
const GATE: i64 = 4343;

type Commit = Pin<Box<dyn Future<Output = Result<Committed, StoreError>> + Send>>;

async fn begin(store: &Store) -> UnitOfWork {
    match store.begin(CommandContext::new("test"), None).await.expect("begin") {
        Begun::Fresh(uow) => *uow,
        Begun::Replayed(_) => unreachable!("no idempotency key"),
    }
}

fn ok(_: Option<i64>) -> Outcome {
    Outcome::new(200, serde_json::Value::Null)
}

async fn run(store: &Store, wallet: Uuid, command: WalletCommand) -> Result<Committed, StoreError> {
    let mut uow = begin(store).await;
    uow.execute::<Wallet>(&wallet.to_string(), command, &()).await?.expect("command accepted");
    uow.commit(ok).await
}

/// A deposit on `wallet`, claiming `reference` when given, handed to the committer: the
/// submission happens at the first poll, which this does, so later submissions queue behind.
async fn queued_deposit(store: &Store, wallet: Uuid, amount: &str, reference: Option<&str>) -> Commit {
    let mut uow = begin(store).await;
    uow.execute::<Wallet>(&wallet.to_string(), deposit(amount), &()).await.unwrap().expect("deposit accepted");
    if let Some(reference) = reference {
        uow.claim("test_reference", reference, &wallet.to_string());
    }
    let mut commit: Commit = Box::pin(uow.commit(ok));
    let first_poll = futures::poll!(commit.as_mut());
    assert!(matches!(first_poll, Poll::Pending), "a group commit answers only after its COMMIT");
    commit
}

/// Holds the committer on a statement that waits for the test's advisory lock, so what is
/// queued meanwhile forms one group. Returns the lock's connection and the blocked commit.
async fn busy_committer(
    store: &Store,
    pool: &PgPool,
    wallet: Uuid,
) -> (sqlx::pool::PoolConnection<sqlx::Postgres>, Commit) {
    let mut gate = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(GATE).execute(&mut *gate).await.unwrap();
    let mut uow = begin(store).await;
    uow.execute::<Wallet>(&wallet.to_string(), deposit("1.00"), &()).await.unwrap().unwrap();
    let mut arguments = sqlx::postgres::PgArguments::default();
    sqlx::Arguments::add(&mut arguments, GATE).unwrap();
    uow.stage_statement("SELECT pg_advisory_xact_lock($1)", arguments);
    let mut blocked: Commit = Box::pin(uow.commit(ok));
    assert!(futures::poll!(blocked.as_mut()).is_pending());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return (gate, blocked);
        }
        assert!(std::time::Instant::now() < deadline, "the committer never reached the blocking statement");
        tokio::task::yield_now().await;
    }
}

async fn release(mut gate: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(GATE).execute(&mut *gate).await.unwrap();
}

async fn balance(store: &Store, wallet: Uuid) -> Decimal {
    store.load_current::<Wallet>(&wallet.to_string()).await.expect("load").aggregate.balance
}

/// The transactions that wrote the deposits of `wallet`.
async fn writers(pool: &PgPool, wallet: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT xact_id::text) FROM events WHERE aggregate_id = $1 AND event_type = 'Deposited'",
    )
    .bind(wallet.to_string())
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn chains_verify(pool: &PgPool) {
    let report = event_store::verify::verify(pool).await.expect("verify runs");
    assert!(report.ok(), "{:?}", report.first_problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_stream_share_transactions_and_chain_in_order() {
    let pool = test_pool().await;
    let store = Store::new(pool.clone());
    let wallet = Uuid::new_v4();
    run(&store, wallet, open(wallet)).await.unwrap();
    let deposits = (0..64).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { run(&store, wallet, deposit("1.00")).await })
    });
    for deposit in futures::future::join_all(deposits).await {
        deposit.unwrap().expect("every deposit commits");
    }
    assert_eq!(balance(&store, wallet).await, "64.00".parse().unwrap());
    let transactions = writers(&pool, wallet).await;
    assert!(transactions < 64, "64 deposits in {transactions} transactions: none was grouped");
    chains_verify(&pool).await;
}

#[tokio::test]
async fn units_queued_together_commit_in_one_transaction() {
    let pool = test_pool().await;
    let store = Store::new(pool.clone());
    let (busy, wallet) = (Uuid::new_v4(), Uuid::new_v4());
    run(&store, busy, open(busy)).await.unwrap();
    run(&store, wallet, open(wallet)).await.unwrap();
    let (gate, blocked) = busy_committer(&store, &pool, busy).await;
    let mut queued = Vec::new();
    for _ in 0..4 {
        queued.push(queued_deposit(&store, wallet, "2.50", None).await);
    }
    release(gate).await;
    blocked.await.expect("the blocked unit commits");
    for commit in queued {
        commit.await.expect("a queued deposit commits");
    }
    assert_eq!(writers(&pool, wallet).await, 1, "the four deposits queued together share one transaction");
    assert_eq!(balance(&store, wallet).await, "10.00".parse().unwrap());
    chains_verify(&pool).await;
}

#[tokio::test]
async fn a_taken_claim_in_a_group_fails_its_own_unit_and_the_others_commit() {
    let pool = test_pool().await;
    let store = Store::new(pool.clone());
    let (busy, wallet, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for id in [busy, wallet, other] {
        run(&store, id, open(id)).await.unwrap();
    }
    queued_deposit(&store, wallet, "1.00", Some("ref-1")).await.await.expect("the first claim of ref-1");
    let (gate, blocked) = busy_committer(&store, &pool, busy).await;
    let before = queued_deposit(&store, other, "1.00", Some("ref-2")).await;
    let duplicate = queued_deposit(&store, wallet, "5.00", Some("ref-1")).await;
    let after = queued_deposit(&store, other, "1.00", Some("ref-3")).await;
    release(gate).await;
    blocked.await.unwrap();

    before.await.expect("ref-2 commits");
    let refused = duplicate.await;
    assert!(matches!(&refused, Err(StoreError::ClaimTaken { kind }) if kind == "test_reference"), "{refused:?}");
    after.await.expect("ref-3 commits");
    assert_eq!(balance(&store, wallet).await, "1.00".parse().unwrap(), "nothing of the refused deposit stays");
    assert_eq!(balance(&store, other).await, "2.00".parse().unwrap());
    chains_verify(&pool).await;
}

#[tokio::test]
async fn a_unit_built_on_one_that_fails_in_its_group_fails_with_a_conflict() {
    let pool = test_pool().await;
    let store = Store::new(pool.clone());
    let (busy, wallet) = (Uuid::new_v4(), Uuid::new_v4());
    run(&store, busy, open(busy)).await.unwrap();
    run(&store, wallet, open(wallet)).await.unwrap();
    queued_deposit(&store, wallet, "1.00", Some("taken")).await.await.unwrap();
    let (gate, blocked) = busy_committer(&store, &pool, busy).await;
    let failing = queued_deposit(&store, wallet, "5.00", Some("taken")).await;
    // Built on the failing deposit's state (6.00), queued in the same group.
    let dependent = queued_deposit(&store, wallet, "2.00", None).await;
    release(gate).await;
    blocked.await.unwrap();

    assert!(matches!(failing.await, Err(StoreError::ClaimTaken { .. })));
    let dependent = dependent.await;
    assert!(matches!(dependent, Err(StoreError::Conflict)), "{dependent:?}");
    assert_eq!(balance(&store, wallet).await, "1.00".parse().unwrap());
    // The failed states are not served again: the next deposit starts from the database.
    run(&store, wallet, deposit("2.00")).await.unwrap();
    assert_eq!(balance(&store, wallet).await, "3.00".parse().unwrap());
    chains_verify(&pool).await;
}

#[tokio::test]
async fn across_processes_the_first_stored_outcome_of_a_key_wins_and_the_other_replays_it() {
    let pool = test_pool().await;
    let (here, elsewhere) = (Store::new(pool.clone()), Store::new(pool.clone()));
    let (first_wallet, second_wallet) = (Uuid::new_v4(), Uuid::new_v4());
    run(&here, first_wallet, open(first_wallet)).await.unwrap();
    run(&here, second_wallet, open(second_wallet)).await.unwrap();
    let key = Idempotency { command_id: Uuid::new_v4(), request_hash: vec![1, 2, 3] };
    let keyed = |store: &Store| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            match store.begin(CommandContext::new("test"), Some(key)).await.expect("begin") {
                Begun::Fresh(uow) => Some(*uow),
                Begun::Replayed(outcome) => {
                    assert_eq!(outcome.status, 201);
                    None
                }
            }
        }
    };
    // Both processes start the command before either stored its outcome.
    let mut first = keyed(&here).await.expect("fresh here");
    let mut second = keyed(&elsewhere).await.expect("fresh elsewhere");
    first.execute::<Wallet>(&first_wallet.to_string(), deposit("4.00"), &()).await.unwrap().unwrap();
    second.execute::<Wallet>(&second_wallet.to_string(), deposit("4.00"), &()).await.unwrap().unwrap();
    let created = |_| Outcome::new(201, serde_json::json!({"done": true}));
    first.commit(created).await.expect("the first commits");
    let lost = second.commit(created).await;
    assert!(matches!(lost, Err(StoreError::Conflict)), "the second to store the key conflicts: {lost:?}");

    assert!(keyed(&elsewhere).await.is_none(), "its retry answers the stored outcome");
    assert_eq!(balance(&here, first_wallet).await, "4.00".parse().unwrap());
    assert_eq!(balance(&here, second_wallet).await, Decimal::ZERO, "the command moved money once");
}

#[tokio::test]
async fn only_a_commit_that_stages_a_saga_wakes_the_saga_workers() {
    let pool = test_pool().await;
    let store = Store::new(pool.clone());
    let wallet = Uuid::new_v4();
    let mut sagas_woken = store.saga_signal();
    let mut relay_woken = store.commit_signal();

    run(&store, wallet, open(wallet)).await.unwrap();
    run(&store, wallet, deposit("1.00")).await.unwrap();
    assert!(relay_woken.has_changed().unwrap(), "events were committed");
    assert!(!sagas_woken.has_changed().unwrap(), "no saga was staged");

    let mut uow = begin(&store).await;
    uow.execute::<Wallet>(&wallet.to_string(), deposit("2.00"), &()).await.unwrap().expect("deposit accepted");
    let mut arguments = sqlx::postgres::PgArguments::default();
    sqlx::Arguments::add(&mut arguments, Uuid::new_v4()).unwrap();
    uow.stage_saga_statement(
        "INSERT INTO sagas (saga_id, kind, status, payload) VALUES ($1, 'test', 'pending', '{}')",
        arguments,
    );
    uow.commit(ok).await.unwrap();
    assert!(sagas_woken.has_changed().unwrap(), "a saga was staged");
    sagas_woken.mark_unchanged();
    relay_woken.mark_unchanged();

    // A refused group leaves nothing to wake for.
    let mut uow = begin(&store).await;
    let mut arguments = sqlx::postgres::PgArguments::default();
    sqlx::Arguments::add(&mut arguments, Uuid::new_v4()).unwrap();
    uow.stage_saga_statement("INSERT INTO sagas (saga_id) VALUES ($1)", arguments);
    assert!(uow.commit(ok).await.is_err(), "a saga row without its kind is refused");
    assert!(!sagas_woken.has_changed().unwrap(), "nothing committed");
}

#[tokio::test]
async fn a_store_skips_its_own_wake_up_notifications_and_answers_another_stores() {
    let pool = test_pool().await;
    let (here, there) = (Store::new(pool.clone()), Store::new(pool.clone()));
    let mut everything = PgListener::connect_with(&pool).await.unwrap();
    everything.listen(WAKE_CHANNEL).await.unwrap();
    let mut heres = PgListener::connect_with(&pool).await.unwrap();
    heres.listen(WAKE_CHANNEL).await.unwrap();

    let wallet = Uuid::new_v4();
    run(&here, wallet, open(wallet)).await.unwrap();
    let from_here = everything.recv().await.unwrap();
    run(&there, wallet, deposit("1.00")).await.unwrap();
    let from_there = everything.recv().await.unwrap();
    assert_ne!(from_here.payload(), from_there.payload(), "each store names itself");

    let woken_by = here.wake_up_from_others(&mut heres).await.unwrap();
    assert_eq!(woken_by.payload(), from_there.payload(), "its own NOTIFY was skipped");
}
