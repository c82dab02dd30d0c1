use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::transfer::{TransferEvent, TransferParties};
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{occurred_at, transfer_event, Projection};

/// `rm_transfers`: each transfer's parties and status.
pub struct Transfers;

/// A transfer first seen in the batch: its row as it will be inserted.
struct NewTransfer {
    parties: TransferParties,
    created: (DateTime<Utc>, i64),
    status: Status,
}

/// Where a transfer's status stands after an event: status, reason, time and position.
struct Status {
    status: &'static str,
    reason: Option<String>,
    at: DateTime<Utc>,
    position: i64,
}

#[async_trait]
impl Projection for Transfers {
    fn name(&self) -> &'static str {
        "transfers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_transfers"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        self.apply_batch(conn, std::slice::from_ref(event)).await
    }

    /// New transfers are inserted together, with the status the batch left them in; status
    /// changes of transfers inserted before are one `UPDATE` (the last change of each wins,
    /// as applying them in turn would leave it).
    async fn apply_batch(&self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let mut new: Vec<NewTransfer> = Vec::new();
        let mut changed: HashMap<Uuid, Status> = HashMap::new();
        for event in events {
            let Some(transfer) = transfer_event(event)? else { continue };
            let (at, position) = (occurred_at(event)?, event.position);
            let (id, status) = match transfer {
                TransferEvent::TransferInitiated(parties) => {
                    let status = Status { status: "pending", reason: None, at, position };
                    new.push(NewTransfer { parties, created: (at, position), status });
                    continue;
                }
                TransferEvent::TransferCompleted(parties) => {
                    (parties.transfer_id, Status { status: "completed", reason: None, at, position })
                }
                TransferEvent::TransferFailed { parties, reason } => {
                    (parties.transfer_id, Status { status: "failed", reason: Some(reason), at, position })
                }
            };
            match new.iter_mut().find(|transfer| transfer.parties.transfer_id == id) {
                Some(transfer) => transfer.status = status,
                None => {
                    changed.insert(id, status);
                }
            }
        }
        insert(conn, new).await?;
        update(conn, changed).await
    }
}

async fn insert(conn: &mut PgConnection, new: Vec<NewTransfer>) -> Result<(), StoreError> {
    if new.is_empty() {
        return Ok(());
    }
    let (mut ids, mut from_wallets, mut from_users, mut to_wallets, mut to_users) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut currencies, mut amounts, mut statuses, mut reasons) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut created_at, mut updated_at, mut positions, mut last_positions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for NewTransfer { parties, created, status } in new {
        ids.push(parties.transfer_id);
        from_wallets.push(parties.from_wallet_id);
        from_users.push(parties.from_user_id);
        to_wallets.push(parties.to_wallet_id);
        to_users.push(parties.to_user_id);
        currencies.push(parties.currency.code());
        amounts.push(parties.amount.value());
        statuses.push(status.status);
        reasons.push(status.reason);
        created_at.push(created.0);
        positions.push(created.1);
        updated_at.push(status.at);
        last_positions.push(status.position);
    }
    sqlx::query(
        "INSERT INTO rm_transfers (transfer_id, from_wallet_id, from_user_id, to_wallet_id, to_user_id, currency, \
                                   amount, status, reason, created_at, updated_at, position, last_position) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], \
                              $7::numeric[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
                              $12::bigint[], $13::bigint[])",
    )
    .bind(ids)
    .bind(from_wallets)
    .bind(from_users)
    .bind(to_wallets)
    .bind(to_users)
    .bind(currencies)
    .bind(amounts)
    .bind(statuses)
    .bind(reasons)
    .bind(created_at)
    .bind(updated_at)
    .bind(positions)
    .bind(last_positions)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies the status changes in one statement (`= ANY($1)`: looked up by key whatever the
/// planner thinks `UNNEST` holds, see `transactions::update_statuses`).
async fn update(conn: &mut PgConnection, changed: HashMap<Uuid, Status>) -> Result<(), StoreError> {
    if changed.is_empty() {
        return Ok(());
    }
    let (mut ids, mut statuses, mut reasons, mut at, mut positions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, status) in changed {
        ids.push(id);
        statuses.push(status.status);
        reasons.push(status.reason);
        at.push(status.at);
        positions.push(status.position);
    }
    sqlx::query(
        "UPDATE rm_transfers t SET status = c.status, reason = c.reason, updated_at = c.at, last_position = c.position \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[]) \
              AS c(transfer_id, status, reason, at, position) \
         WHERE t.transfer_id = c.transfer_id AND t.transfer_id = ANY($1)",
    )
    .bind(ids)
    .bind(statuses)
    .bind(reasons)
    .bind(at)
    .bind(positions)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
