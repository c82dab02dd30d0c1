use async_trait::async_trait;
use domain::accounts::Account;
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

use crate::{occurred_at, postings_of, Projection};

/// `rm_postings`: the double-entry journal, one row per posting of every wallet event and chain movement, keyed
/// by the event's position and the posting's index within it. A trial balance at position N
/// is the sum of the rows up to N (DESIGN.md section 3).
pub struct Journal;

#[async_trait]
impl Projection for Journal {
    fn name(&self) -> &'static str {
        "journal"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_postings"]
    }

    /// Postings that move nothing or move money to the account they came from are bugs: the
    /// table's CHECKs refuse them, and the projector stops there (logging and retrying) rather than record one.
    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let postings = postings_of(event)?;
        if postings.is_empty() {
            return Ok(());
        }
        let occurred_at = occurred_at(event)?;
        for (index, posting) in postings.iter().enumerate() {
            let index = i16::try_from(index)
                .map_err(|_| StoreError::corrupt(format!("position {}: too many postings", event.position)))?;
            sqlx::query(
                "INSERT INTO rm_postings (position, posting_index, currency, debit_account, credit_account, amount, occurred_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(event.position)
            .bind(index)
            .bind(posting.currency.code())
            .bind(account_name(posting.debit))
            .bind(account_name(posting.credit))
            .bind(posting.amount)
            .bind(occurred_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn apply_batch(&self, conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        Journal::insert_batch(conn, events).await
    }
}

impl Journal {
    /// Every posting of a batch in one insert.
    pub(crate) async fn insert_batch(conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let mut rows = PostingRows::default();
        for event in events {
            let postings = postings_of(event)?;
            if postings.is_empty() {
                continue;
            }
            let occurred_at = occurred_at(event)?;
            for (index, posting) in postings.iter().enumerate() {
                rows.positions.push(event.position);
                rows.indexes.push(index as i16);
                rows.currencies.push(posting.currency.code().to_string());
                rows.debits.push(account_name(posting.debit));
                rows.credits.push(account_name(posting.credit));
                rows.amounts.push(posting.amount);
                rows.occurred_at.push(occurred_at);
            }
        }
        if rows.positions.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO rm_postings (position, posting_index, currency, debit_account, credit_account, amount, occurred_at) \
             SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::text[], $4::text[], $5::text[], $6::numeric[], \
                                  $7::timestamptz[])",
        )
        .bind(rows.positions)
        .bind(rows.indexes)
        .bind(rows.currencies)
        .bind(rows.debits)
        .bind(rows.credits)
        .bind(rows.amounts)
        .bind(rows.occurred_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[derive(Default)]
struct PostingRows {
    positions: Vec<i64>,
    indexes: Vec<i16>,
    currencies: Vec<String>,
    debits: Vec<String>,
    credits: Vec<String>,
    amounts: Vec<rust_decimal::Decimal>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
}

/// An account as the journal names it: `wallet:<uuid>` or `system:<name>`.
pub(crate) fn account_name(account: Account) -> String {
    match account {
        Account::Wallet { wallet_id } => format!("wallet:{wallet_id}"),
        Account::System { account } => format!("system:{}", account.name()),
    }
}

#[cfg(test)]
mod tests {
    use domain::accounts::SystemAccount;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn accounts_are_named_by_kind() {
        let wallet_id = Uuid::nil();
        let cases = [
            (Account::Wallet { wallet_id }, "wallet:00000000-0000-0000-0000-000000000000"),
            (Account::System { account: SystemAccount::External }, "system:external"),
            (Account::System { account: SystemAccount::Transit }, "system:transit"),
            (Account::System { account: SystemAccount::Fees }, "system:fees"),
        ];
        for (account, name) in cases {
            assert_eq!(account_name(account), name);
        }
    }
}
