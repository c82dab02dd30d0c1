//! Verification of the hash chains: per stream (an altered, removed or reordered row) and the
//! global chain in position order against the relay's checkpoints (a removed tail or stream).

use futures::TryStreamExt;
use sqlx::postgres::PgPool;
use sqlx::Row;

use crate::canonical::to_canonical_string;
use crate::error::StoreError;
use crate::record::{chain_hash, global_hash, RecordedEvent, GENESIS_HASH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub streams: u64,
    pub events: u64,
    pub checkpoints: u64,
    /// The first problem found, naming the event; `None` when every chain holds.
    pub first_problem: Option<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.first_problem.is_none()
    }
}

/// Walks every stream's chain, then the global chain. Stops at the first problem.
pub async fn verify(pool: &PgPool) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport { streams: 0, events: 0, checkpoints: 0, first_problem: None };
    report.first_problem = verify_streams(pool, &mut report).await?;
    if report.first_problem.is_none() {
        report.first_problem = verify_global_chain(pool, &mut report).await?;
    }
    Ok(report)
}

async fn verify_streams(pool: &PgPool, report: &mut VerifyReport) -> Result<Option<String>, StoreError> {
    let mut rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, position, event_type, event_version, \
                canonical, prev_hash, hash \
         FROM events ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .fetch(pool);
    let mut current_stream: Option<(String, String)> = None;
    let mut expected_sequence = 1;
    let mut expected_prev: Vec<u8> = GENESIS_HASH.to_vec();
    while let Some(row) = rows.try_next().await? {
        let stream = (row.get::<String, _>(0), row.get::<String, _>(1));
        if current_stream.as_ref() != Some(&stream) {
            current_stream = Some(stream.clone());
            expected_sequence = 1;
            expected_prev = GENESIS_HASH.to_vec();
            report.streams += 1;
        }
        report.events += 1;
        let sequence: i64 = row.get(2);
        let position: i64 = row.get(3);
        let name = format!("{}/{} sequence {sequence} (position {position})", stream.0, stream.1);
        if sequence != expected_sequence {
            return Ok(Some(format!(
                "{name}: expected sequence {expected_sequence}: an event was removed or reordered"
            )));
        }
        let prev_hash: Vec<u8> = row.get(7);
        if prev_hash != expected_prev {
            return Ok(Some(format!("{name}: prev_hash does not match the previous event's hash")));
        }
        let canonical: String = row.get(6);
        let hash: Vec<u8> = row.get(8);
        if hash != chain_hash(&prev_hash, &canonical) {
            return Ok(Some(format!("{name}: hash does not match the stored bytes: the row was altered")));
        }
        if let Some(problem) = check_columns_match(&row, &canonical) {
            return Ok(Some(format!("{name}: {problem}")));
        }
        expected_sequence += 1;
        expected_prev = hash;
    }
    Ok(None)
}

/// The hashed text must be canonical and agree with the row's columns, or a row was moved.
fn check_columns_match(row: &sqlx::postgres::PgRow, canonical: &str) -> Option<String> {
    let Ok(recorded) = RecordedEvent::from_canonical(canonical) else {
        return Some("stored bytes are not an event envelope".to_string());
    };
    let matches = recorded.aggregate_type == row.get::<String, _>(0)
        && recorded.aggregate_id == row.get::<String, _>(1)
        && recorded.sequence == row.get::<i64, _>(2)
        && recorded.position == row.get::<i64, _>(3)
        && recorded.event_type == row.get::<String, _>(4)
        && recorded.event_version == row.get::<String, _>(5);
    if !matches {
        return Some("columns disagree with the hashed envelope: the row was altered or moved".to_string());
    }
    match serde_json::from_str(canonical).map(|value| to_canonical_string(&value)) {
        Ok(Ok(again)) if again == canonical => None,
        _ => Some("stored bytes are not in canonical form".to_string()),
    }
}

/// A point the global chain must pass through: a stored checkpoint or the relay's head.
struct Checkpoint {
    position: i64,
    head_hash: Vec<u8>,
    count: i64,
}

async fn verify_global_chain(pool: &PgPool, report: &mut VerifyReport) -> Result<Option<String>, StoreError> {
    let mut checkpoints: Vec<Checkpoint> = sqlx::query(
        "SELECT position, head_hash, count FROM chain_checkpoints \
         UNION ALL SELECT published_position, global_hash, global_count FROM relay_state \
         ORDER BY position, count",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| Checkpoint { position: row.get(0), head_hash: row.get(1), count: row.get(2) })
    .collect();
    checkpoints.retain(|checkpoint| checkpoint.count > 0);
    report.checkpoints = checkpoints.len() as u64;
    let mut pending = checkpoints.into_iter().peekable();
    let mut head = GENESIS_HASH.to_vec();
    let mut count = 0_i64;
    let mut last_position = 0_i64;
    let mut rows = sqlx::query("SELECT position, hash FROM events ORDER BY position").fetch(pool);
    loop {
        let row = rows.try_next().await?;
        let next_position = row.as_ref().map(|row| row.get::<i64, _>(0));
        // Every checkpoint below the next event must match the chain folded so far.
        while let Some(checkpoint) = pending.next_if(|c| next_position.is_none_or(|p| c.position < p)) {
            if checkpoint.position != last_position || checkpoint.count != count || checkpoint.head_hash != head {
                return Ok(Some(format!(
                    "global chain differs at checkpoint position {} (count {}, found {count} events up to position {last_position}): events were removed or altered",
                    checkpoint.position, checkpoint.count
                )));
            }
        }
        let Some(row) = row else { return Ok(None) };
        let hash: Vec<u8> = row.get(1);
        head = global_hash(&head, &hash).to_vec();
        count += 1;
        last_position = row.get(0);
    }
}
