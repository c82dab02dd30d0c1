//! The deposit watcher: reads the token's `BridgedIn` and `Retired` logs up to the confirmed
//! block and records each in the ledger exactly once (issue 6, flow 3).
//!
//! - A log is keyed on (transaction hash, ordinal of the log in its transaction), never on the
//!   block-wide log index, which changes when a reorg re-includes the transaction elsewhere.
//!   Its ledger id is [`domain::chain::chain_log_id`]; a row in `chain_watcher_logs` under that
//!   id is written in the same transaction as the ledger's event, so a log read again (after a
//!   restart, a crash between logs, a retried range) is skipped.
//! - `BridgedIn` for a known CARBON wallet credits it from `chain` (`CreditFromChain`); for any
//!   other `accountRef`, or a wallet that refuses the credit, `chain` → `chain_suspense`
//!   (`SuspendBridgeIn`) for an admin to resolve. `Retired` posts `chain` → `retired`.
//! - Only blocks at or below the confirmed block are read: `head - confirmations + 1`, or the
//!   node's `finalized` block when the bridge counts confirmations only there. The cursor
//!   (`chain_watcher_cursor`: a block number and that block's hash) moves in each log's unit of
//!   work to the block before the log's (its hash: the log block's parent), and after a range to
//!   the range's last block, so a crash anywhere resumes at the last log recorded. Before
//!   the next range the node must still have that hash at that height: a mismatch is a reorg
//!   deeper than the confirmations. The watcher then halts with an alert (`alert` field
//!   [`ALERT_REORG`], metric `ecoledger_chain_watcher_halted`); it never debits or undoes a
//!   credit. An operator clears `halted_at` after looking.
//! - A chain that is down or slow delays deposits only: the loop retries with backoff and the
//!   ledger never waits for it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use domain::accounts::SystemAccount;
use domain::chain::{chain_log_id, ChainMovement, ChainMovementCommand};
use domain::wallet::{Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::{Begun, CommandContext, Outcome, Store, StoreError, UnitOfWork};
use prometheus::{IntCounter, IntGauge, Opts, Registry};
use rust_decimal::Decimal;
use sqlx::Row;
use tokio::sync::watch;
use uuid::Uuid;

use crate::contracts::{ref_uuid, CarbonToken};

/// Blocks one `eth_getLogs` call covers at most (many providers refuse wider ranges).
pub const BLOCKS_PER_RANGE_MAX: u64 = 500;
/// Processed blocks whose hashes are kept.
pub const BLOCK_HASHES_KEPT: i64 = 256;
/// How often the watcher looks for new confirmed blocks when it is caught up.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// The longest one pass may take before it is abandoned (and started again): a node that
/// hangs would otherwise hold the watcher forever. Everything a pass recorded stays recorded.
pub const PASS_TIME_MAX: Duration = Duration::from_secs(120);
/// The longest wait between retries while the chain or Postgres fails.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The `alert` field of the log line a halt writes: stable, for alert rules to match on.
pub const ALERT_REORG: &str = "chain_reorg_beyond_confirmations";
/// The `alert` field when a log cannot be recorded at all (an amount beyond the ledger's range).
pub const ALERT_UNRECORDABLE: &str = "chain_log_unrecordable";
/// Attempts at recording one log when it meets optimistic conflicts.
const RECORD_ATTEMPTS_MAX: u32 = 5;
/// Actor of the ledger events the watcher records.
pub const WATCHER_ACTOR: &str = "chain-bridge:watcher";
/// Advisory lock (class, object) the one active watcher holds.
const WATCHER_LOCK: (i32, i32) = (72562, 1);
/// Namespace of the watcher's command ids: UUIDv5(log id).
const WATCHER_COMMAND_NAMESPACE: Uuid = Uuid::from_u128(0x3a7c_51e0_9b2d_4f68_a1c4_0d5e_7f92_b816);

/// What the watcher needs to know about its chain.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    pub chain_id: u64,
    pub token: Address,
    /// The first block to read (the token's deployment block, or 0).
    pub first_block: u64,
    /// `None`: only blocks at or below the node's `finalized` block count.
    pub confirmations: Option<u64>,
    pub blocks_per_range: u64,
    pub poll_interval: Duration,
}

impl WatcherConfig {
    pub fn new(chain_id: u64, token: Address, first_block: u64, confirmations: Option<u64>) -> WatcherConfig {
        WatcherConfig {
            chain_id,
            token,
            first_block,
            confirmations,
            blocks_per_range: BLOCKS_PER_RANGE_MAX,
            poll_interval: POLL_INTERVAL_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// The chain was reorganised below the confirmed block, or a log cannot be recorded: the
    /// watcher stops until an operator clears `chain_watcher_cursor.halted_at`.
    #[error("the chain watcher is halted: {0}")]
    Halted(String),
    #[error("the chain node failed: {0}")]
    Rpc(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("another chain watcher is active")]
    NotActive,
}

/// The watcher's metrics (register them where `/metrics` serves them).
#[derive(Clone)]
pub struct WatcherMetrics {
    /// 1 while halted by an alert.
    pub halted: IntGauge,
    pub alerts: IntCounter,
    pub logs_recorded: IntCounter,
    /// The last block processed.
    pub block: IntGauge,
}

impl WatcherMetrics {
    pub fn new() -> WatcherMetrics {
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help)).expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help)).expect("valid metric");
        WatcherMetrics {
            halted: gauge("ecoledger_chain_watcher_halted", "1 while the chain watcher is halted by an alert"),
            alerts: counter("ecoledger_chain_watcher_alerts_total", "Alerts raised by the chain watcher"),
            logs_recorded: counter("ecoledger_chain_watcher_logs_recorded_total", "On-chain logs recorded"),
            block: gauge("ecoledger_chain_watcher_block", "The last block the chain watcher processed"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.halted.clone()))?;
        registry.register(Box::new(self.alerts.clone()))?;
        registry.register(Box::new(self.logs_recorded.clone()))?;
        registry.register(Box::new(self.block.clone()))
    }
}

impl Default for WatcherMetrics {
    fn default() -> Self {
        WatcherMetrics::new()
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pass {
    /// The last block processed after the pass (`None`: nothing processed yet).
    pub block: Option<u64>,
    pub logs_recorded: u64,
    pub logs_skipped: u64,
}

pub struct Watcher {
    store: Store,
    provider: DynProvider,
    config: WatcherConfig,
    metrics: WatcherMetrics,
}

/// One `BridgedIn` or `Retired` log, decoded, with its key.
#[derive(Debug, Clone)]
struct ChainLog {
    log_id: Uuid,
    block_number: u64,
    block_hash: B256,
    /// The hash of block `block_number - 1`: where the cursor stands once this log is recorded.
    parent_hash: B256,
    tx_hash: B256,
    log_index_in_tx: u64,
    amount: Decimal,
    event: LogEvent,
}

#[derive(Debug, Clone)]
enum LogEvent {
    BridgedIn { account_ref: B256 },
    Retired { holder: Address, cert_hash: B256 },
}

impl Watcher {
    pub fn new(store: Store, provider: DynProvider, config: WatcherConfig, metrics: WatcherMetrics) -> Watcher {
        Watcher { store, provider, config, metrics }
    }

    /// Runs until `stop` turns true or the watcher halts; the one active instance holds an
    /// advisory lock (a standby waits for it). Failures of the chain or Postgres are retried
    /// with backoff.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.config.poll_interval;
        loop {
            if *stop.borrow() {
                return;
            }
            let started = std::time::Instant::now();
            let result = self.run_active(&mut stop).await;
            if started.elapsed() > RETRY_BACKOFF_MAX {
                // It ran a while before failing: a new failure, not the same one again.
                backoff = self.config.poll_interval;
            }
            match result {
                Ok(()) => return,
                Err(WatcherError::Halted(reason)) => {
                    tracing::error!(alert = ALERT_REORG, %reason, "chain watcher halted; deposits wait for an operator");
                    return;
                }
                Err(WatcherError::NotActive) => backoff = self.config.poll_interval.max(Duration::from_secs(1)),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "chain watcher failed; retrying");
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
            if stopped_during(&mut stop, backoff).await {
                return;
            }
        }
    }

    /// Holds the watcher's lock on one connection and passes until stopped.
    async fn run_active(&self, stop: &mut watch::Receiver<bool>) -> Result<(), WatcherError> {
        let mut lock = self.store.pool().acquire().await?;
        if !event_store::try_advisory_lock(&mut lock, WATCHER_LOCK.0, WATCHER_LOCK.1).await? {
            return Err(WatcherError::NotActive);
        }
        let mut backoff = self.config.poll_interval;
        loop {
            // A node that hangs (accepts, never answers) ends the pass; what it recorded stays.
            let pass = tokio::time::timeout(PASS_TIME_MAX, self.pass()).await;
            let pass = pass.unwrap_or_else(|_| Err(rpc(format!("no answer within {PASS_TIME_MAX:?}"))));
            let wait = match pass {
                Ok(pass) => {
                    tracing::debug!(?pass, "chain watcher pass");
                    backoff = self.config.poll_interval;
                    self.config.poll_interval
                }
                // The chain is down or slow: retried here with backoff, the lock kept. The
                // ledger never waits for it.
                Err(WatcherError::Rpc(error)) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "the chain did not answer the watcher; retrying");
                    let wait = backoff;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                    wait
                }
                Err(other) => return Err(other),
            };
            if stopped_during(stop, wait).await {
                return Ok(());
            }
        }
    }

    /// Processes every confirmed block after the cursor, range by range. Callers make sure
    /// one pass runs at a time ([`Watcher::run`] holds the advisory lock).
    pub async fn pass(&self) -> Result<Pass, WatcherError> {
        let mut pass = Pass::default();
        let mut cursor = self.load_cursor().await?;
        pass.block = cursor.map(|(number, _)| number);
        let Some((confirmed, _)) = confirmed_block(&self.provider, self.config.confirmations).await? else {
            return Ok(pass);
        };
        loop {
            let from = match cursor {
                Some((number, hash)) => {
                    self.check_unchanged(number, hash).await?;
                    number + 1
                }
                None => self.config.first_block,
            };
            if from > confirmed {
                return Ok(pass);
            }
            let to = confirmed.min(from + self.config.blocks_per_range - 1);
            let (recorded, skipped, to_hash) = self.process_range(from, to).await?;
            pass.logs_recorded += recorded;
            pass.logs_skipped += skipped;
            pass.block = Some(to);
            cursor = Some((to, to_hash));
            self.metrics.block.set(to as i64);
        }
    }

    /// The stored cursor; a halted watcher refuses to go on.
    async fn load_cursor(&self) -> Result<Option<(u64, B256)>, WatcherError> {
        let row = sqlx::query("SELECT chain_id, block_number, block_hash, halt_reason FROM chain_watcher_cursor")
            .fetch_optional(self.store.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        if let Some(reason) = row.get::<Option<String>, _>("halt_reason") {
            self.metrics.halted.set(1);
            return Err(WatcherError::Halted(reason));
        }
        let chain_id: i64 = row.get("chain_id");
        if chain_id as u64 != self.config.chain_id {
            return Err(self
                .halt(format!("the cursor is of chain {chain_id}, the watcher on {}", self.config.chain_id))
                .await);
        }
        let number: i64 = row.get("block_number");
        let hash: Vec<u8> = row.get("block_hash");
        Ok(Some((number as u64, B256::from_slice(&hash))))
    }

    /// The node must still have `hash` at `number`, or blocks the watcher processed are gone.
    async fn check_unchanged(&self, number: u64, hash: B256) -> Result<(), WatcherError> {
        // A node without the block yet (one behind a load balancer) is retried, not a reorg.
        let now = block_hash_at(&self.provider, number)
            .await?
            .ok_or_else(|| rpc(format!("the node has no block {number} yet")))?;
        if now != hash {
            let reason = format!("block {number} was {hash} when processed and is now {now}");
            return Err(self.halt(reason).await);
        }
        Ok(())
    }

    /// Records the halt (alert, metric, the reason in the cursor row) and returns it.
    async fn halt(&self, reason: String) -> WatcherError {
        tracing::error!(alert = ALERT_REORG, %reason, "CHAIN WATCHER HALTED: nothing is debited or undone");
        self.metrics.halted.set(1);
        self.metrics.alerts.inc();
        let stored = sqlx::query(
            "UPDATE chain_watcher_cursor SET halted_at = now(), halt_reason = $1, updated_at = now() \
             WHERE halt_reason IS NULL",
        )
        .bind(&reason)
        .execute(self.store.pool())
        .await;
        if let Err(error) = stored {
            tracing::error!(%error, "the halt could not be stored; the watcher stops anyway");
        }
        WatcherError::Halted(reason)
    }

    /// Reads and records the logs of blocks `from..=to`, then moves the cursor to `to`.
    async fn process_range(&self, from: u64, to: u64) -> Result<(u64, u64, B256), WatcherError> {
        let to_hash = block_hash_at(&self.provider, to).await?.ok_or_else(|| rpc(format!("no block {to}")))?;
        let logs = self.read_logs(from, to).await?;
        // Everything read must still be on the chain that `to_hash` ends: a change here is a
        // reorg below the confirmed block.
        if block_hash_at(&self.provider, to).await? != Some(to_hash) {
            return Err(self.halt(format!("block {to} changed while its range was read")).await);
        }
        let (mut recorded, mut skipped) = (0, 0);
        for log in logs {
            match self.record_retrying(&log).await? {
                true => recorded += 1,
                false => skipped += 1,
            }
        }
        self.advance_cursor(to, to_hash).await?;
        Ok((recorded, skipped, to_hash))
    }

    /// The range's `BridgedIn` and `Retired` logs, in chain order, with their keys.
    async fn read_logs(&self, from: u64, to: u64) -> Result<Vec<ChainLog>, WatcherError> {
        let filter = Filter::new()
            .address(self.config.token)
            .from_block(from)
            .to_block(to)
            .event_signature(vec![CarbonToken::BridgedIn::SIGNATURE_HASH, CarbonToken::Retired::SIGNATURE_HASH]);
        let raw = self.provider.get_logs(&filter).await.map_err(rpc)?;
        let mut ordinals = TxOrdinals::default();
        let mut parents: HashMap<B256, B256> = HashMap::new();
        let mut logs = Vec::with_capacity(raw.len());
        for log in raw.into_iter().filter(|log| !log.removed) {
            let mut log = self.decode(&log, &mut ordinals).await?;
            log.parent_hash = match parents.get(&log.block_hash) {
                Some(parent) => *parent,
                None => {
                    let parent = self.parent_of(log.block_number, log.block_hash).await?;
                    *parents.entry(log.block_hash).or_insert(parent)
                }
            };
            logs.push(log);
        }
        Ok(logs)
    }

    /// The parent hash of block `number`, which must still be `hash` on the node.
    async fn parent_of(&self, number: u64, hash: B256) -> Result<B256, WatcherError> {
        let block = self.provider.get_block_by_number(BlockNumberOrTag::Number(number)).await.map_err(rpc)?;
        match block {
            Some(block) if block.header.hash == hash => Ok(block.header.parent_hash),
            _ => Err(self.halt(format!("block {number} changed while its logs were read (was {hash})")).await),
        }
    }

    async fn decode(&self, log: &Log, ordinals: &mut TxOrdinals) -> Result<ChainLog, WatcherError> {
        let missing = |what: &str| rpc(format!("a log without its {what}"));
        let tx_hash = log.transaction_hash.ok_or_else(|| missing("transaction hash"))?;
        let block_number = log.block_number.ok_or_else(|| missing("block number"))?;
        let block_hash = log.block_hash.ok_or_else(|| missing("block hash"))?;
        let log_index = log.log_index.ok_or_else(|| missing("log index"))?;
        let log_index_in_tx = ordinals.ordinal(&self.provider, tx_hash, log_index).await?;
        let (amount, event) = match log.topic0() {
            Some(topic) if *topic == CarbonToken::BridgedIn::SIGNATURE_HASH => {
                let decoded = log.log_decode::<CarbonToken::BridgedIn>().map_err(|e| rpc(e.to_string()))?;
                let event = decoded.inner.data;
                (event.amount, LogEvent::BridgedIn { account_ref: event.accountRef })
            }
            _ => {
                let decoded = log.log_decode::<CarbonToken::Retired>().map_err(|e| rpc(e.to_string()))?;
                let event = decoded.inner.data;
                (event.amount, LogEvent::Retired { holder: event.holder, cert_hash: event.certHash })
            }
        };
        let log_id = chain_log_id(self.config.chain_id, &tx_hash.to_string(), log_index_in_tx);
        let Some(amount) = token_units_to_carbon(amount) else {
            tracing::error!(alert = ALERT_UNRECORDABLE, %tx_hash, log_index_in_tx, %amount, "an on-chain amount beyond the ledger's range");
            return Err(self
                .halt(format!("log {tx_hash}/{log_index_in_tx}: amount {amount} beyond the ledger's range"))
                .await);
        };
        let parent_hash = B256::ZERO; // set by `read_logs`, once per block
        Ok(ChainLog { log_id, block_number, block_hash, parent_hash, tx_hash, log_index_in_tx, amount, event })
    }

    /// [`Watcher::record`], again on an optimistic conflict (a command on the same wallet
    /// committed meanwhile), a bounded number of times.
    async fn record_retrying(&self, log: &ChainLog) -> Result<bool, WatcherError> {
        let mut attempt = 1;
        loop {
            match self.record(log).await {
                Err(WatcherError::Store(StoreError::Conflict)) if attempt < RECORD_ATTEMPTS_MAX => attempt += 1,
                result => return result,
            }
        }
    }

    /// Records one log in one unit of work; `false` when it was recorded before.
    async fn record(&self, log: &ChainLog) -> Result<bool, WatcherError> {
        let context = CommandContext {
            command_id: Uuid::new_v5(&WATCHER_COMMAND_NAMESPACE, log.log_id.as_bytes()),
            correlation_id: log.log_id,
            causation_id: None,
            ..CommandContext::new(WATCHER_ACTOR)
        };
        let Begun::Fresh(uow) = self.store.begin(context, None).await? else {
            unreachable!("a unit of work without an idempotency key is always fresh")
        };
        let mut uow = *uow;
        let seen: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM chain_watcher_logs WHERE log_id = $1)")
            .bind(log.log_id)
            .fetch_one(uow.reader().await?)
            .await?;
        if seen {
            return Ok(false);
        }
        let amount = Amount::new(log.amount, Currency::Carbon).map_err(|e| StoreError::corrupt(e.to_string()))?;
        let tx_hash = log.tx_hash.to_string();
        let (outcome, wallet_id) = match &log.event {
            LogEvent::BridgedIn { account_ref } => {
                self.record_bridge_in(&mut uow, log, *account_ref, amount, &tx_hash).await?
            }
            LogEvent::Retired { holder, cert_hash } => {
                let command = ChainMovementCommand::RecordOnChainRetirement {
                    amount,
                    holder: holder.to_string().to_ascii_lowercase(),
                    cert_hash: cert_hash.to_string(),
                    tx_hash: tx_hash.clone(),
                    log_index: log.log_index_in_tx,
                };
                let executed = uow.execute::<ChainMovement>(&log.log_id.to_string(), command, &()).await?;
                if executed.is_err() {
                    // The movement's stream holds the log already: recorded once, by an
                    // earlier run whose row in chain_watcher_logs says so too.
                    return Ok(false);
                }
                ("retired", None)
            }
        };
        stage_log_row(&mut uow, log, outcome, wallet_id);
        stage_cursor(&mut uow, self.config.chain_id, log);
        uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await?;
        self.metrics.logs_recorded.inc();
        tracing::info!(%tx_hash, log_index_in_tx = log.log_index_in_tx, block = log.block_number, outcome,
            amount = %log.amount, "on-chain log recorded");
        Ok(true)
    }

    /// `BridgedIn`: credits the CARBON wallet named by `account_ref`, or, when there is none or
    /// it refuses the credit, puts the amount in `chain_suspense`.
    async fn record_bridge_in(
        &self,
        uow: &mut UnitOfWork,
        log: &ChainLog,
        account_ref: B256,
        amount: Amount,
        tx_hash: &str,
    ) -> Result<(&'static str, Option<Uuid>), WatcherError> {
        if let Some(wallet_id) = ref_uuid(account_ref) {
            let command = WalletCommand::CreditFromChain {
                deposit_id: log.log_id,
                amount,
                from: SystemAccount::Chain,
                tx_hash: tx_hash.to_string(),
                log_index: log.log_index_in_tx,
            };
            match uow.execute::<Wallet>(&wallet_id.to_string(), command, &()).await? {
                Ok(_) => return Ok(("credited", Some(wallet_id))),
                Err(refusal) => {
                    tracing::warn!(%wallet_id, code = refusal.code(), %tx_hash, "a bridge-in the wallet refuses goes to chain_suspense")
                }
            }
        }
        let command = ChainMovementCommand::SuspendBridgeIn {
            amount,
            account_ref: account_ref.to_string(),
            tx_hash: tx_hash.to_string(),
            log_index: log.log_index_in_tx,
        };
        match uow.execute::<ChainMovement>(&log.log_id.to_string(), command, &()).await? {
            Ok(_) => Ok(("suspended", None)),
            Err(refusal) => Err(StoreError::corrupt(format!("log {} already suspended: {refusal}", log.log_id)).into()),
        }
    }

    /// Moves the cursor to `number` (hash `hash`) and keeps the block's hash in the window.
    async fn advance_cursor(&self, number: u64, hash: B256) -> Result<(), WatcherError> {
        let mut tx = self.store.pool().begin().await?;
        sqlx::query(
            "INSERT INTO chain_watcher_cursor (singleton, chain_id, block_number, block_hash) VALUES (true, $1, $2, $3) \
             ON CONFLICT (singleton) DO UPDATE SET block_number = $2, block_hash = $3, updated_at = now()",
        )
        .bind(self.config.chain_id as i64)
        .bind(number as i64)
        .bind(hash.as_slice())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO chain_watcher_blocks (block_number, block_hash) VALUES ($1, $2) \
             ON CONFLICT (block_number) DO UPDATE SET block_hash = $2",
        )
        .bind(number as i64)
        .bind(hash.as_slice())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM chain_watcher_blocks WHERE block_number <= $1")
            .bind(number as i64 - BLOCK_HASHES_KEPT)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Waits `wait`; `true` when told to stop meanwhile (or the stop sender is gone).
async fn stopped_during(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

/// The cursor moved to the block before the log's (its hash: the log block's parent), in the
/// unit of work of the log's ledger event: after a crash the watcher goes on from the block of
/// the last log recorded, whose recorded logs it skips. Never moves back.
fn stage_cursor(uow: &mut UnitOfWork, chain_id: u64, log: &ChainLog) {
    use sqlx::Arguments;
    let mut arguments = sqlx::postgres::PgArguments::default();
    arguments.add(chain_id as i64).expect("an integer binds");
    arguments.add(log.block_number as i64 - 1).expect("an integer binds");
    arguments.add(log.parent_hash.as_slice().to_vec()).expect("bytes bind");
    uow.stage_statement(
        "INSERT INTO chain_watcher_cursor (singleton, chain_id, block_number, block_hash) VALUES (true, $1, $2, $3) \
         ON CONFLICT (singleton) DO UPDATE SET block_number = $2, block_hash = $3, updated_at = now() \
         WHERE chain_watcher_cursor.block_number < $2",
        arguments,
    );
}

/// The watcher's row for a log, in the unit of work of its ledger event.
fn stage_log_row(uow: &mut UnitOfWork, log: &ChainLog, outcome: &'static str, wallet_id: Option<Uuid>) {
    use sqlx::Arguments;
    let kind = match log.event {
        LogEvent::BridgedIn { .. } => "bridged_in",
        LogEvent::Retired { .. } => "retired",
    };
    let mut arguments = sqlx::postgres::PgArguments::default();
    arguments.add(log.log_id).expect("a uuid binds");
    arguments.add(kind).expect("text binds");
    arguments.add(outcome).expect("text binds");
    arguments.add(wallet_id).expect("a uuid binds");
    arguments.add(log.block_number as i64).expect("an integer binds");
    arguments.add(log.block_hash.as_slice().to_vec()).expect("bytes bind");
    arguments.add(log.tx_hash.as_slice().to_vec()).expect("bytes bind");
    arguments.add(log.log_index_in_tx as i32).expect("an integer binds");
    arguments.add(log.amount).expect("a decimal binds");
    uow.stage_statement(
        "INSERT INTO chain_watcher_logs (log_id, kind, outcome, wallet_id, block_number, block_hash, tx_hash, \
         log_index_in_tx, amount) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        arguments,
    );
}

/// Ordinals of logs within their transactions, from the transactions' receipts (fetched once
/// per transaction).
#[derive(Default)]
pub(crate) struct TxOrdinals {
    /// Block-wide log indices of each transaction's logs, in order.
    receipts: HashMap<B256, Vec<u64>>,
}

impl TxOrdinals {
    pub(crate) async fn ordinal(
        &mut self,
        provider: &DynProvider,
        tx_hash: B256,
        log_index: u64,
    ) -> Result<u64, WatcherError> {
        let indices = match self.receipts.entry(tx_hash) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                let receipt = provider
                    .get_transaction_receipt(tx_hash)
                    .await
                    .map_err(rpc)?
                    .ok_or_else(|| rpc(format!("no receipt for {tx_hash}")))?;
                slot.insert(receipt.inner.logs().iter().filter_map(|log| log.log_index).collect())
            }
        };
        let ordinal = indices
            .iter()
            .position(|index| *index == log_index)
            .ok_or_else(|| rpc(format!("log {log_index} is not in the receipt of {tx_hash}")))?;
        Ok(ordinal as u64)
    }
}

/// The confirmed block (number and hash): `head - confirmations + 1` (a block with one
/// confirmation is the head itself), or the node's `finalized` block with `None`. `None` when
/// the chain is not that long yet.
pub async fn confirmed_block(
    provider: &DynProvider,
    confirmations: Option<u64>,
) -> Result<Option<(u64, B256)>, WatcherError> {
    let tag = match confirmations {
        None => BlockNumberOrTag::Finalized,
        Some(confirmations) => {
            let head = provider.get_block_number().await.map_err(rpc)?;
            match (head + 1).checked_sub(confirmations.max(1)) {
                Some(number) => BlockNumberOrTag::Number(number),
                None => return Ok(None),
            }
        }
    };
    let block = provider.get_block_by_number(tag).await.map_err(rpc)?;
    Ok(block.map(|block| (block.header.number, block.header.hash)))
}

/// The hash of block `number` on the node's canonical chain.
pub async fn block_hash_at(provider: &DynProvider, number: u64) -> Result<Option<B256>, WatcherError> {
    let block = provider.get_block_by_number(BlockNumberOrTag::Number(number)).await.map_err(rpc)?;
    Ok(block.map(|block| block.header.hash))
}

/// Token units (0.001 t, the token's 3 decimals) as a CARBON amount; `None` beyond what a
/// `Decimal` holds.
pub fn token_units_to_carbon(units: U256) -> Option<Decimal> {
    let units: i128 = u128::try_from(units).ok()?.try_into().ok()?;
    Decimal::try_from_i128_with_scale(units, Currency::Carbon.scale()).ok()
}

/// A CARBON amount in token units; `None` when it has more than 3 decimals or is negative.
pub fn carbon_to_token_units(amount: Decimal) -> Option<U256> {
    let scaled = amount.checked_mul(Decimal::from(10_u64.pow(Currency::Carbon.scale())))?;
    if !scaled.fract().is_zero() || scaled.is_sign_negative() {
        return None;
    }
    let units: u128 = scaled.trunc().try_into().ok()?;
    Some(U256::from(units))
}

pub(crate) fn rpc(error: impl std::fmt::Display) -> WatcherError {
    WatcherError::Rpc(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_units_map_to_carbon_at_scale_three_and_back() {
        let cases = [(0_u64, "0.000"), (1, "0.001"), (1_500, "1.500"), (1_000_000_000, "1000000.000")];
        for (units, carbon) in cases {
            let amount = token_units_to_carbon(U256::from(units)).unwrap();
            assert_eq!(amount.to_string(), carbon);
            assert_eq!(carbon_to_token_units(amount), Some(U256::from(units)));
        }
        assert_eq!(token_units_to_carbon(U256::MAX), None);
        assert_eq!(carbon_to_token_units("0.0001".parse().unwrap()), None);
        assert_eq!(carbon_to_token_units("-1".parse().unwrap()), None);
    }
}
