//! What every saga step shares: a derived command id, the saga row moved in the step's own
//! transaction, closing a row whose work an earlier attempt already did, and refusals acted on
//! only once the states they were decided on have committed.

use event_store::{Begun, CommandContext, Outcome, Store, StoreError, UnitOfWork};
use uuid::Uuid;

/// Namespace of saga step command ids: UUIDv5(saga id, step, attempt).
const STEP_NAMESPACE: Uuid = Uuid::from_u128(0x5a6a_0001_7e55_4e3a_9c1f_2b0d_6d8e_4f21);

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    Completed,
    Failed,
    /// An earlier attempt (or another worker) already settled it.
    AlreadySettled,
}

/// A unit of work for step `step` of saga `saga_id`, attempt `attempt`.
pub async fn begin_step(
    store: &Store,
    kind: &str,
    saga_id: Uuid,
    step: &str,
    attempt: i32,
) -> Result<UnitOfWork, StoreError> {
    let context = CommandContext {
        command_id: Uuid::new_v5(&STEP_NAMESPACE, format!("{saga_id}/{step}/{attempt}").as_bytes()),
        correlation_id: saga_id,
        causation_id: Some(saga_id),
        ..CommandContext::new(format!("saga:{kind}"))
    };
    match store.begin(context, None).await? {
        Begun::Fresh(uow) => Ok(*uow),
        Begun::Replayed(_) => unreachable!("a step without an idempotency key is always fresh"),
    }
}

/// Commits the step together with the saga row's new status.
pub async fn finish(mut uow: UnitOfWork, saga_id: Uuid, status: &'static str) -> Result<(), StoreError> {
    use sqlx::Arguments;
    let mut arguments = sqlx::postgres::PgArguments::default();
    arguments.add(saga_id).and_then(|_| arguments.add(status)).map_err(StoreError::corrupt)?;
    uow.stage_statement(
        "UPDATE sagas SET status = $2, last_error = NULL, updated_at = now() WHERE saga_id = $1",
        arguments,
    );
    uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await?;
    Ok(())
}

/// Closes a saga row whose work is already done.
pub async fn mark(store: &Store, saga_id: Uuid, status: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE sagas SET status = $2, updated_at = now() WHERE saga_id = $1 AND status = 'pending'")
        .bind(saga_id)
        .bind(status)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Lets go of a step whose command was refused and waits for the commits still in flight that
/// the refusal was decided on. When one of them failed, the state refused on never was: a
/// conflict, so that the step is decided again from what is stored, never compensated for a
/// refusal that did not hold.
pub async fn let_go_of_refused(uow: UnitOfWork) -> Result<(), StoreError> {
    let basis = uow.refusal_basis();
    drop(uow);
    match basis.stands().await {
        true => Ok(()),
        false => Err(StoreError::Conflict),
    }
}

/// For a refusal a step acts on in the same unit of work: a conflict (the step runs again
/// shortly) while a state it was decided on waits for its commit, which may yet fail.
pub fn refusal_settled(uow: &UnitOfWork) -> Result<(), StoreError> {
    match uow.refusal_basis().settled() {
        true => Ok(()),
        false => Err(StoreError::Conflict),
    }
}
