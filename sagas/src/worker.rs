//! The sweeper: leases due sagas and runs their next step.

use std::time::Duration;

use event_store::{Store, StoreError, WAKE_CHANNEL};
use futures::StreamExt;
use rand::Rng;
use sqlx::postgres::PgListener;
use sqlx::Row;
use uuid::Uuid;

use crate::listing_expiry::{self, ListingExpirySaga, LISTING_EXPIRY_SAGA};
use crate::purchase::{self, PurchaseSaga, PURCHASE_SAGA};
use crate::transfer::{self, TransferSaga, TRANSFER_SAGA};

/// Sagas leased per sweep.
const SAGAS_PER_SWEEP_MAX: i64 = 64;
/// Steps run at once by one worker.
const STEPS_IN_FLIGHT_MAX: usize = 8;
/// A leased saga is offered again after this long (its worker died or hangs).
const LEASE: Duration = Duration::from_secs(30);
/// Safety-net poll when no wake-up arrives.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Retry delays after a failed step grow to this.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(60);
const FAILURE_BACKOFF: Duration = Duration::from_millis(500);
/// Conflicts a step retries at once before it is rescheduled.
const STEP_CONFLICT_RETRIES_MAX: u32 = 4;

pub struct SagaWorker {
    store: Store,
}

/// A leased saga.
struct Due {
    saga_id: Uuid,
    kind: String,
    payload: serde_json::Value,
    attempts: i32,
}

impl SagaWorker {
    pub fn new(store: Store) -> SagaWorker {
        SagaWorker { store }
    }

    /// Runs forever: sweeps due sagas, then waits for a wake-up or the poll.
    pub async fn run(self) {
        loop {
            if let Err(error) = self.run_until_failure().await {
                tracing::warn!(%error, "saga worker interrupted; retrying");
            }
            tokio::time::sleep(FAILURE_BACKOFF).await;
        }
    }

    async fn run_until_failure(&self) -> Result<(), StoreError> {
        let mut saga_staged = self.store.saga_signal();
        let mut listener = PgListener::connect_with(self.store.pool()).await?;
        listener.listen(WAKE_CHANNEL).await?;
        loop {
            if self.sweep().await? > 0 {
                continue;
            }
            tokio::select! {
                _ = saga_staged.changed() => {}
                woken = self.store.wake_up_from_others(&mut listener) => { woken?; }
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    /// Leases due sagas and runs one step of each; returns how many were leased.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let due = self.lease().await?;
        let count = due.len();
        futures::stream::iter(due)
            .for_each_concurrent(STEPS_IN_FLIGHT_MAX, |saga| async move { self.step(saga).await })
            .await;
        Ok(count)
    }

    async fn lease(&self) -> Result<Vec<Due>, StoreError> {
        let rows = sqlx::query(
            "UPDATE sagas SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2), \
                    updated_at = now() \
             WHERE saga_id IN (SELECT saga_id FROM sagas WHERE status = 'pending' AND next_attempt_at <= now() \
                               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING saga_id, kind, payload, attempts",
        )
        .bind(SAGAS_PER_SWEEP_MAX)
        .bind(LEASE.as_secs_f64())
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| Due {
                saga_id: row.get("saga_id"),
                kind: row.get("kind"),
                payload: row.get("payload"),
                attempts: row.get("attempts"),
            })
            .collect())
    }

    /// Runs one step; a conflict (another unit of work on the same streams) is retried at
    /// once a few times, since it is settled within milliseconds, before the step is
    /// rescheduled like any other failure.
    async fn step(&self, saga: Due) {
        let mut conflicts = 0;
        let result = loop {
            match self.run_step(&saga).await {
                Err(StoreError::Conflict) if conflicts < STEP_CONFLICT_RETRIES_MAX => {
                    conflicts += 1;
                    let jitter_ms = rand::rng().random_range(0..=2_u64.pow(conflicts));
                    tokio::time::sleep(Duration::from_millis(jitter_ms)).await;
                }
                result => break result,
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, saga_id = %saga.saga_id, attempt = saga.attempts, "saga step failed; will retry");
            self.schedule_retry(&saga, &error.to_string()).await;
        }
    }

    async fn run_step(&self, saga: &Due) -> Result<(), StoreError> {
        let (store, id, attempt) = (&self.store, saga.saga_id, saga.attempts);
        match saga.kind.as_str() {
            TRANSFER_SAGA => match payload::<TransferSaga>(saga) {
                Ok(payload) => transfer::settle(store, id, &payload, attempt).await.map(|_| ()),
                Err(error) => Err(error),
            },
            PURCHASE_SAGA => match payload::<PurchaseSaga>(saga) {
                Ok(payload) => purchase::settle(store, id, &payload, attempt).await.map(|_| ()),
                Err(error) => Err(error),
            },
            LISTING_EXPIRY_SAGA => match payload::<ListingExpirySaga>(saga) {
                Ok(payload) => listing_expiry::expire(store, id, &payload, attempt).await.map(|_| ()),
                Err(error) => Err(error),
            },
            other => Err(StoreError::corrupt(format!("saga {id}: unknown kind {other}"))),
        }
    }

    /// Moves a failed step's next attempt out by an exponential delay (the lease covers it if
    /// even this write fails).
    async fn schedule_retry(&self, saga: &Due, error: &str) {
        let delay = Duration::from_millis(100 * 2_u64.pow(saga.attempts.clamp(0, 16) as u32)).min(RETRY_DELAY_MAX);
        let result = sqlx::query(
            "UPDATE sagas SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3, updated_at = now() \
             WHERE saga_id = $1 AND status = 'pending'",
        )
        .bind(saga.saga_id)
        .bind(delay.as_secs_f64())
        .bind(error)
        .execute(self.store.pool())
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, saga_id = %saga.saga_id, "retry not scheduled; the lease will offer it again");
        }
    }
}

/// A saga row's payload as its kind's type.
fn payload<T: serde::de::DeserializeOwned>(saga: &Due) -> Result<T, StoreError> {
    serde_json::from_value(saga.payload.clone())
        .map_err(|error| StoreError::corrupt(format!("saga {}: unreadable payload: {error}", saga.saga_id)))
}
