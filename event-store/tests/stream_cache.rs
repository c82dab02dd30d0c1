//! The per-stripe stream cache: a command on a hot stream starts from the state the previous
//! one committed, yet a write by another process (another `Store` on the same database) is
//! never missed: a stale write conflicts and its retry reloads, a stale read fails at commit.

use cqrs_es::Aggregate;
use domain::wallet::{Wallet, WalletCommand};
use event_store::{Begun, CommandContext, Outcome, Store, StoreError};
use rust_decimal::Decimal;
use uuid::Uuid;

mod common;
use common::{deposit, open, test_pool};

async fn begin(store: &Store) -> Box<event_store::UnitOfWork> {
    match store.begin(CommandContext::new("test"), None).await.expect("begin") {
        Begun::Fresh(uow) => uow,
        Begun::Replayed(_) => unreachable!("no idempotency key"),
    }
}

/// Runs one wallet command and commits it; returns the balance it left, or the store's error.
async fn run(store: &Store, wallet: Uuid, command: WalletCommand) -> Result<Decimal, StoreError> {
    let mut uow = begin(store).await;
    let executed = uow.execute::<Wallet>(&wallet.to_string(), command, &()).await?.expect("command accepted");
    uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await?;
    Ok(executed.aggregate.balance)
}

/// Commits `uow` in a task of its own, for a commit that waits on one the test holds.
fn commit_in_background(
    uow: Box<event_store::UnitOfWork>,
) -> tokio::task::JoinHandle<Result<event_store::Committed, StoreError>> {
    tokio::spawn(uow.commit(|_| Outcome::new(200, serde_json::Value::Null)))
}

async fn stored_balance(store: &Store, wallet: Uuid) -> Decimal {
    store.load_current::<Wallet>(&wallet.to_string()).await.expect("load").aggregate.balance
}

fn withdrawal(amount: &str) -> WalletCommand {
    WalletCommand::RequestWithdrawal {
        withdrawal_id: Uuid::new_v4(),
        amount: common::eur(amount),
        currency: domain::Currency::Eur,
        reference: "r".into(),
        destination: "IBAN".into(),
    }
}

#[tokio::test]
async fn a_cached_state_made_stale_by_another_process_conflicts_once_then_reloads() {
    let pool = test_pool().await;
    let (here, elsewhere) = (Store::new(pool.clone()), Store::new(pool.clone()));
    let wallet = Uuid::new_v4();
    run(&here, wallet, open(wallet)).await.unwrap();
    assert_eq!(run(&here, wallet, deposit("10.00")).await.unwrap(), "10.00".parse().unwrap());

    // Another process appends; `here` still caches the wallet at 10.00.
    assert_eq!(run(&elsewhere, wallet, deposit("5.00")).await.unwrap(), "15.00".parse().unwrap());

    let stale = run(&here, wallet, deposit("1.00")).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "a write from a stale state must conflict: {stale:?}");
    // The retry starts from the database, not from the cache.
    assert_eq!(run(&here, wallet, deposit("1.00")).await.unwrap(), "16.00".parse().unwrap());
    assert_eq!(stored_balance(&here, wallet).await, "16.00".parse().unwrap());
}

#[tokio::test]
async fn a_stale_cached_state_only_read_fails_the_commit() {
    let pool = test_pool().await;
    let (here, elsewhere) = (Store::new(pool.clone()), Store::new(pool.clone()));
    let (read_only, written) = (Uuid::new_v4(), Uuid::new_v4());
    run(&here, read_only, open(read_only)).await.unwrap();
    run(&here, written, open(written)).await.unwrap();
    run(&elsewhere, read_only, deposit("5.00")).await.unwrap();

    // A unit of work that reads `read_only` (from the stale cache: balance 0) to decide a
    // write elsewhere must not commit on that read.
    let mut uow = begin(&here).await;
    let look = uow.state::<Wallet>(&read_only.to_string()).await.unwrap();
    assert_eq!(look.balance, Decimal::ZERO, "the look is the cache's, behind the other process");
    uow.execute::<Wallet>(&written.to_string(), deposit("1.00"), &()).await.unwrap().unwrap();
    let committed = uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await;
    assert!(matches!(committed, Err(StoreError::Conflict)), "{committed:?}");
    assert_eq!(stored_balance(&here, written).await, Decimal::ZERO, "nothing of the failed unit of work stays");

    // The stale state did not go back to the cache: a write from it would conflict again.
    assert_eq!(run(&here, read_only, deposit("1.00")).await.unwrap(), "6.00".parse().unwrap());
}

#[tokio::test]
async fn a_refused_command_leaves_the_committed_state_cached() {
    let pool = test_pool().await;
    let store = Store::new(pool.clone());
    let wallet = Uuid::new_v4();
    run(&store, wallet, open(wallet)).await.unwrap();
    run(&store, wallet, deposit("3.00")).await.unwrap();
    let mut uow = begin(&store).await;
    let refused = uow.execute::<Wallet>(&wallet.to_string(), withdrawal("4.00"), &()).await.unwrap();
    assert!(refused.is_err(), "4.00 out of 3.00 is refused");
    drop(uow);
    assert_eq!(run(&store, wallet, deposit("2.00")).await.unwrap(), "5.00".parse().unwrap());
    assert_eq!(stored_balance(&store, wallet).await, "5.00".parse().unwrap());
}

/// A refusal is never decided on a stale cached state: it would write nothing, so nothing at
/// commit would catch it. Here the cache is behind another process's deposit.
#[tokio::test]
async fn a_refusal_on_a_state_another_process_moved_is_decided_again_on_the_committed_one() {
    let pool = test_pool().await;
    let (here, elsewhere) = (Store::new(pool.clone()), Store::new(pool.clone()));
    let wallet = Uuid::new_v4();
    run(&here, wallet, open(wallet)).await.unwrap();
    run(&elsewhere, wallet, deposit("5.00")).await.unwrap();

    // `here` caches the wallet at 0.00, which would refuse 4.00.
    assert_eq!(run(&here, wallet, withdrawal("4.00")).await.unwrap(), "1.00".parse().unwrap());
    assert_eq!(stored_balance(&here, wallet).await, "1.00".parse().unwrap());
}

/// A state only read from the database is not cached: it may have been loaded while a commit
/// on the stream was in flight, and would outlive it. Here another process writes after the
/// read; the next look must see it.
#[tokio::test]
async fn a_state_only_read_from_the_database_is_not_cached() {
    let pool = test_pool().await;
    let (here, elsewhere) = (Store::new(pool.clone()), Store::new(pool.clone()));
    let wallet = Uuid::new_v4();
    run(&elsewhere, wallet, open(wallet)).await.unwrap();
    let mut look = begin(&here).await;
    assert_eq!(look.state::<Wallet>(&wallet.to_string()).await.unwrap().balance, Decimal::ZERO);
    drop(look);

    run(&elsewhere, wallet, deposit("5.00")).await.unwrap();
    let mut look = begin(&here).await;
    let balance = look.state::<Wallet>(&wallet.to_string()).await.unwrap().balance;
    assert_eq!(balance, "5.00".parse().unwrap(), "the first look's state was not served again");
}

/// A deferred trigger that makes a unit of work's COMMIT block on advisory lock 4242 (held by
/// the test), then fail when the row it checks says so: a commit the test holds open.
async fn install_held_commit(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE held_commits (fail boolean NOT NULL); \
         CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_advisory_xact_lock(4242); \
           IF NEW.fail THEN RAISE EXCEPTION 'commit refused by the test'; END IF; RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER held_commit AFTER INSERT ON held_commits \
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit();",
    )
    .execute(pool)
    .await
    .expect("install the held commit");
}

/// Starts a deposit whose COMMIT blocks until the test lets go of `gate` (then fails if
/// `fail`), and returns once its statements ran and its stripe is free.
async fn deposit_with_held_commit(
    store: &Store,
    wallet: Uuid,
    fail: bool,
) -> tokio::task::JoinHandle<Result<event_store::Committed, StoreError>> {
    let mut uow = begin(store).await;
    uow.execute::<Wallet>(&wallet.to_string(), deposit("5.00"), &()).await.unwrap().unwrap();
    let mut arguments = sqlx::postgres::PgArguments::default();
    sqlx::Arguments::add(&mut arguments, fail).unwrap();
    uow.stage_statement("INSERT INTO held_commits (fail) VALUES ($1)", arguments);
    commit_in_background(uow)
}

/// A store with a wallet whose first deposit's COMMIT is held: the store, the wallet, the
/// gate that holds it and the committing task.
async fn wallet_with_held_deposit(
    fail: bool,
) -> (
    Store,
    Uuid,
    sqlx::pool::PoolConnection<sqlx::Postgres>,
    tokio::task::JoinHandle<Result<event_store::Committed, StoreError>>,
) {
    let pool = test_pool().await;
    install_held_commit(&pool).await;
    let store = Store::new(pool.clone());
    let wallet = Uuid::new_v4();
    run(&store, wallet, open(wallet)).await.unwrap();
    let gate = hold_gate(&pool).await;
    let first = deposit_with_held_commit(&store, wallet, fail).await;
    (store, wallet, gate, first)
}

async fn hold_gate(pool: &sqlx::PgPool) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    let mut gate = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(4242)").execute(&mut *gate).await.unwrap();
    gate
}

async fn release_gate(mut gate: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    sqlx::query("SELECT pg_advisory_unlock(4242)").execute(&mut *gate).await.unwrap();
}

/// A second command on a stream runs while the first one's COMMIT is still in flight, and
/// commits after it.
#[tokio::test]
async fn the_next_command_on_a_stream_runs_while_the_previous_commit_is_in_flight() {
    let (store, wallet, gate, first) = wallet_with_held_deposit(false).await;

    // Without the early release this would wait for the stripe until the first commit ends.
    let mut second = begin(&store).await;
    let executed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        second.execute::<Wallet>(&wallet.to_string(), deposit("1.00"), &()),
    )
    .await
    .expect("the stream is free while the first commit is held")
    .unwrap()
    .unwrap();
    assert_eq!(executed.aggregate.balance, "6.00".parse().unwrap(), "built on the first command's state");
    assert!(!first.is_finished(), "the first commit is still held");
    let second = commit_in_background(second);

    release_gate(gate).await;
    first.await.unwrap().expect("the first commits");
    second.await.unwrap().expect("the second commits after it");
    assert_eq!(stored_balance(&store, wallet).await, "6.00".parse().unwrap());
}

/// When the first commit fails, the command built on its state fails too (a conflict: the
/// caller retries from the database), and nothing of either is stored.
#[tokio::test]
async fn a_command_built_on_a_commit_that_fails_fails_with_a_conflict() {
    let (store, wallet, gate, first) = wallet_with_held_deposit(true).await;

    let mut second = begin(&store).await;
    let executed = second.execute::<Wallet>(&wallet.to_string(), deposit("1.00"), &()).await.unwrap().unwrap();
    assert_eq!(executed.aggregate.balance, "6.00".parse().unwrap());
    let second = commit_in_background(second);

    release_gate(gate).await;
    assert!(first.await.unwrap().is_err(), "the first commit is refused");
    let second = second.await.unwrap();
    assert!(matches!(second, Err(StoreError::Conflict)), "{second:?}");
    assert_eq!(stored_balance(&store, wallet).await, Decimal::ZERO);
    // The failed state is not served again: the retry starts from the database.
    assert_eq!(run(&store, wallet, deposit("1.00")).await.unwrap(), "1.00".parse().unwrap());
}

/// The cqrs-es path writes without the cache; the next unit of work must not start from the
/// state cached before it.
#[tokio::test]
async fn events_appended_through_the_cqrs_es_store_replace_the_cached_state() {
    use cqrs_es::EventStore;
    let pool = test_pool().await;
    let store = Store::new(pool.clone());
    let wallet = Uuid::new_v4();
    run(&store, wallet, open(wallet)).await.unwrap();
    let cqrs_store = event_store::pg_event_store::PgEventStore::<Wallet>::new(store.clone());
    let context = cqrs_store.load_aggregate(&wallet.to_string()).await.unwrap();
    let deposited = domain::wallet::WalletEvent::Deposited {
        currency: domain::Currency::Eur,
        transaction_id: Uuid::new_v4(),
        amount: common::eur("7.00"),
        reference: "bulk".into(),
        counter_account: domain::accounts::SystemAccount::External,
        balance_after: "7.00".parse().unwrap(),
    };
    cqrs_store.commit(vec![deposited], context, Default::default()).await.unwrap();
    assert_eq!(
        run(&store, wallet, deposit("1.00")).await.unwrap(),
        "8.00".parse().unwrap(),
        "no conflict, no stale state"
    );
}

/// A withdrawal refused on the wallet's state: the unit of work's refusal basis, taken after
/// it is dropped.
async fn refused_withdrawal(store: &Store, wallet: Uuid, amount: &str) -> event_store::RefusalBasis {
    let mut uow = begin(store).await;
    let refused = uow.execute::<Wallet>(&wallet.to_string(), withdrawal(amount), &()).await.unwrap();
    assert!(refused.is_err(), "{amount} is more than the wallet holds");
    uow.refusal_basis()
}

/// A refusal decided on a state whose commit is in flight stands only if that commit does:
/// here it fails, so the 5.00 the refusal counted never was.
#[tokio::test]
async fn a_refusal_on_a_state_whose_commit_fails_does_not_stand() {
    let (store, wallet, gate, first) = wallet_with_held_deposit(true).await;
    let basis = refused_withdrawal(&store, wallet, "6.00").await;
    assert!(!basis.settled(), "the state refused on is not committed yet");
    release_gate(gate).await;
    assert!(first.await.unwrap().is_err(), "the first commit is refused");
    assert!(!basis.stands().await, "the state refused on never was");
}

#[tokio::test]
async fn a_refusal_on_a_state_whose_commit_succeeds_stands() {
    let (store, wallet, gate, first) = wallet_with_held_deposit(false).await;
    let basis = refused_withdrawal(&store, wallet, "6.00").await;
    release_gate(gate).await;
    first.await.unwrap().expect("the first commits");
    assert!(basis.stands().await && basis.settled());

    // Decided on committed states only: settled at once.
    let basis = refused_withdrawal(&store, wallet, "6.00").await;
    assert!(basis.settled());
}

/// A wallet whose stream shares `wallet`'s stripe in `store`, so that its cached state takes
/// `wallet`'s place.
fn wallet_on_the_same_stripe(store: &Store, wallet: Uuid) -> Uuid {
    let wallet = wallet.to_string();
    std::iter::repeat_with(Uuid::new_v4)
        .find(|other| store.share_a_stripe((Wallet::TYPE, &wallet), (Wallet::TYPE, &other.to_string())))
        .expect("one in about 4,096 does")
}

/// Another stream on the stripe takes the wallet's cached state's place while the deposit it
/// waits for is still being committed. The database does not show that deposit yet: a load
/// from it would refuse a withdrawal the deposit pays for. It is a conflict instead, and the
/// retry after the commit sees the deposit.
#[tokio::test]
async fn a_stream_is_not_loaded_from_the_database_while_a_commit_on_it_is_in_flight() {
    let (store, wallet, gate, first) = wallet_with_held_deposit(false).await;
    let neighbour = wallet_on_the_same_stripe(&store, wallet);
    run(&store, neighbour, open(neighbour)).await.unwrap();

    let mut uow = begin(&store).await;
    let withdrawn = uow.execute::<Wallet>(&wallet.to_string(), withdrawal("4.00"), &()).await;
    assert!(matches!(withdrawn, Err(StoreError::Conflict)), "not refused on the stored 0.00: {:?}", withdrawn.err());
    drop(uow);

    release_gate(gate).await;
    first.await.unwrap().expect("the first commits");
    assert_eq!(run(&store, wallet, withdrawal("4.00")).await.unwrap(), "1.00".parse().unwrap());
}

/// A unit of work that wrote on a cached state and was then dropped (a later command refused)
/// leaves the state cached as it took it: the next command continues from the deposit still
/// in flight, neither from the dropped deposit nor from the database.
#[tokio::test]
async fn a_dropped_unit_of_work_leaves_the_cached_state_as_it_took_it() {
    let (store, wallet, gate, first) = wallet_with_held_deposit(false).await;
    let mut dropped = begin(&store).await;
    let deposited = dropped.execute::<Wallet>(&wallet.to_string(), deposit("1.00"), &()).await.unwrap().unwrap();
    assert_eq!(deposited.aggregate.balance, "6.00".parse().unwrap());
    drop(dropped);

    let mut next = begin(&store).await;
    let withdrawn = next.execute::<Wallet>(&wallet.to_string(), withdrawal("4.00"), &()).await;
    let withdrawn = withdrawn.expect("from the cache: no conflict").expect("5.00 pays for 4.00");
    assert_eq!(withdrawn.aggregate.balance, "1.00".parse().unwrap(), "the dropped deposit never happened");
    let next = commit_in_background(next);

    release_gate(gate).await;
    first.await.unwrap().expect("the first commits");
    next.await.unwrap().expect("the withdrawal commits after it");
    assert_eq!(stored_balance(&store, wallet).await, "1.00".parse().unwrap());
}

/// A unit of work that only read a state still waiting for its commit, and committed writes
/// elsewhere, leaves that state cached: the next command on the stream continues from it.
#[tokio::test]
async fn a_state_in_flight_that_a_committing_unit_only_read_stays_cached() {
    let (store, wallet, gate, first) = wallet_with_held_deposit(false).await;
    let elsewhere = Uuid::new_v4();
    let mut reader = begin(&store).await;
    let look = reader.state::<Wallet>(&wallet.to_string()).await.unwrap();
    assert_eq!(look.balance, "5.00".parse().unwrap(), "the look is the deposit's state in flight");
    reader.execute::<Wallet>(&elsewhere.to_string(), open(elsewhere), &()).await.unwrap().unwrap();
    let reader = commit_in_background(reader);

    let mut next = begin(&store).await;
    let executed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        next.execute::<Wallet>(&wallet.to_string(), deposit("1.00"), &()),
    )
    .await
    .expect("the stripe is free")
    .expect("continued from the cached state, no conflict")
    .unwrap();
    assert_eq!(executed.aggregate.balance, "6.00".parse().unwrap());
    let next = commit_in_background(next);

    release_gate(gate).await;
    first.await.unwrap().expect("the first commits");
    reader.await.unwrap().expect("the reader commits after it");
    next.await.unwrap().expect("the next commits after it");
    assert_eq!(stored_balance(&store, wallet).await, "6.00".parse().unwrap());
}
