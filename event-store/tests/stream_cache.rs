//! The per-stripe stream cache: a command on a hot stream starts from the state the previous
//! one committed, yet a write by another process (another `Store` on the same database) is
//! never missed: a stale write conflicts and its retry reloads, a stale read fails at commit.

use domain::wallet::{Wallet, WalletCommand, WalletError};
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

async fn stored_balance(store: &Store, wallet: Uuid) -> Decimal {
    store.load_current::<Wallet>(&wallet.to_string()).await.expect("load").aggregate.balance
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
    let refusal = uow
        .execute_with::<Wallet, WalletError>(&read_only.to_string(), |_| Err(WalletError::InsufficientFunds), &())
        .await
        .unwrap();
    assert!(refusal.is_err(), "the decide closure refused, as a read-only look does");
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
    let withdrawal = WalletCommand::RequestWithdrawal {
        withdrawal_id: Uuid::new_v4(),
        amount: common::eur("4.00"),
        currency: domain::Currency::Eur,
        reference: "r".into(),
        destination: "IBAN".into(),
    };
    let refused = uow.execute::<Wallet>(&wallet.to_string(), withdrawal, &()).await.unwrap();
    assert!(refused.is_err(), "4.00 out of 3.00 is refused");
    drop(uow);
    assert_eq!(run(&store, wallet, deposit("2.00")).await.unwrap(), "5.00".parse().unwrap());
    assert_eq!(stored_balance(&store, wallet).await, "5.00".parse().unwrap());
}
