/// Errors of the event store. Rejections by the domain are not here: they are the aggregate's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another command wrote the same stream first; retry from a fresh load.
    #[error("optimistic concurrency conflict")]
    Conflict,
    #[error("the idempotency key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyKeyInProgress,
    /// A uniqueness claim (username, email, reference) belongs to someone else.
    #[error("{kind} already claimed")]
    ClaimTaken { kind: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// NATS refused or did not answer; the relay retries.
    #[error("NATS: {0}")]
    Nats(String),
    /// Stored data that cannot be read back: a bug or tampering, never an input error.
    #[error("corrupt event store: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn corrupt(what: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(what.to_string())
    }
}

/// True when `error` is Postgres's unique violation (23505).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
