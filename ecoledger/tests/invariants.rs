//! The invariant checker of `ecoledger bench faults` (bench::invariants), tested on ledgers
//! broken on purpose: each kind of damage fails the rule named after it.

mod common;

use bench::invariants::{
    self, Acknowledged, Report, ACKNOWLEDGED_NOT_LOST, CHAINS_VERIFY, NO_DOUBLE_POSTING, REPLAY_EQUAL, RULES,
    SAGAS_FINISHED, TRIAL_BALANCE,
};
use common::{eventually, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// A small ledger, settled: two deposits to alice, one transfer to bob.
struct Ledger {
    app: TestApp,
    acknowledged: Vec<Acknowledged>,
    /// The first deposit's transaction id.
    first_deposit: Uuid,
}

impl Ledger {
    async fn new() -> Ledger {
        let app = TestApp::spawn().await;
        let admin = app.admin().await;
        let alice = app.register("alice").await;
        app.register("bob").await;
        let mut acknowledged = Vec::new();
        for amount in ["100.00", "20.00"] {
            let reply = app.deposit(&admin, alice.wallet("EUR"), amount).await;
            acknowledged.push(Acknowledged::deposit(uuid(&reply.body["transaction_id"])));
        }
        let body =
            json!({"from_wallet_id": alice.wallet("EUR"), "amount": "30.00", "to_username": "bob", "currency": "EUR"});
        let reply = app.post("/api/v1/transfers", &alice.token, body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        acknowledged.push(Acknowledged::transfer(uuid(&reply.body["id"])));
        let first_deposit = acknowledged[0].id;
        let ledger = Ledger { app, acknowledged, first_deposit };
        ledger.settle().await;
        ledger
    }

    /// Waits for the sagas to finish and every projection to reach the head.
    async fn settle(&self) {
        let pool = self.app.db.pool.clone();
        eventually("the sagas to finish", || {
            let pool = pool.clone();
            async move {
                let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE status = 'pending'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                (pending == 0).then_some(())
            }
        })
        .await;
        self.app.wait_for_projections(self.app.head_position().await).await;
    }

    async fn check(&self) -> Report {
        invariants::check(&self.app.db.pool, &self.acknowledged).await
    }

    async fn execute(&self, sql: &str) {
        let changed = sqlx::query(sql).execute(&self.app.db.pool).await.expect("statement runs");
        assert_eq!(changed.rows_affected(), 1, "{sql} changes one row");
    }
}

fn uuid(value: &serde_json::Value) -> Uuid {
    value.as_str().expect("an id").parse().expect("a uuid")
}

/// Asserts that exactly the rules `expected` failed, each with a problem naming `needle`
/// somewhere in its problems.
fn assert_fails(report: &Report, expected: &[&str], needle: &str) {
    let mut failed = report.failed();
    failed.sort();
    let mut wanted = expected.to_vec();
    wanted.sort();
    assert_eq!(failed, wanted, "rules that failed:\n{report}");
    let named =
        expected.iter().any(|rule| report.rule(rule).expect("rule").problems.iter().any(|p| p.contains(needle)));
    assert!(named, "no problem names {needle}:\n{report}");
}

#[tokio::test]
async fn a_settled_ledger_keeps_every_invariant() {
    let ledger = Ledger::new().await;

    let report = ledger.check().await;

    assert!(report.ok(), "{report}");
    let names: Vec<&str> = report.rules.iter().map(|r| r.name).collect();
    assert_eq!(names, RULES);
}

#[tokio::test]
async fn an_acknowledged_deposit_whose_event_was_deleted_is_lost_and_breaks_the_chain() {
    let ledger = Ledger::new().await;
    let mut tx = ledger.app.db.pool.begin().await.expect("begin");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER").execute(&mut *tx).await.expect("disable triggers");
    let deleted = sqlx::query(
        "DELETE FROM events WHERE event_type = 'Deposited' AND canonical::jsonb #>> '{payload,Deposited,transaction_id}' = $1",
    )
    .bind(ledger.first_deposit.to_string())
    .execute(&mut *tx)
    .await
    .expect("delete");
    assert_eq!(deleted.rows_affected(), 1);
    sqlx::query("ALTER TABLE events ENABLE TRIGGER USER").execute(&mut *tx).await.expect("enable triggers");
    tx.commit().await.expect("commit");

    let report = ledger.check().await;

    for rule in [ACKNOWLEDGED_NOT_LOST, CHAINS_VERIFY, REPLAY_EQUAL] {
        assert!(report.failed().contains(&rule), "{rule} holds over a deleted event:\n{report}");
    }
    let lost = &report.rule(ACKNOWLEDGED_NOT_LOST).expect("rule").problems;
    assert!(lost.iter().any(|p| p.contains(&ledger.first_deposit.to_string())), "{report}");
}

#[tokio::test]
async fn a_duplicated_statement_line_is_a_posting_applied_twice() {
    let ledger = Ledger::new().await;
    ledger
        .execute(&format!(
            "INSERT INTO rm_wallet_entries SELECT wallet_id, position + 1000000, transaction_id, kind, amount, \
               balance_after, occurred_at FROM rm_wallet_entries WHERE transaction_id = '{}'",
            ledger.first_deposit
        ))
        .await;

    let report = ledger.check().await;

    assert_fails(&report, &[NO_DOUBLE_POSTING, REPLAY_EQUAL], &ledger.first_deposit.to_string());
}

#[tokio::test]
async fn a_system_balance_off_by_a_cent_fails_the_trial_balance() {
    let ledger = Ledger::new().await;
    ledger
        .execute(
            "UPDATE rm_system_accounts SET balance = balance + 0.01 WHERE currency = 'EUR' AND account = 'external'",
        )
        .await;

    let report = ledger.check().await;

    assert_fails(&report, &[TRIAL_BALANCE, REPLAY_EQUAL], "0.01");
}

#[tokio::test]
async fn a_pending_transfer_saga_is_unfinished() {
    let ledger = Ledger::new().await;
    let saga = Uuid::new_v4();
    // Due tomorrow, so the saga worker leaves it alone.
    ledger
        .execute(&format!(
            "INSERT INTO sagas (saga_id, kind, status, payload, next_attempt_at) \
             VALUES ('{saga}', 'transfer', 'pending', '{{}}', now() + interval '1 day')"
        ))
        .await;

    let report = ledger.check().await;

    assert_fails(&report, &[SAGAS_FINISHED], &saga.to_string());
}

#[tokio::test]
async fn an_acknowledged_command_that_was_never_written_is_lost() {
    let mut ledger = Ledger::new().await;
    let (deposit, transfer) = (Uuid::new_v4(), Uuid::new_v4());
    ledger.acknowledged.extend([Acknowledged::deposit(deposit), Acknowledged::transfer(transfer)]);

    let report = ledger.check().await;

    assert_fails(&report, &[ACKNOWLEDGED_NOT_LOST], &deposit.to_string());
    assert_fails(&report, &[ACKNOWLEDGED_NOT_LOST], &transfer.to_string());
}
