//! The live price stream behind `GET /api/v1/prices/stream`.
//!
//! The `prices` projection appends every observation that became its feed's latest to
//! `rm_price_updates` (keyed by ledger position) and NOTIFYs `PRICE_UPDATES_CHANNEL` in the
//! projector's transaction. One shared task per API process ([`PriceStreamHub`]) reads new
//! rows by position, woken by that notification or by a slow poll, and fans them out through a
//! `tokio::sync::broadcast` channel. Each client:
//! 1. subscribes to the broadcast first,
//! 2. then sends the rows after its `Last-Event-ID` from the table, page by page,
//! 3. then follows the broadcast, skipping positions it already sent.
//!
//! Nothing is lost across the handover: a row committed before step 2 read the table is in
//! that read; a row committed after it is read by the hub later and broadcast to a receiver
//! that already exists. Only the projector writes the table, in position order, so the hub
//! never skips a row reading `position > last seen`. A receiver that lags behind the
//! broadcast goes back to step 2.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use rust_decimal::Decimal;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch, Notify, OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Concurrent streams one API process serves; one more is `503 price_streams_exhausted`.
pub const PRICE_STREAMS_MAX: usize = 1_000;
/// Updates the broadcast buffers per receiver; a receiver further behind reads the table.
const PRICE_UPDATES_BUFFERED_MAX: usize = 1_024;
/// Rows read from `rm_price_updates` per query.
const PRICE_UPDATES_PAGE_MAX: i64 = 500;
/// The safety net under the NOTIFY wake-up (a lost notification, a listener reconnecting).
const PRICE_UPDATES_POLL: Duration = Duration::from_millis(250);
/// Pause before listening again after the listener's connection failed.
const LISTENER_RETRY: Duration = Duration::from_secs(1);

/// One row of `rm_price_updates`: an observation that became its feed's latest.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PriceUpdate {
    pub position: i64,
    pub base: String,
    pub quote: String,
    pub index: Option<String>,
    pub price: Decimal,
    pub source: String,
    pub observed_at: DateTime<Utc>,
}

/// The process's shared price fan-out and its bound on concurrent streams. Cheap to clone;
/// its tasks start with the first subscriber and stop when the last clone is dropped.
#[derive(Clone)]
pub struct PriceStreamHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    sender: broadcast::Sender<Arc<PriceUpdate>>,
    started: OnceCell<()>,
    streams: Arc<Semaphore>,
    /// Dropped with the hub: its tasks see the channel close and end.
    _stop: watch::Sender<()>,
    stop: watch::Receiver<()>,
}

impl PriceStreamHub {
    pub fn new(streams_max: usize) -> PriceStreamHub {
        let (sender, _) = broadcast::channel(PRICE_UPDATES_BUFFERED_MAX);
        let (stop_sender, stop) = watch::channel(());
        let inner = HubInner {
            sender,
            started: OnceCell::new(),
            streams: Arc::new(Semaphore::new(streams_max)),
            _stop: stop_sender,
            stop,
        };
        PriceStreamHub { inner: Arc::new(inner) }
    }

    /// A place for one more stream, held until the stream ends, or 503 when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.inner.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable("price_streams_exhausted", "too many price streams are open; retry shortly", 5)
        })
    }

    /// The updates after `after` (the client's `Last-Event-ID`), or after the newest one when
    /// `None`: first from the table, then live, each once and in position order. The stream
    /// ends when the database fails (the client reconnects with its last id).
    pub async fn follow(
        &self,
        pool: &PgPool,
        after: Option<i64>,
        permit: OwnedSemaphorePermit,
    ) -> Result<impl Stream<Item = PriceUpdate> + Send + 'static, ApiError> {
        // Subscribe before reading anything: see the module's handover argument.
        let receiver = self.inner.sender.subscribe();
        self.start(pool).await?;
        let cursor = match after {
            Some(position) => position,
            None => newest_position(pool).await?,
        };
        let follower = Follower {
            pool: pool.clone(),
            receiver,
            cursor,
            backlog: VecDeque::new(),
            catching_up: true,
            _permit: permit,
        };
        Ok(futures::stream::unfold(follower, Follower::next))
    }

    /// Starts the hub's tasks once, from the newest position at that moment (read after the
    /// first receiver subscribed, so that receiver misses nothing).
    async fn start(&self, pool: &PgPool) -> Result<(), ApiError> {
        self.inner
            .started
            .get_or_try_init(|| async {
                let newest = newest_position(pool).await?;
                let wake = Arc::new(Notify::new());
                tokio::spawn(listen(pool.clone(), wake.clone(), self.inner.stop.clone()));
                let sender = self.inner.sender.clone();
                tokio::spawn(publish(pool.clone(), sender, newest, wake, self.inner.stop.clone()));
                Ok::<(), ApiError>(())
            })
            .await
            .map(|_| ())
    }
}

/// Reads new rows and broadcasts them, whenever woken or polled, while anyone listens.
async fn publish(
    pool: PgPool,
    sender: broadcast::Sender<Arc<PriceUpdate>>,
    mut last_seen: i64,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(PRICE_UPDATES_POLL) => {}
        }
        // Nobody listens: nothing to read now; a new subscriber gets what follows
        // `last_seen` at the next round (rows it already has are skipped on its side).
        if sender.receiver_count() == 0 {
            continue;
        }
        match broadcast_after(&pool, &sender, last_seen).await {
            Ok(position) => last_seen = position,
            Err(error) => tracing::warn!(%error, "cannot read price updates; retrying"),
        }
    }
}

/// Broadcasts every row after `after`; returns the last position sent.
async fn broadcast_after(
    pool: &PgPool,
    sender: &broadcast::Sender<Arc<PriceUpdate>>,
    mut after: i64,
) -> Result<i64, sqlx::Error> {
    loop {
        let page = updates_after(pool, after, PRICE_UPDATES_PAGE_MAX).await?;
        let full = page.len() as i64 == PRICE_UPDATES_PAGE_MAX;
        for update in page {
            after = update.position;
            // No receiver left is fine: they come back through the table.
            let _ = sender.send(Arc::new(update));
        }
        if !full {
            return Ok(after);
        }
    }
}

/// Wakes the publisher on every notification of the projection; without a listener the poll
/// still delivers, only later.
async fn listen(pool: PgPool, wake: Arc<Notify>, mut stop: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            error = wake_on_notifications(&pool, &wake) => {
                if matches!(error, sqlx::Error::PoolClosed) {
                    return;
                }
                tracing::debug!(%error, "price update listener failed; polling until it is back");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(LISTENER_RETRY) => {}
        }
    }
}

/// Listens on the projection's channel until the connection fails for good (`PgListener`
/// itself reconnects after a lost connection).
async fn wake_on_notifications(pool: &PgPool, wake: &Notify) -> sqlx::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => return error,
    };
    if let Err(error) = listener.listen(projections::PRICE_UPDATES_CHANNEL).await {
        return error;
    }
    loop {
        match listener.recv().await {
            Ok(_) => wake.notify_one(),
            Err(error) => return error,
        }
    }
}

/// One client's way through the table and then the broadcast.
struct Follower {
    pool: PgPool,
    receiver: broadcast::Receiver<Arc<PriceUpdate>>,
    /// The last position sent (or the starting point).
    cursor: i64,
    backlog: VecDeque<PriceUpdate>,
    /// Reading the table until it has nothing after `cursor`.
    catching_up: bool,
    _permit: OwnedSemaphorePermit,
}

impl Follower {
    async fn next(mut self) -> Option<(PriceUpdate, Follower)> {
        loop {
            if let Some(update) = self.backlog.pop_front() {
                self.cursor = update.position;
                return Some((update, self));
            }
            if self.catching_up {
                match updates_after(&self.pool, self.cursor, PRICE_UPDATES_PAGE_MAX).await {
                    Ok(page) if page.is_empty() => self.catching_up = false,
                    Ok(page) => self.backlog = page.into(),
                    Err(error) => {
                        tracing::warn!(%error, "price stream cannot read updates; closing it");
                        return None;
                    }
                }
                continue;
            }
            match self.receiver.recv().await {
                Ok(update) if update.position > self.cursor => {
                    self.cursor = update.position;
                    return Some((PriceUpdate::clone(&update), self));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

async fn updates_after(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<PriceUpdate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, base, quote, index, price, source, observed_at FROM rm_price_updates \
         WHERE position > $1 ORDER BY position LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

async fn newest_position(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM rm_price_updates").fetch_one(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_beyond_the_maximum_are_refused_until_one_ends() {
        let hub = PriceStreamHub::new(2);
        let first = hub.admit().expect("a first stream");
        let _second = hub.admit().expect("a second stream");
        let refused = hub.admit().expect_err("a third stream is one too many");
        assert_eq!(
            (refused.status.as_u16(), refused.code, refused.retry_after),
            (503, "price_streams_exhausted", Some(5))
        );
        drop(first);
        assert!(hub.admit().is_ok(), "an ended stream frees its place");
    }
}
