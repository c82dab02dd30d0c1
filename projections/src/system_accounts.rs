use std::collections::BTreeMap;

use async_trait::async_trait;
use domain::accounts::Account;
use domain::Currency;
use event_store::{RecordedEvent, StoreError};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::{postings_of, Projection};

/// `rm_system_accounts`: balances of the system accounts (`external`, `transit`, `fees`,
/// `chain`, `retired`, `chain_suspense`) per currency, derived from the system side of every
/// posting (wallet events and chain movements). With the wallets' balances they sum to zero
/// per currency: the trial balance.
pub struct SystemAccounts;

#[async_trait]
impl Projection for SystemAccounts {
    fn name(&self) -> &'static str {
        "system_accounts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_system_accounts"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        self.apply_batch(conn, std::slice::from_ref(event)).await
    }

    /// Sums the batch's changes per account first: one upsert per account touched.
    async fn apply_batch(&self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let mut changes: BTreeMap<(Currency, &'static str), (Decimal, i64)> = BTreeMap::new();
        for event in events {
            for posting in postings_of(event)? {
                for (account, delta) in [(posting.debit, -posting.amount), (posting.credit, posting.amount)] {
                    if let Account::System { account } = account {
                        let change = changes.entry((posting.currency, account.name())).or_default();
                        *change = (change.0 + delta, event.position);
                    }
                }
            }
        }
        for ((currency, account), (delta, position)) in changes {
            add(conn, currency.code(), account, delta, position).await?;
        }
        Ok(())
    }
}

async fn add(
    conn: &mut PgConnection,
    currency: &str,
    account: &str,
    delta: Decimal,
    position: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rm_system_accounts (currency, account, balance, position) \
         VALUES ($1, $2, round($3::numeric, ledger_scale($1)), $4) \
         ON CONFLICT (currency, account) DO UPDATE \
         SET balance = round(rm_system_accounts.balance + EXCLUDED.balance, ledger_scale(EXCLUDED.currency)), \
             position = EXCLUDED.position",
    )
    .bind(currency)
    .bind(account)
    .bind(delta)
    .bind(position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
