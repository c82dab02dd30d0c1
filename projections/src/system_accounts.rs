use async_trait::async_trait;
use domain::accounts::Account;
use event_store::{RecordedEvent, StoreError};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::{stream_uuid, wallet_event, Projection};

/// `rm_system_accounts`: balances of `external`, `transit` and `fees` per currency, derived
/// from the system side of every wallet posting. With the wallets' balances they sum to zero
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
        let Some(wallet_event) = wallet_event(event)? else { return Ok(()) };
        for posting in wallet_event.postings(stream_uuid(event)?) {
            for (account, delta) in [(posting.debit, -posting.amount), (posting.credit, posting.amount)] {
                if let Account::System { account } = account {
                    add(conn, posting.currency.code(), account.name(), delta, event.position).await?;
                }
            }
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
        "INSERT INTO rm_system_accounts (currency, account, balance, position) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (currency, account) DO UPDATE SET balance = rm_system_accounts.balance + EXCLUDED.balance, \
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
