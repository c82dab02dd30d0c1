//! Reconciliation of the token's supply with the ledger's `chain` account (issue 6, flow 6).
//!
//! At a block B and a ledger position P:
//! - B is the confirmed block by the watcher's own rule ([`confirmed_block`]): `head -
//!   confirmations + 1`, or the node's `finalized` block. Nothing at or below B is expected to
//!   change, so the report does not change either for the same (B, P).
//! - P is a complete prefix of the ledger: every event at or below it is committed and none can
//!   appear below it later. The API takes the relay's published watermark. P need not be "in
//!   step" with B: whatever the watcher has or has not recorded, and whatever the sender has or
//!   has not minted, shows as a term, computed exactly from the two sides.
//!
//! `chain_account` (credits − debits of `system:chain` up to P) should equal
//! `totalSupply(B)` up to timing, and each timing difference is a term (signed as it is
//! added to `chain_account`):
//! - `mints_pending` (−): withdrawals requested at or below P (not returned) without a `Minted`
//!   log at or below B;
//! - `mints_ahead_of_ledger` (+): `Minted` at or below B for a withdrawal requested after P;
//! - `burns_not_posted` (−): `BridgedIn`/`Retired` at or below B not posted at P;
//! - `burns_posted_ahead` (+): posted at or below P for a log the watcher read in a block
//!   after B.
//!
//! `difference = total_supply − (chain_account + Σ terms)`. Anything the terms do not explain
//! (a mint with no ledger withdrawal, a posted burn with no log on chain) is listed under
//! `unmatched` and shows in the difference: never absorbed. A non-zero difference is an alert
//! ([`ALERT_DIFFERENCE`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use alloy::eips::BlockId;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use domain::accounts::SystemAccount;
use domain::chain::{chain_log_id, ChainMovement, ChainMovementEvent};
use domain::wallet::{Wallet, WalletEvent};
use domain::Currency;
use event_store::store::decode_event;
use event_store::{RecordedEvent, StoreError};
use rust_decimal::Decimal;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::contracts::{ref_uuid, CarbonToken};
use crate::watcher::{confirmed_block, rpc, token_units_to_carbon, TxOrdinals, WatcherError, BLOCKS_PER_RANGE_MAX};

/// The `alert` field of the log line a non-zero difference writes.
pub const ALERT_DIFFERENCE: &str = "chain_reconciliation_difference";
/// Unmatched items listed at most (the difference counts them all).
pub const UNMATCHED_LISTED_MAX: usize = 100;

/// Where the reconciliation reads the chain.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub chain_id: u64,
    pub token: Address,
    pub first_block: u64,
    pub confirmations: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub block: u64,
    pub block_hash: B256,
    pub position: i64,
    pub total_supply: Decimal,
    pub chain_account: Decimal,
    pub terms: Vec<Term>,
    pub unmatched: Vec<Unmatched>,
    pub difference: Decimal,
}

/// A timing difference between the chain at B and the ledger at P.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub kind: &'static str,
    pub description: &'static str,
    /// Signed as it is added to `chain_account`.
    pub amount: Decimal,
    pub count: u64,
}

/// Something on one side that the other side does not explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// `mint_without_withdrawal`, `mint_of_returned_withdrawal`, `posting_without_log`.
    pub kind: &'static str,
    /// The on-chain ref, or the ledger's log id.
    pub reference: String,
    pub tx_hash: Option<String>,
    /// Signed as it adds to the difference: the unmatched items (all of them, when no more
    /// than [`UNMATCHED_LISTED_MAX`]) sum to it.
    pub amount: Decimal,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the chain has no confirmed block yet")]
    NoConfirmedBlock,
    #[error(transparent)]
    Chain(#[from] WatcherError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The chain's side up to B.
#[derive(Default)]
struct ChainSide {
    /// Minted amount by ref, with the transaction.
    minted: BTreeMap<B256, (Decimal, B256)>,
    /// Burned amount by the ledger's log id.
    burned: BTreeMap<Uuid, Decimal>,
}

/// The ledger's side up to P.
#[derive(Default)]
struct LedgerSide {
    chain_account: Decimal,
    /// Withdrawals requested, not returned: amount by id.
    open_withdrawals: BTreeMap<Uuid, Decimal>,
    returned: HashSet<Uuid>,
    /// Burns posted against `chain`: amount by log id.
    burns_posted: BTreeMap<Uuid, Decimal>,
}

/// Reconciles at the confirmed block and position `position` (a complete prefix).
pub async fn reconcile(
    pool: &PgPool,
    provider: &DynProvider,
    config: &ReconcileConfig,
    position: i64,
) -> Result<Reconciliation, ReconcileError> {
    let (block, block_hash) =
        confirmed_block(provider, config.confirmations).await?.ok_or(ReconcileError::NoConfirmedBlock)?;
    let supply = CarbonToken::new(config.token, provider)
        .totalSupply()
        .block(BlockId::number(block))
        .call()
        .await
        .map_err(rpc)?;
    let total_supply = token_units_to_carbon(supply).ok_or_else(|| rpc("totalSupply beyond a Decimal"))?;
    let chain = read_chain(provider, config, block).await?;
    let ledger = read_ledger(pool, position).await?;
    let requested_later = withdrawals_after(pool, position).await?;
    let posted_after_block = logs_seen_after(pool, block).await?;
    let (terms, unmatched) = compare(&chain, &ledger, &requested_later, &posted_after_block);
    let explained = ledger.chain_account + terms.iter().map(|t| t.amount).sum::<Decimal>();
    let difference = total_supply - explained;
    let report = Reconciliation {
        block,
        block_hash,
        position,
        total_supply,
        chain_account: ledger.chain_account,
        terms,
        unmatched,
        difference,
    };
    if !difference.is_zero() {
        tracing::error!(alert = ALERT_DIFFERENCE, block, position, %difference, unmatched = report.unmatched.len(),
            "CHAIN RECONCILIATION DIFFERS: the token supply and the ledger's chain account disagree");
    }
    Ok(report)
}

/// Every `Minted`, `BridgedIn` and `Retired` log from the first block to `block`.
async fn read_chain(provider: &DynProvider, config: &ReconcileConfig, block: u64) -> Result<ChainSide, WatcherError> {
    let mut side = ChainSide::default();
    let mut ordinals = TxOrdinals::default();
    let mut from = config.first_block;
    while from <= block {
        let to = block.min(from + BLOCKS_PER_RANGE_MAX - 1);
        let filter = Filter::new().address(config.token).from_block(from).to_block(to).event_signature(vec![
            CarbonToken::Minted::SIGNATURE_HASH,
            CarbonToken::BridgedIn::SIGNATURE_HASH,
            CarbonToken::Retired::SIGNATURE_HASH,
        ]);
        for log in provider.get_logs(&filter).await.map_err(rpc)?.into_iter().filter(|log| !log.removed) {
            let tx_hash = log.transaction_hash.ok_or_else(|| rpc("a log without its transaction hash"))?;
            let topic = *log.topic0().ok_or_else(|| rpc("a log without topics"))?;
            if topic == CarbonToken::Minted::SIGNATURE_HASH {
                let minted = log.log_decode::<CarbonToken::Minted>().map_err(rpc)?.inner.data;
                let amount = token_units_to_carbon(minted.amount).ok_or_else(|| rpc("a mint beyond a Decimal"))?;
                side.minted.insert(minted.r#ref, (amount, tx_hash));
                continue;
            }
            let amount = if topic == CarbonToken::BridgedIn::SIGNATURE_HASH {
                log.log_decode::<CarbonToken::BridgedIn>().map_err(rpc)?.inner.data.amount
            } else {
                log.log_decode::<CarbonToken::Retired>().map_err(rpc)?.inner.data.amount
            };
            let amount = token_units_to_carbon(amount).ok_or_else(|| rpc("a burn beyond a Decimal"))?;
            let log_index = log.log_index.ok_or_else(|| rpc("a log without its index"))?;
            let ordinal = ordinals.ordinal(provider, tx_hash, log_index).await?;
            side.burned.insert(chain_log_id(config.chain_id, &tx_hash.to_string(), ordinal), amount);
        }
        from = to + 1;
    }
    Ok(side)
}

/// The aggregate types (`Aggregate::TYPE`) whose events move `system:chain`.
const WALLET_TYPE: &str = "Wallet";
const CHAIN_MOVEMENT_TYPE: &str = "ChainMovement";

/// Event types that move `system:chain`.
const CHAIN_EVENT_TYPES: &[&str] =
    &["ChainWithdrawalRequested", "ChainWithdrawalReturned", "ChainDeposited", "BridgeInSuspended", "RetiredOnChain"];

/// The `chain` account and its open items, from the events up to `position`.
async fn read_ledger(pool: &PgPool, position: i64) -> Result<LedgerSide, ReconcileError> {
    let mut side = LedgerSide::default();
    for recorded in chain_events(pool, "position <= $1", position).await? {
        match recorded.aggregate_type.as_str() {
            WALLET_TYPE => match decode_event::<Wallet>(&recorded)? {
                WalletEvent::ChainWithdrawalRequested { withdrawal_id, amount, counter_account, .. } => {
                    debug_assert_eq!(counter_account, SystemAccount::Chain);
                    side.chain_account += amount.value();
                    side.open_withdrawals.insert(withdrawal_id, amount.value());
                }
                WalletEvent::ChainWithdrawalReturned { withdrawal_id, amount, .. } => {
                    side.chain_account -= amount.value();
                    side.open_withdrawals.remove(&withdrawal_id);
                    side.returned.insert(withdrawal_id);
                }
                WalletEvent::ChainDeposited { deposit_id, amount, counter_account: SystemAccount::Chain, .. } => {
                    side.chain_account -= amount.value();
                    side.burns_posted.insert(deposit_id, amount.value());
                }
                _ => {}
            },
            CHAIN_MOVEMENT_TYPE => match decode_event::<ChainMovement>(&recorded)? {
                ChainMovementEvent::BridgeInSuspended { amount, .. }
                | ChainMovementEvent::RetiredOnChain { amount, .. } => {
                    let log_id: Uuid = recorded.aggregate_id.parse().map_err(StoreError::corrupt)?;
                    side.chain_account -= amount.value();
                    side.burns_posted.insert(log_id, amount.value());
                }
                ChainMovementEvent::SuspenseResolved { .. } => {}
            },
            _ => {}
        }
    }
    Ok(side)
}

/// The events of [`CHAIN_EVENT_TYPES`] matching `condition` on `position` (`$1`).
async fn chain_events(
    pool: &PgPool,
    condition: &'static str,
    position: i64,
) -> Result<Vec<RecordedEvent>, ReconcileError> {
    let sql = match condition {
        "position <= $1" => {
            "SELECT canonical FROM events WHERE position <= $1 AND event_type = ANY($2) ORDER BY position"
        }
        _ => "SELECT canonical FROM events WHERE position > $1 AND event_type = ANY($2) ORDER BY position",
    };
    let types: Vec<String> = CHAIN_EVENT_TYPES.iter().map(|t| t.to_string()).collect();
    let rows = sqlx::query(sql).bind(position).bind(types).fetch_all(pool).await?;
    rows.iter()
        .map(|row| RecordedEvent::from_canonical(row.get(0)).map_err(|e| StoreError::corrupt(e).into()))
        .collect()
}

/// Withdrawals requested after `position` (their mints may be on chain already).
async fn withdrawals_after(pool: &PgPool, position: i64) -> Result<HashSet<Uuid>, ReconcileError> {
    let mut ids = HashSet::new();
    for recorded in chain_events(pool, "position > $1", position).await? {
        if recorded.aggregate_type != WALLET_TYPE {
            continue;
        }
        if let WalletEvent::ChainWithdrawalRequested { withdrawal_id, .. } = decode_event::<Wallet>(&recorded)? {
            ids.insert(withdrawal_id);
        }
    }
    Ok(ids)
}

/// Logs the watcher recorded from blocks after `block`.
async fn logs_seen_after(pool: &PgPool, block: u64) -> Result<HashSet<Uuid>, ReconcileError> {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT log_id FROM chain_watcher_logs WHERE block_number > $1")
        .bind(block as i64)
        .fetch_all(pool)
        .await?;
    Ok(ids.into_iter().collect())
}

/// The terms that explain the two sides' differences, and what nothing explains.
fn compare(
    chain: &ChainSide,
    ledger: &LedgerSide,
    requested_later: &HashSet<Uuid>,
    seen_after_block: &HashSet<Uuid>,
) -> (Vec<Term>, Vec<Unmatched>) {
    let mut terms = Terms::default();
    let mut unmatched = Vec::new();
    let minted_ids: HashMap<Uuid, Decimal> =
        chain.minted.iter().filter_map(|(r, (amount, _))| ref_uuid(*r).map(|id| (id, *amount))).collect();
    for (id, amount) in &ledger.open_withdrawals {
        if !minted_ids.contains_key(id) {
            terms.add(0, -*amount);
        }
    }
    for (reference, (amount, tx_hash)) in &chain.minted {
        let id = ref_uuid(*reference);
        let kind = match id {
            Some(id) if ledger.open_withdrawals.contains_key(&id) => continue,
            Some(id) if ledger.returned.contains(&id) => "mint_of_returned_withdrawal",
            Some(id) if requested_later.contains(&id) => {
                terms.add(1, *amount);
                continue;
            }
            _ => "mint_without_withdrawal",
        };
        let tx_hash = Some(tx_hash.to_string());
        unmatched.push(Unmatched { kind, reference: reference.to_string(), tx_hash, amount: *amount });
    }
    for (log_id, amount) in &chain.burned {
        if !ledger.burns_posted.contains_key(log_id) {
            terms.add(2, -*amount);
        }
    }
    for (log_id, amount) in &ledger.burns_posted {
        if chain.burned.contains_key(log_id) {
            continue;
        }
        match seen_after_block.contains(log_id) {
            true => terms.add(3, *amount),
            false => unmatched.push(Unmatched {
                kind: "posting_without_log",
                reference: log_id.to_string(),
                tx_hash: None,
                amount: *amount,
            }),
        }
    }
    unmatched.truncate(UNMATCHED_LISTED_MAX);
    (terms.into_terms(), unmatched)
}

/// The four terms, always all shown (zero when nothing is in flight).
struct Terms([Term; 4]);

impl Default for Terms {
    fn default() -> Self {
        let term = |kind, description| Term { kind, description, amount: Decimal::ZERO, count: 0 };
        Terms([
            term(
                "mints_pending",
                "withdrawals debited in the ledger at the position, not yet minted on chain at the block",
            ),
            term(
                "mints_ahead_of_ledger",
                "minted on chain at the block for withdrawals the ledger requested after the position",
            ),
            term(
                "burns_not_posted",
                "bridged in or retired on chain at the block, not yet posted in the ledger at the position",
            ),
            term("burns_posted_ahead", "posted in the ledger at the position for logs in blocks after the block"),
        ])
    }
}

impl Terms {
    fn add(&mut self, index: usize, amount: Decimal) {
        self.0[index].amount += amount;
        self.0[index].count += 1;
    }

    fn into_terms(self) -> Vec<Term> {
        let mut terms = self.0.to_vec();
        for term in &mut terms {
            term.amount.rescale(Currency::Carbon.scale());
        }
        terms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// One case per line: the chain's mints and burns, the ledger's open withdrawals and
    /// posted burns, then the explained total and the number of unmatched items.
    #[test]
    fn each_timing_difference_is_a_term_and_anything_else_is_unmatched() {
        type Case = (
            Vec<(u128, &'static str)>,
            Vec<(u128, &'static str)>,
            Vec<(u128, &'static str)>,
            Vec<(u128, &'static str)>,
            &'static str,
            usize,
        );
        let cases: Vec<Case> = vec![
            // all in step: nothing in flight
            (vec![(1, "5")], vec![(9, "2")], vec![(1, "5")], vec![(9, "2")], "0", 0),
            // a withdrawal debited, its mint not yet at B
            (vec![], vec![], vec![(1, "5")], vec![], "-5", 0),
            // a bridge-in burned at B, not yet posted
            (vec![], vec![(9, "2")], vec![], vec![], "-2", 0),
            // a mint with no withdrawal at all
            (vec![(7, "3")], vec![], vec![], vec![], "0", 1),
            // a posted burn with no log on chain and none seen after B
            (vec![], vec![], vec![], vec![(9, "2")], "0", 1),
        ];
        for (minted, burned, open, posted, explained, unmatched_count) in cases {
            let chain = ChainSide {
                minted: minted
                    .iter()
                    .map(|(n, a)| (crate::contracts::uuid_ref(id(*n)), (dec(a), B256::ZERO)))
                    .collect(),
                burned: burned.iter().map(|(n, a)| (id(*n), dec(a))).collect(),
            };
            let ledger = LedgerSide {
                chain_account: Decimal::ZERO,
                open_withdrawals: open.iter().map(|(n, a)| (id(*n), dec(a))).collect(),
                returned: HashSet::new(),
                burns_posted: posted.iter().map(|(n, a)| (id(*n), dec(a))).collect(),
            };
            let (terms, unmatched) = compare(&chain, &ledger, &HashSet::new(), &HashSet::new());
            let sum: Decimal = terms.iter().map(|t| t.amount).sum();
            assert_eq!((sum, unmatched.len()), (dec(explained), unmatched_count));
        }
    }

    #[test]
    fn a_mint_for_a_later_withdrawal_and_a_burn_posted_after_the_block_are_terms() {
        let chain = ChainSide {
            minted: [(crate::contracts::uuid_ref(id(1)), (dec("4"), B256::ZERO))].into(),
            burned: BTreeMap::new(),
        };
        let ledger = LedgerSide { burns_posted: [(id(9), dec("2"))].into(), ..LedgerSide::default() };
        let (terms, unmatched) = compare(&chain, &ledger, &[id(1)].into(), &[id(9)].into());
        assert!(unmatched.is_empty());
        assert_eq!(terms[1].amount, dec("4.000"));
        assert_eq!(terms[3].amount, dec("2.000"));
    }
}
