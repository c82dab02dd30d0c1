//! Growth: a wallet with a long history appended in bulk through the store (seeding one over
//! HTTP would take most of an hour), and a full replay of every projection, timed, with the
//! process's resident memory sampled while it runs.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cqrs_es::EventStore;
use domain::accounts::SystemAccount;
use domain::wallet::{wallet_id, Wallet, WalletCommand, WalletEvent};
use domain::{Amount, Currency};
use event_store::pg_event_store::{PgAggregateContext, PgEventStore};
use event_store::{Begun, CommandContext, Outcome, Store};
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// Events appended per transaction while seeding.
const SEED_BATCH: usize = 5_000;
/// How often the replay samples resident memory.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ecoledger",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Events to append to one new EUR wallet.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ecoledger",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Schema the replay writes (dropped first, left for inspection).
    #[arg(long, default_value = "bench_replay")]
    pub schema: String,
}

async fn open_store(database_url: &str) -> anyhow::Result<Store> {
    let pool =
        PgPoolOptions::new().max_connections(6).connect(database_url).await.context("Failed to connect to Postgres")?;
    event_store::MIGRATOR.run(&pool).await.context("Failed to apply migrations")?;
    Ok(Store::new(pool))
}

/// Opens a new EUR wallet (owned by a user id that exists only for the benchmark) and appends
/// `events` deposits of 1.00 to it, in batches, through the store's cqrs-es `EventStore`.
pub async fn seed(args: SeedArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.database_url).await?;
    let owner = domain::new_id();
    let wallet = wallet_id(owner, Currency::Eur);
    let Begun::Fresh(mut uow) = store.begin(CommandContext::new("bench:seed"), None).await? else {
        unreachable!("no idempotency key was given")
    };
    let open = WalletCommand::OpenWallet { wallet_id: wallet, owner_id: owner, currency: Currency::Eur };
    uow.execute::<Wallet>(&wallet.to_string(), open, &()).await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await?;
    let started = Instant::now();
    append_deposits(&store, wallet, args.events).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "wallet {wallet}: {} events appended in {seconds:.1}s ({:.0} events/s)",
        args.events,
        args.events as f64 / seconds
    );
    let started = Instant::now();
    snapshot_by_one_command(&store, wallet).await?;
    println!("first command on it (full load, then a snapshot): {:.1}s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// One deposit through a unit of work: it loads the whole stream once and, being far past
/// the snapshot interval, leaves a snapshot, as the commands of a stream grown one by one
/// would have. Measured commands then start from a snapshot, as in production.
async fn snapshot_by_one_command(store: &Store, wallet: Uuid) -> anyhow::Result<()> {
    let Begun::Fresh(mut uow) = store.begin(CommandContext::new("bench:seed"), None).await? else {
        unreachable!("no idempotency key was given")
    };
    let deposit = WalletCommand::Deposit {
        transaction_id: domain::new_id(),
        amount: Amount::parse("1", Currency::Eur).expect("a valid amount"),
        currency: Currency::Eur,
        reference: "bench-seed-snapshot".into(),
    };
    let sequence =
        uow.execute::<Wallet>(&wallet.to_string(), deposit, &()).await?.map_err(|e| anyhow::anyhow!("{e}"))?.sequence;
    uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let snapshot_sequence = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT last_sequence FROM snapshots WHERE aggregate_type = 'Wallet' AND aggregate_id = $1",
        )
        .bind(wallet.to_string())
        .fetch_optional(store.pool())
    };
    while snapshot_sequence().await?.unwrap_or(0) < sequence {
        anyhow::ensure!(Instant::now() < deadline, "no snapshot of wallet {wallet} appeared within a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn append_deposits(store: &Store, wallet: Uuid, count: usize) -> anyhow::Result<()> {
    let events_store = PgEventStore::<Wallet>::new(store.clone());
    let mut context = events_store.load_aggregate(&wallet.to_string()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut balance = context.aggregate.balance;
    let one = Amount::parse("1", Currency::Eur).expect("a valid amount");
    let mut appended = 0;
    while appended < count {
        let batch = SEED_BATCH.min(count - appended);
        let events: Vec<WalletEvent> = (0..batch)
            .map(|_| {
                balance += Decimal::ONE;
                WalletEvent::Deposited {
                    currency: Currency::Eur,
                    transaction_id: domain::new_id(),
                    amount: one,
                    reference: "bench-seed".into(),
                    counter_account: SystemAccount::External,
                    balance_after: balance,
                }
            })
            .collect();
        let sequence = context.sequence;
        events_store.commit(events, context, HashMap::new()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        appended += batch;
        let head_hash: Vec<u8> = sqlx::query_scalar(
            "SELECT hash FROM events WHERE aggregate_type = 'Wallet' AND aggregate_id = $1 AND sequence = $2",
        )
        .bind(wallet.to_string())
        .bind(sequence + batch as i64)
        .fetch_one(store.pool())
        .await?;
        context = PgAggregateContext {
            aggregate_id: wallet.to_string(),
            aggregate: Wallet::default(),
            sequence: sequence + batch as i64,
            head_hash,
        };
    }
    Ok(())
}

/// Replays every projection from the event store into a side schema, reporting events per
/// second and the process's resident memory: idle before, peak during.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.database_url).await?;
    let idle = resident_kib().unwrap_or(0);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(resident_kib().unwrap_or(0));
            tokio::select! {
                _ = stopped.changed() => return peak,
                _ = tokio::time::sleep(RSS_SAMPLE_EVERY) => {}
            }
        }
    });
    let report = projections::replay_into_schema(&store, &projections::all(), &args.schema, i64::MAX).await?;
    let _ = stop.send(true);
    let peak = sampler.await.unwrap_or(0);
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "replayed {} events of {} projections in {seconds:.1}s: {:.0} events/s; RSS idle {} MiB, peak {} MiB (+{} MiB)",
        report.events,
        report.projections.len(),
        report.events as f64 / seconds.max(1e-9),
        idle / 1024,
        peak / 1024,
        peak.saturating_sub(idle) / 1024,
    );
    Ok(ExitCode::SUCCESS)
}

/// This process's resident set size in KiB, from /proc (Linux).
pub fn resident_kib() -> Option<u64> {
    resident_kib_of("self")
}

/// The resident set size of process `pid` ("self" for this one) in KiB.
pub fn resident_kib_of(pid: &str) -> Option<u64> {
    memory_kib_of(pid, &["VmRSS:"]).map(|[rss]| rss)
}

/// Memory fields of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, ...) in KiB, in the order asked,
/// read from one snapshot of the file.
pub fn memory_kib_of<const N: usize>(pid: &str, fields: &[&str; N]) -> Option<[u64; N]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = |field: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let mut values = [0; N];
    for (slot, field) in values.iter_mut().zip(fields) {
        *slot = value(field)?;
    }
    Some(values)
}
