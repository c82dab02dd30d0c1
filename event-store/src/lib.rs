//! EcoLedger's event store on Postgres: canonical hashed events with global positions (the
//! outbox), units of work with idempotency and uniqueness claims, snapshots, the JetStream
//! relay, and chain verification. DESIGN.md sections 1, 2 and 4.

pub mod bus;
pub mod canonical;
mod commit;
pub mod error;
pub mod metadata;
mod open_tx;
pub mod pg_event_store;
pub mod record;
pub mod relay;
pub mod store;
pub mod uow;
pub mod upcast;
pub mod verify;
mod write;

pub use write::{SideInsert, SideRow};

pub use bus::Bus;
pub use error::StoreError;
pub use metadata::CommandContext;
pub use record::{PublishedEvent, RecordedEvent};
pub use relay::Relay;
pub use store::{Loaded, RefusalBasis, RunningCommand, Snapshotted, Store, WAKE_CHANNEL};
pub use uow::{Begun, Committed, Executed, Idempotency, Outcome, UnitOfWork, IDEMPOTENCY_WAIT_MAX};

/// The schema migrations under the workspace's `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Advisory lock taken by every projection's active instance: (class, object = hash of name).
pub const PROJECTION_LOCK_CLASS: i32 = 72561;

/// Tries a session-level advisory lock on `conn`; the lock lives as long as the connection.
pub async fn try_advisory_lock(conn: &mut sqlx::PgConnection, class: i32, object: i32) -> Result<bool, StoreError> {
    relay::try_lock(conn, (class, object)).await
}
