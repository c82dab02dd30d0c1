//! The sender's SQL: nonces, stored transactions and their attempts, and the queue rows they
//! move (`chain_withdrawals`, `chain_retirements`, `chain_anchors`). Migration 0014.

use alloy::primitives::{Address, B256};
use sqlx::{PgConnection, PgPool, Row};

/// What a stored transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mint,
    RecordRetirement,
    Anchor,
    Pause,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mint => "mint",
            Kind::RecordRetirement => "record_retirement",
            Kind::Anchor => "anchor",
            Kind::Pause => "pause",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        match text {
            "mint" => Some(Kind::Mint),
            "record_retirement" => Some(Kind::RecordRetirement),
            "anchor" => Some(Kind::Anchor),
            "pause" => Some(Kind::Pause),
            _ => None,
        }
    }
}

/// A stored transaction not yet final, with its latest attempt.
#[derive(Debug, Clone)]
pub struct OpenTx {
    pub signer: Address,
    pub nonce: u64,
    pub kind: Kind,
    pub subject: String,
    pub to: Address,
    pub calldata: Vec<u8>,
    pub gas_limit: u64,
    pub mined: Option<Mined>,
    /// Every attempt's hash, newest first.
    pub hashes: Vec<B256>,
    pub latest_attempt: i32,
    pub latest_raw: Vec<u8>,
    pub latest_max_fee: u128,
    pub latest_priority_fee: u128,
    /// Seconds since the latest attempt was signed, and since it was last broadcast.
    pub signed_secs_ago: f64,
    pub broadcast_secs_ago: Option<f64>,
}

/// Where a transaction was seen mined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mined {
    pub tx_hash: B256,
    pub block_number: u64,
    pub block_hash: B256,
    pub succeeded: bool,
}

/// A signed attempt ready to store.
pub struct Attempt<'a> {
    pub signer: Address,
    pub nonce: u64,
    pub attempt: i32,
    pub tx_hash: B256,
    pub raw: &'a [u8],
    pub max_fee: u128,
    pub priority_fee: u128,
}

pub fn address(bytes: &[u8]) -> Address {
    Address::from_slice(bytes)
}

pub fn hash(bytes: &[u8]) -> B256 {
    B256::from_slice(bytes)
}

/// The next nonce recorded for `signer`, if it ever sent.
pub async fn next_nonce(pool: &PgPool, signer: Address) -> sqlx::Result<Option<u64>> {
    let nonce: Option<i64> = sqlx::query_scalar("SELECT next_nonce FROM chain_signers WHERE signer = $1")
        .bind(signer.as_slice())
        .fetch_optional(pool)
        .await?;
    Ok(nonce.map(|n| n as u64))
}

/// Records a key's first use: its nonces start at `nonce` (what the node counts).
pub async fn init_signer(pool: &PgPool, signer: Address, nonce: u64) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO chain_signers (signer, next_nonce) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(signer.as_slice())
        .bind(nonce as i64)
        .execute(pool)
        .await?;
    Ok(())
}

/// The highest final nonce of `signer`.
pub async fn highest_final_nonce(pool: &PgPool, signer: Address) -> sqlx::Result<Option<u64>> {
    let nonce: Option<i64> =
        sqlx::query_scalar("SELECT max(nonce) FROM chain_transactions WHERE signer = $1 AND state = 'final'")
            .bind(signer.as_slice())
            .fetch_one(pool)
            .await?;
    Ok(nonce.map(|n| n as u64))
}

/// Takes the next nonce of `signer` under a row lock, in `conn`'s transaction.
pub async fn take_nonce(conn: &mut PgConnection, signer: Address) -> sqlx::Result<u64> {
    let nonce: i64 = sqlx::query_scalar(
        "UPDATE chain_signers SET next_nonce = next_nonce + 1, updated_at = now() WHERE signer = $1 \
         RETURNING next_nonce - 1",
    )
    .bind(signer.as_slice())
    .fetch_one(&mut *conn)
    .await?;
    Ok(nonce as u64)
}

/// A transaction to store with its first attempt.
pub struct NewTx<'a> {
    pub signer: Address,
    pub nonce: u64,
    pub kind: Kind,
    pub subject: &'a str,
    pub to: Address,
    pub calldata: &'a [u8],
    pub gas_limit: u64,
}

pub async fn insert_transaction(conn: &mut PgConnection, tx: &NewTx<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO chain_transactions (signer, nonce, kind, subject, to_address, calldata, gas_limit) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tx.signer.as_slice())
    .bind(tx.nonce as i64)
    .bind(tx.kind.as_str())
    .bind(tx.subject)
    .bind(tx.to.as_slice())
    .bind(tx.calldata)
    .bind(tx.gas_limit as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn insert_attempt(conn: &mut PgConnection, attempt: &Attempt<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO chain_transaction_attempts \
         (signer, nonce, attempt, tx_hash, raw, max_fee_per_gas, max_priority_fee_per_gas) \
         VALUES ($1, $2, $3, $4, $5, $6::numeric, $7::numeric)",
    )
    .bind(attempt.signer.as_slice())
    .bind(attempt.nonce as i64)
    .bind(attempt.attempt)
    .bind(attempt.tx_hash.as_slice())
    .bind(attempt.raw)
    .bind(attempt.max_fee.to_string())
    .bind(attempt.priority_fee.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores a fee bump's attempt and points its work's queue row at the new hash, in one
/// transaction.
pub async fn insert_bump(pool: &PgPool, tx: &OpenTx, attempt: &Attempt<'_>) -> sqlx::Result<()> {
    let mut db = pool.begin().await?;
    insert_attempt(&mut db, attempt).await?;
    let table = match tx.kind {
        Kind::Mint => "chain_withdrawals",
        Kind::RecordRetirement => "chain_retirements",
        Kind::Anchor => "chain_anchors",
        Kind::Pause => return db.commit().await,
    };
    let sql = format!(
        "UPDATE {table} SET tx_hash = $1, updated_at = now() WHERE signer = $2 AND nonce = $3 AND state = 'submitted'"
    );
    sqlx::query(&sql)
        .bind(attempt.tx_hash.as_slice())
        .bind(tx.signer.as_slice())
        .bind(tx.nonce as i64)
        .execute(&mut *db)
        .await?;
    db.commit().await
}

pub async fn mark_broadcast(pool: &PgPool, tx_hash: B256) -> sqlx::Result<()> {
    sqlx::query("UPDATE chain_transaction_attempts SET broadcast_at = now() WHERE tx_hash = $1")
        .bind(tx_hash.as_slice())
        .execute(pool)
        .await?;
    Ok(())
}

/// Transactions not yet final, of every signer (a rotated-out key's transactions are still
/// tracked and rebroadcast from what was stored), lowest nonces first.
pub async fn open_transactions(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<OpenTx>> {
    let rows = sqlx::query(
        "SELECT t.signer, t.nonce, t.kind, t.subject, t.to_address, t.calldata, t.gas_limit, t.state, t.tx_hash, \
                t.block_number, t.block_hash, t.succeeded, \
                (SELECT array_agg(a.tx_hash ORDER BY a.attempt DESC) FROM chain_transaction_attempts a \
                  WHERE a.signer = t.signer AND a.nonce = t.nonce) AS hashes, \
                l.attempt, l.raw, l.max_fee_per_gas::text AS max_fee, l.max_priority_fee_per_gas::text AS tip, \
                extract(epoch FROM now() - l.signed_at)::float8 AS signed_ago, \
                extract(epoch FROM now() - l.broadcast_at)::float8 AS broadcast_ago \
         FROM chain_transactions t \
         JOIN LATERAL (SELECT * FROM chain_transaction_attempts a WHERE a.signer = t.signer AND a.nonce = t.nonce \
                       ORDER BY a.attempt DESC LIMIT 1) l ON true \
         WHERE t.state <> 'final' ORDER BY t.signer, t.nonce LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut open = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: String = row.get("kind");
        let state: String = row.get("state");
        let mined = match state.as_str() {
            "mined" => Some(Mined {
                tx_hash: hash(row.get::<Vec<u8>, _>("tx_hash").as_slice()),
                block_number: row.get::<i64, _>("block_number") as u64,
                block_hash: hash(row.get::<Vec<u8>, _>("block_hash").as_slice()),
                succeeded: row.get("succeeded"),
            }),
            _ => None,
        };
        let hashes: Vec<Vec<u8>> = row.get("hashes");
        open.push(OpenTx {
            signer: address(row.get::<Vec<u8>, _>("signer").as_slice()),
            nonce: row.get::<i64, _>("nonce") as u64,
            kind: Kind::parse(&kind).unwrap_or(Kind::Pause),
            subject: row.get("subject"),
            to: address(row.get::<Vec<u8>, _>("to_address").as_slice()),
            calldata: row.get("calldata"),
            gas_limit: row.get::<i64, _>("gas_limit") as u64,
            mined,
            hashes: hashes.iter().map(|h| hash(h)).collect(),
            latest_attempt: row.get("attempt"),
            latest_raw: row.get("raw"),
            latest_max_fee: row.get::<String, _>("max_fee").parse().unwrap_or(0),
            latest_priority_fee: row.get::<String, _>("tip").parse().unwrap_or(0),
            signed_secs_ago: row.get("signed_ago"),
            broadcast_secs_ago: row.get("broadcast_ago"),
        });
    }
    Ok(open)
}

/// Records that `tx` was seen mined, and moves its queue row to `mined` (a success only: a
/// reverted transaction leaves the work submitted until it is final).
pub async fn set_mined(pool: &PgPool, tx: &OpenTx, mined: &Mined) -> sqlx::Result<()> {
    let mut db = pool.begin().await?;
    sqlx::query(
        "UPDATE chain_transactions SET state = 'mined', tx_hash = $3, block_number = $4, block_hash = $5, \
         succeeded = $6, updated_at = now() WHERE signer = $1 AND nonce = $2 AND state = 'pending'",
    )
    .bind(tx.signer.as_slice())
    .bind(tx.nonce as i64)
    .bind(mined.tx_hash.as_slice())
    .bind(mined.block_number as i64)
    .bind(mined.block_hash.as_slice())
    .bind(mined.succeeded)
    .execute(&mut *db)
    .await?;
    if mined.succeeded {
        move_queue_row(&mut db, tx, "submitted", "mined", Some(mined)).await?;
    }
    db.commit().await
}

/// A mined transaction left the canonical chain (a reorg): pending again, its work submitted.
pub async fn set_unmined(pool: &PgPool, tx: &OpenTx) -> sqlx::Result<()> {
    let mut db = pool.begin().await?;
    sqlx::query(
        "UPDATE chain_transactions SET state = 'pending', tx_hash = NULL, block_number = NULL, block_hash = NULL, \
         succeeded = NULL, updated_at = now() WHERE signer = $1 AND nonce = $2 AND state = 'mined'",
    )
    .bind(tx.signer.as_slice())
    .bind(tx.nonce as i64)
    .execute(&mut *db)
    .await?;
    move_queue_row(&mut db, tx, "mined", "submitted", None).await?;
    db.commit().await
}

/// Moves the queue row of `tx`'s work from `from` to `to` when it still points at `tx`.
async fn move_queue_row(
    db: &mut PgConnection,
    tx: &OpenTx,
    from: &str,
    to: &str,
    mined: Option<&Mined>,
) -> sqlx::Result<()> {
    let table = match tx.kind {
        Kind::Mint => "chain_withdrawals SET",
        Kind::RecordRetirement => "chain_retirements SET",
        Kind::Anchor | Kind::Pause => return Ok(()),
    };
    let id_column = match tx.kind {
        Kind::Mint => "withdrawal_id",
        _ => "retirement_id",
    };
    let sql = format!(
        "UPDATE {table} state = $1, tx_hash = COALESCE($2, tx_hash), block_number = $3, updated_at = now() \
         WHERE {id_column}::text = $4 AND state = $5 AND signer = $6 AND nonce = $7"
    );
    sqlx::query(&sql)
        .bind(to)
        .bind(mined.map(|m| m.tx_hash.to_vec()))
        .bind(mined.map(|m| m.block_number as i64))
        .bind(&tx.subject)
        .bind(from)
        .bind(tx.signer.as_slice())
        .bind(tx.nonce as i64)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Locks `tx`'s row and answers whether it is still in state `state` (another sender tracking
/// the same signer may have moved it first).
pub async fn lock_transaction_in(conn: &mut PgConnection, tx: &OpenTx, state: &str) -> sqlx::Result<bool> {
    let current: Option<String> =
        sqlx::query_scalar("SELECT state FROM chain_transactions WHERE signer = $1 AND nonce = $2 FOR UPDATE")
            .bind(tx.signer.as_slice())
            .bind(tx.nonce as i64)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(current.as_deref() == Some(state))
}

pub const SET_TRANSACTION_FINAL: &str =
    "UPDATE chain_transactions SET state = 'final', updated_at = now() WHERE signer = $1 AND nonce = $2";

/// A transaction's work goes back to the queue: it reverted (paused, cap) or its nonce was
/// consumed by another transaction. The transaction is final either way.
pub async fn finish_and_requeue(pool: &PgPool, tx: &OpenTx) -> sqlx::Result<()> {
    let mut db = pool.begin().await?;
    if !lock_transaction_in(&mut db, tx, if tx.mined.is_some() { "mined" } else { "pending" }).await? {
        return Ok(());
    }
    sqlx::query(SET_TRANSACTION_FINAL).bind(tx.signer.as_slice()).bind(tx.nonce as i64).execute(&mut *db).await?;
    match tx.kind {
        Kind::Mint => {
            sqlx::query(
                "UPDATE chain_withdrawals SET state = 'queued', block_number = NULL, updated_at = now() \
                 WHERE withdrawal_id::text = $1 AND state IN ('submitted', 'mined') AND signer = $2 AND nonce = $3",
            )
            .bind(&tx.subject)
            .bind(tx.signer.as_slice())
            .bind(tx.nonce as i64)
            .execute(&mut *db)
            .await?;
        }
        Kind::RecordRetirement => {
            sqlx::query(
                "UPDATE chain_retirements SET state = 'queued', block_number = NULL, updated_at = now() \
                 WHERE retirement_id::text = $1 AND state IN ('submitted', 'mined') AND signer = $2 AND nonce = $3",
            )
            .bind(&tx.subject)
            .bind(tx.signer.as_slice())
            .bind(tx.nonce as i64)
            .execute(&mut *db)
            .await?;
        }
        Kind::Anchor => {
            sqlx::query("UPDATE chain_anchors SET state = 'refused', updated_at = now() WHERE position::text = $1")
                .bind(&tx.subject)
                .execute(&mut *db)
                .await?;
        }
        Kind::Pause => {}
    }
    db.commit().await
}

/// A final, successful transaction with no ledger command to record: anchors, pause.
pub async fn finish_plain(pool: &PgPool, tx: &OpenTx, mined: &Mined) -> sqlx::Result<()> {
    let mut db = pool.begin().await?;
    if !lock_transaction_in(&mut db, tx, "mined").await? {
        return Ok(());
    }
    sqlx::query(SET_TRANSACTION_FINAL).bind(tx.signer.as_slice()).bind(tx.nonce as i64).execute(&mut *db).await?;
    match tx.kind {
        Kind::Anchor => {
            sqlx::query(
                "UPDATE chain_anchors SET state = 'final', tx_hash = $2, block_number = $3, updated_at = now() \
                 WHERE position::text = $1",
            )
            .bind(&tx.subject)
            .bind(mined.tx_hash.as_slice())
            .bind(mined.block_number as i64)
            .execute(&mut *db)
            .await?;
        }
        Kind::RecordRetirement => {
            sqlx::query(
                "UPDATE chain_retirements SET state = 'final', tx_hash = $2, block_number = $3, updated_at = now() \
                 WHERE retirement_id::text = $1 AND state <> 'final'",
            )
            .bind(&tx.subject)
            .bind(mined.tx_hash.as_slice())
            .bind(mined.block_number as i64)
            .execute(&mut *db)
            .await?;
        }
        Kind::Mint | Kind::Pause => {}
    }
    db.commit().await
}

/// A queued withdrawal to mint.
#[derive(Debug, Clone)]
pub struct QueuedWithdrawal {
    pub withdrawal_id: uuid::Uuid,
    pub wallet_id: uuid::Uuid,
    pub amount: rust_decimal::Decimal,
    pub address: Address,
    /// Never sent, or queued again (after a revert) at least `retry_after` ago: a refused
    /// mint (cap, pause) is not resent every round.
    pub ready: bool,
}

pub async fn queued_withdrawals(pool: &PgPool, limit: i64, retry_after: f64) -> sqlx::Result<Vec<QueuedWithdrawal>> {
    let rows = sqlx::query(
        "SELECT withdrawal_id, wallet_id, amount, address, \
                (nonce IS NULL OR updated_at <= now() - make_interval(secs => $2)) AS ready \
         FROM chain_withdrawals \
         WHERE state = 'queued' AND cancel_requested_at IS NULL ORDER BY requested_at, withdrawal_id LIMIT $1",
    )
    .bind(limit)
    .bind(retry_after)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|row| QueuedWithdrawal {
            withdrawal_id: row.get(0),
            wallet_id: row.get(1),
            amount: row.get(2),
            address: address(row.get::<Vec<u8>, _>(3).as_slice()),
            ready: row.get(4),
        })
        .collect())
}

/// A withdrawal an admin asked to cancel, with the highest nonce each signer used for it and
/// whether any of its transactions is not final yet.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    pub withdrawal: QueuedWithdrawal,
    pub nonces: Vec<(Address, u64)>,
    pub open_transactions: bool,
}

pub async fn cancel_requests(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<CancelRequest>> {
    let rows = sqlx::query(
        "SELECT w.withdrawal_id, w.wallet_id, w.amount, w.address, \
                EXISTS (SELECT 1 FROM chain_transactions t WHERE t.kind = 'mint' \
                        AND t.subject = w.withdrawal_id::text AND t.state <> 'final') AS open \
         FROM chain_withdrawals w \
         WHERE w.state IN ('queued', 'submitted') AND w.cancel_requested_at IS NOT NULL \
         ORDER BY w.cancel_requested_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut requests = Vec::with_capacity(rows.len());
    for row in rows {
        let withdrawal = QueuedWithdrawal {
            withdrawal_id: row.get(0),
            wallet_id: row.get(1),
            amount: row.get(2),
            address: address(row.get::<Vec<u8>, _>(3).as_slice()),
            ready: true,
        };
        let nonces = sqlx::query(
            "SELECT signer, max(nonce) FROM chain_transactions WHERE kind = 'mint' AND subject = $1 GROUP BY signer",
        )
        .bind(withdrawal.withdrawal_id.to_string())
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| (address(r.get::<Vec<u8>, _>(0).as_slice()), r.get::<i64, _>(1) as u64))
        .collect();
        requests.push(CancelRequest { withdrawal, nonces, open_transactions: row.get("open") });
    }
    Ok(requests)
}

/// A queued retirement to record.
#[derive(Debug, Clone)]
pub struct QueuedRetirement {
    pub retirement_id: uuid::Uuid,
    pub amount: rust_decimal::Decimal,
    /// As [`QueuedWithdrawal::ready`].
    pub ready: bool,
}

pub async fn queued_retirements(pool: &PgPool, limit: i64, retry_after: f64) -> sqlx::Result<Vec<QueuedRetirement>> {
    let rows = sqlx::query(
        "SELECT retirement_id, amount, (nonce IS NULL OR updated_at <= now() - make_interval(secs => $2)) \
         FROM chain_retirements WHERE state = 'queued' ORDER BY queued_at, retirement_id LIMIT $1",
    )
    .bind(limit)
    .bind(retry_after)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|row| QueuedRetirement { retirement_id: row.get(0), amount: row.get(1), ready: row.get(2) })
        .collect())
}

/// The newest global-chain checkpoint at or below the relay's published watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: i64,
    pub head_hash: B256,
    pub count: i64,
}

pub async fn anchorable_checkpoint(pool: &PgPool) -> sqlx::Result<Option<Checkpoint>> {
    let row = sqlx::query(
        "SELECT position, head_hash, count FROM chain_checkpoints \
         WHERE position <= (SELECT published_position FROM relay_state WHERE id = 1) \
         ORDER BY position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| Checkpoint {
        position: row.get(0),
        head_hash: hash(row.get::<Vec<u8>, _>(1).as_slice()),
        count: row.get(2),
    }))
}

/// The last anchor sent (refused ones aside): its count, seconds since it was sent, and
/// whether it is still in flight.
pub async fn last_anchor(pool: &PgPool) -> sqlx::Result<Option<(i64, i64, f64, bool)>> {
    let row = sqlx::query(
        "SELECT position, count, extract(epoch FROM now() - created_at)::float8, state = 'submitted' \
         FROM chain_anchors WHERE state <> 'refused' ORDER BY position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))))
}

/// Whether the admin asked for the token to be paused.
pub async fn controls_paused(pool: &PgPool) -> sqlx::Result<bool> {
    let paused: Option<bool> =
        sqlx::query_scalar("SELECT paused FROM chain_controls WHERE singleton").fetch_optional(pool).await?;
    Ok(paused.unwrap_or(false))
}

/// Whether a `pause` transaction is not final yet.
pub async fn pause_in_flight(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM chain_transactions WHERE kind = 'pause' AND state <> 'final')")
        .fetch_one(pool)
        .await
}

/// What sending a transaction does to its work's row, in the same Postgres transaction.
#[derive(Debug, Clone)]
pub enum QueueUpdate {
    /// `chain_withdrawals`: queued → submitted.
    Withdrawal(uuid::Uuid),
    /// `chain_retirements`: queued → submitted, with the certificate's hash.
    Retirement { retirement_id: uuid::Uuid, cert_hash: B256 },
    /// A new `chain_anchors` row.
    Anchor(Checkpoint),
    /// Nothing to move (pause).
    Nothing,
}

/// Applies `update`; `false` when the row was not waiting for it (the send rolls back).
pub async fn apply_queue_update(
    conn: &mut PgConnection,
    update: &QueueUpdate,
    signer: Address,
    nonce: u64,
    tx_hash: B256,
) -> sqlx::Result<bool> {
    let result = match update {
        QueueUpdate::Withdrawal(id) => {
            sqlx::query(
                "UPDATE chain_withdrawals SET state = 'submitted', signer = $2, nonce = $3, tx_hash = $4, \
                 block_number = NULL, updated_at = now() \
                 WHERE withdrawal_id = $1 AND state = 'queued' AND cancel_requested_at IS NULL",
            )
            .bind(id)
            .bind(signer.as_slice())
            .bind(nonce as i64)
            .bind(tx_hash.as_slice())
            .execute(&mut *conn)
            .await?
        }
        QueueUpdate::Retirement { retirement_id, cert_hash } => {
            sqlx::query(
                "UPDATE chain_retirements SET state = 'submitted', cert_hash = $2, signer = $3, nonce = $4, \
                 tx_hash = $5, block_number = NULL, updated_at = now() WHERE retirement_id = $1 AND state = 'queued'",
            )
            .bind(retirement_id)
            .bind(cert_hash.as_slice())
            .bind(signer.as_slice())
            .bind(nonce as i64)
            .bind(tx_hash.as_slice())
            .execute(&mut *conn)
            .await?
        }
        QueueUpdate::Anchor(checkpoint) => {
            sqlx::query(
                "INSERT INTO chain_anchors (position, head_hash, count, state, signer, nonce, tx_hash) \
                 VALUES ($1, $2, $3, 'submitted', $4, $5, $6) ON CONFLICT (position) DO NOTHING",
            )
            .bind(checkpoint.position)
            .bind(checkpoint.head_hash.as_slice())
            .bind(checkpoint.count)
            .bind(signer.as_slice())
            .bind(nonce as i64)
            .bind(tx_hash.as_slice())
            .execute(&mut *conn)
            .await?
        }
        QueueUpdate::Nothing => return Ok(true),
    };
    Ok(result.rows_affected() == 1)
}
