//! `ecoledger verify --chain`: every `Anchored(position, headHash, count)` log of the
//! LedgerAnchor contract checked against the event store's global hash chain, recomputed from
//! the events (issue 6, flow 5). An anchor that does not match means the events up to its
//! position are not the ones anchored: removed, altered or reordered after the fact.

use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use event_store::record::{global_hash, GENESIS_HASH};
use sqlx::{PgPool, Row};

use crate::contracts::LedgerAnchor;
use crate::watcher::{rpc, WatcherError, BLOCKS_PER_RANGE_MAX};

/// Events read per query while recomputing the global chain.
const EVENTS_PER_PAGE_MAX: i64 = 10_000;

/// One anchor as the chain holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub position: u64,
    pub head_hash: B256,
    pub count: u64,
    pub block_number: u64,
    pub tx_hash: B256,
}

/// An anchor and what the event store says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorCheck {
    pub anchor: Anchor,
    /// `None` when the event store's chain passes through the anchor.
    pub problem: Option<String>,
}

/// Every `Anchored` log of the contract at `anchor` from `first_block` to the latest block, in
/// chain order.
pub async fn read_anchors(
    provider: &DynProvider,
    anchor: Address,
    first_block: u64,
) -> Result<Vec<Anchor>, WatcherError> {
    let latest = provider.get_block_number().await.map_err(rpc)?;
    let mut anchors = Vec::new();
    let mut from = first_block;
    while from <= latest {
        let to = latest.min(from + BLOCKS_PER_RANGE_MAX - 1);
        let filter = Filter::new()
            .address(anchor)
            .from_block(from)
            .to_block(to)
            .event_signature(LedgerAnchor::Anchored::SIGNATURE_HASH);
        for log in provider.get_logs(&filter).await.map_err(rpc)?.into_iter().filter(|log| !log.removed) {
            let decoded = log.log_decode::<LedgerAnchor::Anchored>().map_err(rpc)?.inner.data;
            anchors.push(Anchor {
                position: decoded.position,
                head_hash: decoded.headHash,
                count: decoded.count,
                block_number: log.block_number.ok_or_else(|| rpc("a log without its block"))?,
                tx_hash: log.transaction_hash.ok_or_else(|| rpc("a log without its transaction"))?,
            });
        }
        from = to + 1;
    }
    Ok(anchors)
}

/// Folds the global chain over the events in position order and checks each anchor (and the
/// relay's stored checkpoint at its position, if any) where the fold reaches its position.
pub async fn check_anchors(pool: &PgPool, anchors: Vec<Anchor>) -> Result<Vec<AnchorCheck>, sqlx::Error> {
    let mut pending = anchors;
    pending.sort_by_key(|anchor| anchor.position);
    let mut pending = pending.into_iter().peekable();
    let mut checks = Vec::new();
    let (mut head, mut count, mut last_position) = (GENESIS_HASH, 0_u64, 0_i64);
    let mut exhausted = false;
    while pending.peek().is_some() {
        let rows = match exhausted {
            true => Vec::new(),
            false => {
                sqlx::query("SELECT position, hash FROM events WHERE position > $1 ORDER BY position LIMIT $2")
                    .bind(last_position)
                    .bind(EVENTS_PER_PAGE_MAX)
                    .fetch_all(pool)
                    .await?
            }
        };
        exhausted = (rows.len() as i64) < EVENTS_PER_PAGE_MAX;
        let mut rows = rows.into_iter().peekable();
        loop {
            let next = rows.peek().map(|row| row.get::<i64, _>(0));
            // Anchors below the next event (or all, once the events end) are due now.
            let due_before = match next {
                Some(position) => position as u64,
                None if exhausted => u64::MAX,
                None => break,
            };
            while let Some(anchor) = pending.next_if(|anchor| anchor.position < due_before) {
                let problem = compare(&anchor, &head, count, last_position);
                checks.push(AnchorCheck { anchor, problem });
            }
            let Some(row) = rows.next() else { break };
            let hash: Vec<u8> = row.get(1);
            head = global_hash(&head, &hash);
            count += 1;
            last_position = row.get(0);
        }
        if exhausted && pending.peek().is_none() {
            break;
        }
    }
    check_stored_checkpoints(pool, &mut checks).await?;
    Ok(checks)
}

fn compare(anchor: &Anchor, head: &[u8; 32], count: u64, last_position: i64) -> Option<String> {
    if anchor.position != last_position as u64 {
        return Some(format!(
            "no event at the anchored position {} (the chain up to it ends at position {last_position}): events were removed",
            anchor.position
        ));
    }
    if anchor.count != count {
        return Some(format!("anchored {} events up to position {}, found {count}", anchor.count, anchor.position));
    }
    if anchor.head_hash.0 != *head {
        return Some(format!(
            "anchored head hash {} at position {}, recomputed 0x{}: events were altered",
            anchor.head_hash,
            anchor.position,
            to_hex(head)
        ));
    }
    None
}

/// The relay's stored checkpoint at an anchor's position must agree too (the sender anchors
/// checkpoints; a rewritten checkpoint table is worth naming).
async fn check_stored_checkpoints(pool: &PgPool, checks: &mut [AnchorCheck]) -> Result<(), sqlx::Error> {
    for check in checks.iter_mut().filter(|check| check.problem.is_none()) {
        let stored: Option<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT head_hash, count FROM chain_checkpoints WHERE position = $1 LIMIT 1")
                .bind(check.anchor.position as i64)
                .fetch_optional(pool)
                .await?;
        if let Some((hash, count)) = stored {
            if hash != check.anchor.head_hash.as_slice() || count as u64 != check.anchor.count {
                check.problem = Some(format!(
                    "the stored checkpoint at position {} differs from the anchor (the events match the anchor)",
                    check.anchor.position
                ));
            }
        }
    }
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
