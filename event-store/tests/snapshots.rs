//! Snapshots: loading from a snapshot equals a full replay (DESIGN.md section 2). cqrs-es 0.5's
//! own snapshot stores apply new events twice; ours must not.

use domain::wallet::{wallet_id, Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::{Begun, CommandContext, Outcome, Store};
use proptest::prelude::*;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

mod common;
use common::{create_test_database, deposit, eur, open, test_pool};

async fn execute(store: &Store, wallet: Uuid, command: WalletCommand) {
    let Begun::Fresh(mut uow) = store.begin(CommandContext::new("test"), None).await.expect("begin") else {
        unreachable!()
    };
    // Rejections are part of random sequences: they write nothing.
    if uow.execute::<Wallet>(&wallet.to_string(), command, &()).await.expect("store").is_ok() {
        uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await.expect("commit");
    }
}

/// Loads from the snapshot (once one at `at_least` or later exists) and by full replay.
async fn both_loads(store: &Store, wallet: Uuid, at_least: i64) -> (Wallet, Wallet, i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut conn = store.pool().acquire().await.expect("conn");
        let snapshot = store.load::<Wallet>(&mut conn, &wallet.to_string(), true).await.expect("load with snapshot");
        if snapshot.snapshot_sequence >= at_least {
            let replay = store.load::<Wallet>(&mut conn, &wallet.to_string(), false).await.expect("full replay");
            assert_eq!(snapshot.sequence, replay.sequence);
            assert_eq!(snapshot.head_hash, replay.head_hash);
            return (snapshot.aggregate, replay.aggregate, snapshot.snapshot_sequence);
        }
        assert!(std::time::Instant::now() < deadline, "no snapshot at or after {at_least} appeared");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn deposits_of_10_and_5_snapshot_as_15_not_30() {
    let store = Store::with_snapshot_interval(test_pool().await, 2);
    let wallet = wallet_id(Uuid::new_v4(), Currency::Eur);
    execute(&store, wallet, open(wallet)).await;
    execute(&store, wallet, deposit("10")).await;
    execute(&store, wallet, deposit("5")).await;
    let (from_snapshot, replayed, snapshot_sequence) = both_loads(&store, wallet, 2).await;
    assert!(snapshot_sequence >= 2);
    assert_eq!(from_snapshot.balance, "15.00".parse().unwrap());
    assert_eq!(from_snapshot, replayed);
    // And a withdrawal beyond the true balance is still refused after the snapshot.
    let overdraw = WalletCommand::RequestWithdrawal {
        withdrawal_id: Uuid::new_v4(),
        amount: eur("20"),
        currency: Currency::Eur,
        reference: "w".into(),
        destination: "d".into(),
    };
    let Begun::Fresh(mut uow) = store.begin(CommandContext::new("test"), None).await.unwrap() else { unreachable!() };
    let rejected = uow.execute::<Wallet>(&wallet.to_string(), overdraw, &()).await.unwrap();
    assert_eq!(rejected.err(), Some(domain::wallet::WalletError::InsufficientFunds));
}

#[derive(Debug, Clone)]
enum Step {
    Deposit(u32),
    Withdraw(u32),
    PlaceHold(u32),
    CaptureOldestHold(u32),
    ReleaseOldestHold,
    Freeze,
    Unfreeze,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..5_000).prop_map(Step::Deposit),
        2 => (1u32..3_000).prop_map(Step::Withdraw),
        2 => (1u32..2_000).prop_map(Step::PlaceHold),
        2 => (1u32..1_000).prop_map(Step::CaptureOldestHold),
        1 => Just(Step::ReleaseOldestHold),
        1 => Just(Step::Freeze),
        1 => Just(Step::Unfreeze),
    ]
}

fn cents(value: u32) -> Amount {
    Amount::new(rust_decimal::Decimal::new(value as i64, 2), Currency::Eur).unwrap()
}

fn command_for(step: &Step, holds: &mut Vec<Uuid>) -> WalletCommand {
    match step {
        Step::Deposit(v) => WalletCommand::Deposit {
            transaction_id: Uuid::new_v4(),
            amount: cents(*v),
            currency: Currency::Eur,
            reference: "r".into(),
        },
        Step::Withdraw(v) => WalletCommand::RequestWithdrawal {
            withdrawal_id: Uuid::new_v4(),
            amount: cents(*v),
            currency: Currency::Eur,
            reference: "w".into(),
            destination: "d".into(),
        },
        Step::PlaceHold(v) => {
            let hold_id = Uuid::new_v4();
            holds.push(hold_id);
            WalletCommand::PlaceHold { hold_id, amount: cents(*v), expires_at: None }
        }
        Step::CaptureOldestHold(v) => WalletCommand::CaptureHold {
            hold_id: holds.first().copied().unwrap_or_else(Uuid::new_v4),
            capture_id: Uuid::new_v4(),
            amount: cents(*v),
            fee: None,
        },
        Step::ReleaseOldestHold => {
            let hold_id = if holds.is_empty() { Uuid::new_v4() } else { holds.remove(0) };
            WalletCommand::ReleaseHold { hold_id }
        }
        Step::Freeze => WalletCommand::Freeze { reason: "test".into() },
        Step::Unfreeze => WalletCommand::Unfreeze,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn loading_from_a_snapshot_equals_a_full_replay(steps in proptest::collection::vec(step(), 1..40), interval in 1i64..6) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = Store::with_snapshot_interval(shared_pool().await, interval);
            let wallet = wallet_id(Uuid::new_v4(), Currency::Eur);
            execute(&store, wallet, open(wallet)).await;
            let mut holds = Vec::new();
            for step in &steps {
                execute(&store, wallet, command_for(step, &mut holds)).await;
            }
            let mut conn = store.pool().acquire().await.unwrap();
            let head = store.load::<Wallet>(&mut conn, &wallet.to_string(), false).await.unwrap().sequence;
            drop(conn);
            // Once the stream reached the interval a snapshot is due: wait for one, then compare.
            let snapshot_at_least = if head >= interval { interval } else { 0 };
            let (from_snapshot, replayed, _) = both_loads(&store, wallet, snapshot_at_least).await;
            assert_eq!(from_snapshot, replayed, "snapshot and full replay differ");
            assert!(from_snapshot.available() >= rust_decimal::Decimal::ZERO);
        });
    }
}

/// One database for all proptest cases (each case uses a new wallet), created once.
async fn shared_pool() -> PgPool {
    static URL: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let url = URL.get_or_init(create_test_database).await;
    PgPoolOptions::new().max_connections(4).connect(url).await.unwrap()
}
