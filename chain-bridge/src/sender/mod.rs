//! The bridge's transaction sender: one per hot key (a Postgres advisory lock on the key; a
//! standby waits), nonces allocated in Postgres.
//!
//! Every transaction is signed here (EIP-1559, fees from the node capped by
//! [`SenderConfig::max_fee_per_gas`]) and stored (signer, nonce, raw bytes, hash, fees) in the
//! same Postgres transaction that moves its work to `submitted`, and only then broadcast; a
//! restart rebroadcasts what was stored. A transaction not mined within
//! [`SenderConfig::bump_after`] is signed again with the same nonce and calldata and higher
//! fees (stored before it is broadcast); a receipt of any of its hashes completes the nonce.
//! A lower nonce is rebroadcast, never skipped.
//!
//! A mined transaction counts at the final block (head − confirmations + 1, or `finalized`),
//! re-checked against the canonical chain then. A reverted mint is never compensated: its
//! withdrawal is queued again and resent with a new nonce, and a `mintedRef` already true means
//! done (the `Minted` log names the transaction). A withdrawal is credited back only after an
//! admin asked to cancel it, when `mintedRef` is false at a final block and the signer's final
//! nonce count is past every nonce used for it ([`work`]).
//!
//! The chain being down or slow never blocks the ledger: every failure here is logged and
//! retried with a backoff, and the work stays queued in Postgres.

mod store;
mod work;

use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::BlockNumberOrTag;
use alloy::network::{TransactionBuilder, TxSignerSync};
use alloy::primitives::{Address, Bytes, TxKind, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use event_store::Store;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::identity::ContractAddresses;
pub use store::Kind;
use store::{Attempt, Mined, NewTx, OpenTx, QueueUpdate};
/// The certificate of a retirement and its `cert_hash`, as the sender records them (the API's
/// certificate shows the same), and the token units of a CARBON amount.
pub use work::{cert_hash, certificate, token_units};

/// Advisory lock class of the sender; the object is derived from the signer's address.
pub const SENDER_LOCK_CLASS: i32 = 72_570;
/// Transactions tracked per round.
const OPEN_TRANSACTIONS_MAX: i64 = 256;
/// New pieces of work of each kind sent per round.
const WORK_PER_ROUND_MAX: i64 = 32;
/// Longest wait between two rounds after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a halted sender checks again whether its nonces agree with the node.
const HALT_RECHECK: Duration = Duration::from_secs(30);
/// Longest a round may take: a node that hangs (not down, just silent) must not hold the
/// sender forever. A round cut short is a crash between steps, which every step survives.
const ROUND_MAX: Duration = Duration::from_secs(60);
/// How often a standby tries the signer's lock.
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// The gas limit of a transaction whose estimate failed (a failed estimate never fails the
/// work: it is sent with this and may revert, and is then retried).
const GAS_LIMIT_FALLBACK: u64 = 300_000;
/// Headroom over an estimate, in percent.
const GAS_ESTIMATE_MARGIN_PERCENT: u64 = 25;
/// A replacement must raise both fees by at least 10 % (geth, anvil); this bumps by 12.5 %.
const FEE_BUMP_NUMERATOR: u128 = 9;
const FEE_BUMP_DENOMINATOR: u128 = 8;

/// How the sender works.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Between two rounds when all is well.
    pub poll_interval: Duration,
    /// A pending transaction is broadcast again this long after its last broadcast (a node may
    /// have dropped it).
    pub rebroadcast_after: Duration,
    /// A pending transaction is re-signed with higher fees this long after its last signature.
    pub bump_after: Duration,
    /// A reverted transaction's work (a mint refused by the cap or a pause) is sent again
    /// this long after the revert was final, not at once.
    pub revert_retry_after: Duration,
    /// The most a transaction may pay per gas; a fee above it leaves the transaction pending.
    pub max_fee_per_gas: u128,
    /// Below this balance (wei) the signer's ETH is reported low (metric and warning).
    pub low_balance_wei: u128,
    /// Anchor once this many events were added since the last anchor ...
    pub anchor_every: i64,
    /// ... or this long after it, when anything moved.
    pub anchor_interval: Duration,
    /// TESTS ONLY: `false` stores transactions without broadcasting them, as a crash between
    /// the two would; a later sender rebroadcasts them.
    pub broadcast: bool,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            poll_interval: Duration::from_millis(500),
            rebroadcast_after: Duration::from_secs(10),
            bump_after: Duration::from_secs(120),
            revert_retry_after: Duration::from_secs(60),
            max_fee_per_gas: 500_000_000_000,
            low_balance_wei: 100_000_000_000_000_000,
            anchor_every: 10_000,
            anchor_interval: Duration::from_secs(3_600),
            broadcast: true,
        }
    }
}

/// The chain the sender sends to.
#[derive(Debug, Clone)]
pub struct SenderChain {
    /// A provider without a signer: the sender signs itself.
    pub provider: DynProvider,
    pub signer: PrivateKeySigner,
    pub chain_id: u64,
    pub contracts: ContractAddresses,
    /// Where log searches start (the contracts' deployment block).
    pub first_block: u64,
    /// `None`: only the `finalized` block counts.
    pub confirmations: Option<u64>,
}

/// The sender's Prometheus metrics.
#[derive(Clone)]
pub struct SenderMetrics {
    pub halted: IntGauge,
    pub balance_wei: Gauge,
    pub balance_low: IntGauge,
    pub sent: IntCounterVec,
    pub fee_bumps: IntCounter,
    pub errors: IntCounter,
    pub open_transactions: IntGauge,
}

impl SenderMetrics {
    pub fn new() -> SenderMetrics {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        SenderMetrics {
            halted: gauge(
                "ecoledger_chain_sender_halted",
                "1 when the sender stopped sending: its nonce disagrees with the node",
            ),
            balance_wei: Gauge::new("ecoledger_chain_signer_balance_wei", "ETH of the bridge's hot key, in wei")
                .expect("valid metric"),
            balance_low: gauge("ecoledger_chain_signer_balance_low", "1 when the hot key's ETH is below the threshold"),
            sent: IntCounterVec::new(
                Opts::new("ecoledger_chain_transactions_sent_total", "Transactions signed and stored, by kind"),
                &["kind"],
            )
            .expect("valid metric"),
            fee_bumps: IntCounter::new(
                "ecoledger_chain_fee_bumps_total",
                "Stuck transactions re-signed with higher fees",
            )
            .expect("valid metric"),
            errors: IntCounter::new(
                "ecoledger_chain_sender_errors_total",
                "Sender rounds that failed and were retried",
            )
            .expect("valid metric"),
            open_transactions: gauge("ecoledger_chain_open_transactions", "Transactions sent and not yet final"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.halted.clone()))?;
        registry.register(Box::new(self.balance_wei.clone()))?;
        registry.register(Box::new(self.balance_low.clone()))?;
        registry.register(Box::new(self.sent.clone()))?;
        registry.register(Box::new(self.fee_bumps.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.open_transactions.clone()))?;
        Ok(())
    }
}

impl Default for SenderMetrics {
    fn default() -> Self {
        SenderMetrics::new()
    }
}

/// What a round can fail with; every one is retried.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event store: {0}")]
    Store(#[from] event_store::StoreError),
    #[error("chain RPC: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
    #[error("contract call: {0}")]
    Contract(#[from] alloy::contract::Error),
    #[error("signing: {0}")]
    Signing(#[from] alloy::signers::Error),
    #[error("the node answered without {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// The sender's nonce disagrees with the node in a way it cannot explain: it sends nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt(pub String);

/// The sender of one hot key.
pub struct Sender {
    store: Store,
    chain: SenderChain,
    config: SenderConfig,
    metrics: SenderMetrics,
    started: Instant,
    /// Whether the balance was low at the last look (warn once per drop).
    balance_was_low: bool,
    /// A nonce of this key was taken by a transaction the ledger did not send.
    foreign_nonce_seen: bool,
}

impl Sender {
    pub fn new(store: Store, chain: SenderChain, config: SenderConfig, metrics: SenderMetrics) -> Sender {
        Sender {
            store,
            chain,
            config,
            metrics,
            started: Instant::now(),
            balance_was_low: false,
            foreign_nonce_seen: false,
        }
    }

    pub fn signer(&self) -> Address {
        self.chain.signer.address()
    }

    /// Whether a final transaction not sent by the ledger took one of this key's nonces since
    /// the last nonce check ([`Sender::run`] checks again, and halts if the key is in use).
    pub fn foreign_nonce_seen(&self) -> bool {
        self.foreign_nonce_seen
    }

    /// Runs until the task is aborted: takes the signer's lock (waiting as a standby while
    /// another process holds it), checks the nonce, then works in rounds. Aborting is safe at
    /// any point: everything is stored before it is broadcast.
    pub async fn run(mut self) {
        loop {
            let mut lock = self.lock().await;
            self.wait_for_consistent_nonce().await;
            self.work(&mut lock).await;
        }
    }

    /// Checks the nonce until it agrees with the node; while it does not, the sender is
    /// halted (metric, error log) and sends nothing.
    async fn wait_for_consistent_nonce(&mut self) {
        loop {
            match self.check_nonce().await {
                Ok(Ok(())) => break,
                Ok(Err(Halt(reason))) => {
                    self.metrics.halted.set(1);
                    tracing::error!(alert = "chain_sender_halted", signer = %self.signer(), %reason,
                        "the chain sender halted: it sends nothing until its nonce agrees with the node");
                    tokio::time::sleep(HALT_RECHECK).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "chain sender: failed to check the nonce; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.metrics.halted.set(0);
        tracing::info!(signer = %self.signer(), "chain sender running");
    }

    /// Rounds until a final transaction not sent by the ledger is seen on the key's nonces
    /// (someone else uses the key): then the nonce is checked again, which halts.
    /// Also returns when the connection holding the key's lock is gone (Postgres restarted):
    /// the lock went with it, and a standby may hold it now.
    async fn work(&mut self, lock: &mut sqlx::PgConnection) {
        let mut backoff = self.config.poll_interval;
        while !self.foreign_nonce_seen {
            if let Err(error) = sqlx::query("SELECT 1").execute(&mut *lock).await {
                tracing::warn!(%error, "chain sender: lost the connection holding the key's lock; taking it again");
                return;
            }
            let round = tokio::time::timeout(ROUND_MAX, self.round()).await;
            match round.unwrap_or_else(|_| Err(SenderError::Missing("an answer within the round's time limit"))) {
                Ok(()) => backoff = self.config.poll_interval,
                Err(error) => {
                    self.metrics.errors.inc();
                    tracing::warn!(%error, retry_in = ?backoff, "chain sender round failed; retrying");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// The signer's advisory lock, on a connection of its own held for the sender's life.
    async fn lock(&self) -> sqlx::PgConnection {
        let object = i32::from_be_bytes(self.signer().0 .0[..4].try_into().expect("4 bytes"));
        let mut announced = false;
        loop {
            let attempt = async {
                let mut conn = self.store.pool().acquire().await?.detach();
                let locked = event_store::try_advisory_lock(&mut conn, SENDER_LOCK_CLASS, object)
                    .await
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                Ok::<_, sqlx::Error>(locked.then_some(conn))
            };
            match attempt.await {
                Ok(Some(conn)) => return conn,
                Ok(None) if !announced => {
                    announced = true;
                    tracing::info!(signer = %self.signer(), "another chain sender holds this key: standing by");
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "chain sender: failed to try the signer's lock"),
            }
            tokio::time::sleep(STANDBY_RETRY).await;
        }
    }

    /// Compares the next nonce stored here with the node's counts. A node count above it
    /// means someone else used the key; a mined count below a nonce recorded final means the
    /// chain lost transactions. Either halts. A first use starts at the node's count.
    pub async fn check_nonce(&mut self) -> Result<Result<(), Halt>, SenderError> {
        let checked = self.compare_nonce().await;
        if matches!(checked, Ok(Ok(()))) {
            self.foreign_nonce_seen = false;
        }
        checked
    }

    async fn compare_nonce(&self) -> Result<Result<(), Halt>, SenderError> {
        let signer = self.signer();
        let provider = &self.chain.provider;
        let latest = provider.get_transaction_count(signer).block_id(BlockNumberOrTag::Latest.into()).await?;
        let pending = provider.get_transaction_count(signer).pending().await?;
        let pool = self.store.pool();
        let Some(next) = store::next_nonce(pool, signer).await? else {
            if pending != latest {
                return Ok(Err(Halt(format!(
                    "first use of the key, but the node holds {} pending transaction(s) of it that the ledger did not send",
                    pending - latest
                ))));
            }
            store::init_signer(pool, signer, latest).await?;
            return Ok(Ok(()));
        };
        if latest > next || pending > next {
            return Ok(Err(Halt(format!(
                "the node counts {latest} mined and {pending} pending transactions of the key, \
                 above the {next} the ledger sent: someone else is using the key"
            ))));
        }
        if let Some(highest) = store::highest_final_nonce(pool, signer).await? {
            if latest <= highest {
                return Ok(Err(Halt(format!(
                    "nonce {highest} is recorded final but the node counts only {latest} mined: \
                     not the chain the ledger sent to, or a reorg deeper than finality"
                ))));
            }
        }
        Ok(Ok(()))
    }

    /// One round: track what was sent, settle cancellations, send new work.
    pub async fn round(&mut self) -> Result<(), SenderError> {
        self.track().await?;
        if self.foreign_nonce_seen {
            return Ok(());
        }
        self.settle_cancellations().await?;
        self.send_pause().await?;
        let paused = self.token_paused().await?;
        if !paused {
            self.send_withdrawals().await?;
            self.send_retirements().await?;
        }
        self.send_anchor().await?;
        self.check_balance().await?;
        Ok(())
    }

    /// The highest block counted final.
    pub async fn final_block(&self) -> Result<u64, SenderError> {
        match self.chain.confirmations {
            Some(confirmations) => {
                let head = self.chain.provider.get_block_number().await?;
                Ok((head + 1).saturating_sub(confirmations.max(1)))
            }
            None => {
                let block = self
                    .chain
                    .provider
                    .get_block_by_number(BlockNumberOrTag::Finalized)
                    .await?
                    .ok_or(SenderError::Missing("a finalized block"))?;
                Ok(block.header.number)
            }
        }
    }

    /// Tracks every transaction not yet final: receipts, rebroadcasts, fee bumps, finality.
    async fn track(&mut self) -> Result<(), SenderError> {
        let open = store::open_transactions(self.store.pool(), OPEN_TRANSACTIONS_MAX).await?;
        self.metrics.open_transactions.set(open.len() as i64);
        if open.is_empty() {
            return Ok(());
        }
        let final_block = self.final_block().await?;
        for tx in open {
            match tx.mined {
                Some(mined) if mined.block_number <= final_block => self.finalize(&tx, mined, final_block).await?,
                Some(_) => {}
                None => self.track_pending(&tx, final_block).await?,
            }
        }
        Ok(())
    }

    async fn track_pending(&mut self, tx: &OpenTx, final_block: u64) -> Result<(), SenderError> {
        for hash in &tx.hashes {
            let Some(receipt) = self.chain.provider.get_transaction_receipt(*hash).await? else { continue };
            let (Some(block_number), Some(block_hash)) = (receipt.block_number, receipt.block_hash) else { continue };
            let mined = Mined { tx_hash: *hash, block_number, block_hash, succeeded: receipt.status() };
            tracing::info!(kind = tx.kind.as_str(), subject = %tx.subject, nonce = tx.nonce, tx_hash = %hash,
                block_number, succeeded = mined.succeeded, "chain transaction mined");
            store::set_mined(self.store.pool(), tx, &mined).await?;
            return Ok(());
        }
        // None of its hashes is mined. If the signer's final nonce count is past it, another
        // transaction took the nonce: the work goes back to the queue.
        let final_count = self
            .chain
            .provider
            .get_transaction_count(tx.signer)
            .block_id(BlockNumberOrTag::Number(final_block).into())
            .await?;
        if final_count > tx.nonce {
            tracing::error!(alert = "chain_nonce_taken", signer = %tx.signer, nonce = tx.nonce, subject = %tx.subject,
                "a final transaction not sent by the ledger took this nonce; the work is queued again");
            store::finish_and_requeue(self.store.pool(), tx).await?;
            self.foreign_nonce_seen |= tx.signer == self.signer();
            return Ok(());
        }
        let own = tx.signer == self.signer();
        if own && tx.signed_secs_ago >= self.config.bump_after.as_secs_f64() {
            if let Some(()) = self.bump(tx).await? {
                return Ok(());
            }
        }
        let due = tx.broadcast_secs_ago.is_none_or(|ago| ago >= self.config.rebroadcast_after.as_secs_f64());
        if due {
            let hash = *tx.hashes.first().expect("a stored transaction has an attempt");
            self.broadcast(&tx.latest_raw, hash).await?;
        }
        Ok(())
    }

    /// Re-signs `tx` with the same nonce and calldata and higher fees (within the cap), stores
    /// the new attempt, then broadcasts it. `None` when the fees are at the cap already.
    async fn bump(&mut self, tx: &OpenTx) -> Result<Option<()>, SenderError> {
        let (current_max, current_tip) = self.fees().await?;
        let bumped = |old: u128| old * FEE_BUMP_NUMERATOR / FEE_BUMP_DENOMINATOR + 1;
        let tip = bumped(tx.latest_priority_fee).max(current_tip);
        let max_fee = bumped(tx.latest_max_fee).max(current_max).min(self.config.max_fee_per_gas);
        if max_fee <= tx.latest_max_fee {
            tracing::warn!(
                alert = "chain_fee_cap_reached",
                nonce = tx.nonce,
                max_fee,
                "a stuck transaction is at the fee cap; it stays pending and is rebroadcast"
            );
            return Ok(None);
        }
        let tip = tip.min(max_fee);
        let unsigned = self.unsigned(tx.nonce, tx.to, Bytes::from(tx.calldata.clone()), tx.gas_limit, max_fee, tip);
        let (hash, raw) = self.sign(unsigned)?;
        let attempt = Attempt {
            signer: tx.signer,
            nonce: tx.nonce,
            attempt: tx.latest_attempt + 1,
            tx_hash: hash,
            raw: &raw,
            max_fee,
            priority_fee: tip,
        };
        store::insert_bump(self.store.pool(), tx, &attempt).await?;
        self.metrics.fee_bumps.inc();
        tracing::info!(nonce = tx.nonce, attempt = attempt.attempt, tx_hash = %hash, max_fee, tip,
            "re-signed a stuck transaction with higher fees");
        self.broadcast(&raw, hash).await?;
        Ok(Some(()))
    }

    /// The fees to sign with now: twice the latest base fee plus the node's suggested tip,
    /// capped at the configured maximum (the transaction then waits for cheaper blocks).
    async fn fees(&self) -> Result<(u128, u128), SenderError> {
        let block = self
            .chain
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await?
            .ok_or(SenderError::Missing("a latest block"))?;
        let base = u128::from(block.header.base_fee_per_gas.unwrap_or(0));
        let tip = self.chain.provider.get_max_priority_fee_per_gas().await?;
        let max_fee = (base * 2 + tip).min(self.config.max_fee_per_gas);
        Ok((max_fee, tip.min(max_fee)))
    }

    fn unsigned(&self, nonce: u64, to: Address, input: Bytes, gas_limit: u64, max_fee: u128, tip: u128) -> TxEip1559 {
        TxEip1559 {
            chain_id: self.chain.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(to),
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        }
    }

    fn sign(&self, mut unsigned: TxEip1559) -> Result<(B256, Vec<u8>), SenderError> {
        let signature = self.chain.signer.sign_transaction_sync(&mut unsigned)?;
        let signed = unsigned.into_signed(signature);
        let hash = *signed.hash();
        Ok((hash, TxEnvelope::from(signed).encoded_2718()))
    }

    /// Broadcasts a stored transaction. No answer of the node fails anything: the
    /// transaction is stored and is rebroadcast or bumped until one of its hashes is mined.
    async fn broadcast(&self, raw: &[u8], hash: B256) -> Result<(), SenderError> {
        if !self.config.broadcast {
            return Ok(());
        }
        match self.chain.provider.send_raw_transaction(raw).await {
            Ok(_) => {}
            Err(error) => {
                let text = error.to_string().to_lowercase();
                let benign = ["already known", "nonce too low", "already imported", "underpriced"];
                if benign.iter().any(|b| text.contains(b)) {
                    tracing::debug!(tx_hash = %hash, %error, "broadcast: the node has it or its nonce already");
                } else if error.is_transport_error() {
                    return Err(error.into());
                } else {
                    tracing::warn!(tx_hash = %hash, %error, "the node refused a stored transaction; it is retried");
                }
            }
        }
        store::mark_broadcast(self.store.pool(), hash).await?;
        Ok(())
    }

    /// A gas limit for a call: the estimate with headroom, or a fixed fallback when the
    /// estimate fails (it never fails the work).
    async fn gas_limit(&self, to: Address, input: &Bytes) -> u64 {
        let request = TransactionRequest::default().with_from(self.signer()).with_to(to).with_input(input.clone());
        match self.chain.provider.estimate_gas(request).await {
            Ok(gas) => gas + gas * GAS_ESTIMATE_MARGIN_PERCENT / 100,
            Err(error) => {
                tracing::debug!(%error, "gas estimate failed; sending with the fallback limit");
                GAS_LIMIT_FALLBACK
            }
        }
    }

    /// Allocates a nonce, signs a call, stores it with its attempt and applies `update` to
    /// the work's queue row in the same Postgres transaction, then broadcasts. When the queue
    /// row is no longer waiting for this, everything rolls back, the nonce included.
    async fn send(
        &mut self,
        kind: Kind,
        subject: &str,
        to: Address,
        input: Bytes,
        update: QueueUpdate,
    ) -> Result<Option<B256>, SenderError> {
        let gas_limit = self.gas_limit(to, &input).await;
        let (max_fee, tip) = self.fees().await?;
        let signer = self.signer();
        let mut db = self.store.pool().begin().await?;
        let nonce = store::take_nonce(&mut db, signer).await?;
        let (hash, raw) = self.sign(self.unsigned(nonce, to, input.clone(), gas_limit, max_fee, tip))?;
        let new = NewTx { signer, nonce, kind, subject, to, calldata: &input, gas_limit };
        store::insert_transaction(&mut db, &new).await?;
        let attempt = Attempt { signer, nonce, attempt: 0, tx_hash: hash, raw: &raw, max_fee, priority_fee: tip };
        store::insert_attempt(&mut db, &attempt).await?;
        if !store::apply_queue_update(&mut db, &update, signer, nonce, hash).await? {
            db.rollback().await?;
            return Ok(None);
        }
        db.commit().await?;
        self.metrics.sent.with_label_values(&[kind.as_str()]).inc();
        tracing::info!(kind = kind.as_str(), %subject, nonce, tx_hash = %hash, max_fee, tip, "chain transaction stored");
        self.broadcast(&raw, hash).await?;
        Ok(Some(hash))
    }

    /// Reports the signer's ETH: a gauge, and a warning with a stable `alert` field when it
    /// falls below the threshold.
    async fn check_balance(&mut self) -> Result<(), SenderError> {
        let balance = self.chain.provider.get_balance(self.signer()).await?;
        let wei: u128 = balance.try_into().unwrap_or(u128::MAX);
        self.metrics.balance_wei.set(wei as f64);
        let low = wei < self.config.low_balance_wei;
        self.metrics.balance_low.set(i64::from(low));
        if low && !self.balance_was_low {
            tracing::warn!(alert = "chain_signer_balance_low", signer = %self.signer(), balance_wei = %balance,
                threshold_wei = self.config.low_balance_wei, "the bridge's hot key is running out of ETH");
        }
        self.balance_was_low = low;
        Ok(())
    }
}
