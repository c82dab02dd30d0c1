//! Projection checkpoints, moved in the same transaction as the projection's writes.

use event_store::StoreError;
use sqlx::{Executor, PgConnection};

/// The position `name` has applied up to (0 when it never ran), in the search path's schema.
pub async fn checkpoint(conn: &mut PgConnection, name: &str) -> Result<i64, StoreError> {
    sqlx::query("INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let position = sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(position)
}

/// Every live projection's checkpoint, by name.
pub async fn checkpoints(pool: &sqlx::PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as("SELECT name, position FROM projection_checkpoints ORDER BY name").fetch_all(pool).await?)
}

/// Moves the checkpoint from `expected` to `position`. Fails with `Conflict` when someone else
/// (a rebuild) moved it: the caller's transaction must then roll back and reload.
pub(crate) async fn advance(
    conn: &mut PgConnection,
    name: &str,
    expected: i64,
    position: i64,
) -> Result<(), StoreError> {
    let moved = sqlx::query("UPDATE projection_checkpoints SET position = $3 WHERE name = $1 AND position = $2")
        .bind(name)
        .bind(expected)
        .bind(position)
        .execute(&mut *conn)
        .await?;
    match moved.rows_affected() {
        1 => Ok(()),
        _ => Err(StoreError::Conflict),
    }
}

/// Begins a transaction and moves each `(name, expected)` checkpoint to `position` in it, in
/// one round trip: the projector's batches are short, and a `BEGIN` of their own was one of
/// their nine round trips (a batch of deposits). Fails with `Conflict` when any of them was
/// moved by someone else (a rebuild); the caller must then roll back (as after any error
/// here) and reload.
pub(crate) async fn begin_moving_checkpoints(
    conn: &mut PgConnection,
    moves: &[(&'static str, i64)],
    position: i64,
) -> Result<(), StoreError> {
    // Two statements in one message need the simple query protocol, which takes no
    // parameters: the names are the projections' own constants and the positions integers,
    // written into the text (the names quoted as SQL literals all the same).
    let expected: Vec<String> =
        moves.iter().map(|(name, expected)| format!("('{}', {expected}::bigint)", name.replace('\'', "''"))).collect();
    let sql = format!(
        "BEGIN; UPDATE projection_checkpoints c SET position = {position} \
         FROM (VALUES {}) AS m(name, expected) \
         WHERE c.name = m.name AND c.position = m.expected RETURNING c.name",
        expected.join(", ")
    );
    let moved = conn.fetch_all(sql.as_str()).await?;
    match moved.len() == moves.len() {
        true => Ok(()),
        false => Err(StoreError::Conflict),
    }
}
