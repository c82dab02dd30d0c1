//! The committer's transactions: BEGIN and the allocation of the events' positions sent to
//! Postgres as one simple query, one round trip instead of two. On a hot stream the committer
//! is the serial part of every command, and each round trip it waits for is a wake-up of a
//! Postgres backend on a busy machine.
//!
//! sqlx does not know about a transaction opened this way (its own `Transaction` always sends
//! BEGIN alone), so [`OpenTransaction`] finishes it itself: dropped while still open (a task
//! cancelled, a path that forgot), it closes its connection, which rolls the transaction back.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use sqlx::{Executor, PgConnection, PgPool, Row};

use crate::error::StoreError;

/// The committer's connections. Each one taken from the pool costs a ping (sqlx tests a
/// connection before it hands it out and again when it comes back): a round trip on the
/// committer's serial path, and a Postgres wake-up. So the committer takes its connections
/// out of the pool (as the relay and the projector do with theirs) and keeps one whose
/// transaction ended cleanly for the next, up to as many as it uses at once; out of the
/// pool, the kept ones never leave the pool's other users waiting. A kept connection that
/// broke meanwhile (Postgres restarted) fails its BEGIN, and that transaction begins again
/// on one from the pool, which tests it.
pub(crate) struct Connections {
    pool: PgPool,
    idle: Mutex<Vec<PgConnection>>,
    idle_max: usize,
}

impl Connections {
    /// Keeps up to `idle_max` connections between transactions.
    pub(crate) fn new(pool: PgPool, idle_max: usize) -> Arc<Connections> {
        Arc::new(Connections { pool, idle: Mutex::new(Vec::with_capacity(idle_max)), idle_max })
    }

    fn take_idle(&self) -> Option<PgConnection> {
        self.idle.lock().expect("no panics while holding the idle list").pop()
    }

    /// Keeps `conn` for the next transaction, or closes it when enough are kept.
    fn keep(&self, conn: PgConnection) {
        let mut idle = self.idle.lock().expect("no panics while holding the idle list");
        if idle.len() < self.idle_max {
            idle.push(conn);
        }
    }
}

/// A transaction opened with its positions allocated, on one of the committer's connections.
pub(crate) struct OpenTransaction {
    /// `None` only once the transaction ended and its connection was kept.
    conn: Option<PgConnection>,
    connections: Arc<Connections>,
}

impl OpenTransaction {
    /// Opens a transaction and allocates `event_count` positions in it, the transaction's
    /// first write (`ledger_allocate_positions` takes the transaction id under its lock:
    /// docs/design-notes.md, "Positions"). Errors: `Database` (no connection, Postgres down).
    pub(crate) async fn begin(
        connections: &Arc<Connections>,
        event_count: usize,
    ) -> Result<(OpenTransaction, Vec<i64>), StoreError> {
        if let Some(kept) = connections.take_idle() {
            match Self::begin_on(kept, connections, event_count).await {
                // Nothing ran: a transaction on a lost connection is rolled back with it.
                Err(StoreError::Database(error)) if is_connection_lost(&error) => {
                    tracing::debug!(%error, "a kept connection was lost; beginning on a pooled one")
                }
                begun => return begun,
            }
        }
        let pooled = connections.pool.acquire().await?.detach();
        Self::begin_on(pooled, connections, event_count).await
    }

    async fn begin_on(
        conn: PgConnection,
        connections: &Arc<Connections>,
        event_count: usize,
    ) -> Result<(OpenTransaction, Vec<i64>), StoreError> {
        // The guard exists before BEGIN is sent: a begin cancelled or failed halfway closes.
        let mut tx = OpenTransaction { conn: Some(conn), connections: connections.clone() };
        if event_count == 0 {
            tx.execute("BEGIN").await?;
            return Ok((tx, Vec::new()));
        }
        // A count is not an input anyone controls, so it is written into the text: the simple
        // query protocol, the only one that carries two statements at once, takes no parameters.
        let sql = format!("BEGIN; SELECT ledger_allocate_positions({event_count})");
        let rows = tx.fetch_all(sql.as_str()).await?;
        let row = rows.first().ok_or_else(|| StoreError::corrupt("ledger_allocate_positions returned no row"))?;
        let positions: Vec<i64> = row.try_get(0)?;
        assert_eq!(positions.len(), event_count, "one position per staged event");
        Ok((tx, positions))
    }

    /// Errors: `Database` (the COMMIT failed; whether it took effect is not known when the
    /// connection broke, as with any COMMIT).
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.execute("COMMIT").await?;
        self.end();
        Ok(())
    }

    /// Rolls back; on failure the connection is closed, which rolls back too.
    pub(crate) async fn rollback(mut self) {
        match self.execute("ROLLBACK").await {
            Ok(_) => self.end(),
            Err(error) => tracing::debug!(%error, "rollback failed; the connection is closed instead"),
        }
    }

    /// The transaction is over: its connection is kept for the next one. (An `OpenTransaction`
    /// dropped before this drops its connection, which closes it.)
    fn end(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.connections.keep(conn);
        }
    }
}

/// The connection itself is gone (Postgres restarted or shut down, the socket broke), not a
/// statement refused on a live one.
fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

impl Deref for OpenTransaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("an open transaction has its connection")
    }
}

impl DerefMut for OpenTransaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("an open transaction has its connection")
    }
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgPoolOptions;
    use sqlx::Connection;

    use super::*;

    /// A pool of one connection on a migrated database of the test's own.
    async fn pool_of_one() -> PgPool {
        let url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/ecoledger".into());
        let (base, _) = url.rsplit_once('/').expect("database URL with a path");
        let admin = PgPoolOptions::new().max_connections(1).connect(&format!("{base}/postgres")).await.unwrap();
        let name = format!("ecoledger_test_open_tx_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
        let pool = PgPoolOptions::new().max_connections(1).connect(&format!("{base}/{name}")).await.unwrap();
        crate::MIGRATOR.run(&pool).await.unwrap();
        pool
    }

    async fn backend_pid(conn: &mut PgConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await.unwrap()
    }

    /// Waits until the backend `pid` is gone.
    async fn backend_gone(pool: &PgPool, pid: i32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let alive: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(pool)
                .await
                .unwrap();
            if !alive {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "backend {pid} still there");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_committed_transaction_keeps_its_connection_and_a_dropped_open_one_closes_it() {
        let pool = pool_of_one().await;
        let connections = Connections::new(pool.clone(), 1);

        let (mut committed, positions) = OpenTransaction::begin(&connections, 3).await.unwrap();
        assert_eq!(positions.len(), 3);
        assert!(positions.windows(2).all(|pair| pair[1] == pair[0] + 1), "consecutive: {positions:?}");
        let first_pid = backend_pid(&mut committed).await;
        committed.commit().await.unwrap();

        let (mut dropped, later) = OpenTransaction::begin(&connections, 1).await.unwrap();
        assert!(later[0] > positions[2]);
        assert_eq!(backend_pid(&mut dropped).await, first_pid, "a committed transaction's connection is kept");
        drop(dropped);

        // Closed with its transaction, not kept for the next one.
        backend_gone(&pool, first_pid).await;
        let (mut next, _) = OpenTransaction::begin(&connections, 1).await.unwrap();
        assert_ne!(backend_pid(&mut next).await, first_pid);
        next.rollback().await;
    }

    #[tokio::test]
    async fn a_kept_connection_that_was_lost_is_replaced_by_a_pooled_one() {
        let pool = pool_of_one().await;
        let connections = Connections::new(pool.clone(), 1);
        let (mut first, _) = OpenTransaction::begin(&connections, 1).await.unwrap();
        let kept_pid = backend_pid(&mut first).await;
        first.commit().await.unwrap();

        let url = pool.connect_options();
        let mut admin = PgConnection::connect_with(&url).await.unwrap();
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
            .bind(kept_pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(terminated);

        let (mut second, positions) = OpenTransaction::begin(&connections, 2).await.unwrap();
        assert_eq!(positions.len(), 2);
        assert_ne!(backend_pid(&mut second).await, kept_pid);
        second.commit().await.unwrap();
    }
}
