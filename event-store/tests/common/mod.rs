//! Helpers shared by the event store's integration tests: a migrated database per test and
//! the wallet commands they drive.

#![allow(dead_code)] // each test file uses its own subset

use domain::wallet::WalletCommand;
use domain::{Amount, Currency};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

pub async fn test_pool() -> PgPool {
    let url = create_test_database().await;
    PgPoolOptions::new().max_connections(4).connect(&url).await.expect("connect")
}

/// Creates a migrated database of its own; returns its URL.
pub async fn create_test_database() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/ecoledger".into());
    let (base, _) = url.rsplit_once('/').expect("database URL with a path");
    let admin = PgPoolOptions::new().max_connections(1).connect(&format!("{base}/postgres")).await.expect("connect");
    let name = format!(
        "ecoledger_test_{}_{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        Uuid::new_v4().simple()
    );
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
    let url = format!("{base}/{name}");
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.expect("connect");
    event_store::MIGRATOR.run(&pool).await.expect("migrate");
    pool.close().await;
    url
}

pub fn eur(text: &str) -> Amount {
    Amount::parse(text, Currency::Eur).unwrap()
}

pub fn open(wallet: Uuid) -> WalletCommand {
    WalletCommand::OpenWallet { wallet_id: wallet, owner_id: Uuid::new_v4(), currency: Currency::Eur }
}

pub fn deposit(amount: &str) -> WalletCommand {
    WalletCommand::Deposit {
        transaction_id: Uuid::new_v4(),
        amount: eur(amount),
        currency: Currency::Eur,
        reference: "r".into(),
    }
}
