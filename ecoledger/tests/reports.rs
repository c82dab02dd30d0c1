//! The double-entry journal and the trial balance over HTTP (DESIGN.md sections 3 and 5):
//! every currency sums to zero with each account's debits and credits as the movements say,
//! at the checkpoint, at a past position or at a point in time; statements at a point in
//! time; roles and bad parameters; and a replay reproduces the journal row for row.

mod common;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use common::{Reply, TestApp, TestUser};
use domain::user::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const TRIAL_BALANCE: &str = "/api/v1/reports/trial-balance";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Asserts an RFC 9457 problem document with `status` and `code`.
#[track_caller]
fn assert_problem(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{code}: {:?}", reply.body);
    assert_eq!(reply.code(), code, "{:?}", reply.body);
    assert_eq!(reply.header("content-type").as_deref(), Some("application/problem+json"));
}

fn transaction_id(reply: &Reply) -> Uuid {
    reply.body["transaction_id"].as_str().expect("a transaction id").parse().expect("uuid")
}

/// Requests a withdrawal of `user`'s own wallet (asserting 201).
async fn withdraw(app: &TestApp, user: &TestUser, wallet: Uuid, amount: &str) -> Reply {
    let body = json!({"amount": amount, "reference": format!("payout-{}", Uuid::new_v4()), "destination": "IBAN DE89"});
    let reply = app.post(&format!("/api/v1/wallets/{wallet}/withdrawals"), &user.token, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "withdraw: {:?}", reply.body);
    reply
}

/// Posts an admin action (complete, fail, reversal), asserting `status`.
async fn admin_post(app: &TestApp, admin: &TestUser, path: &str, body: Value, status: StatusCode) -> Reply {
    let reply = app.post(path, &admin.token, body).await;
    assert_eq!(reply.status, status, "{path}: {:?}", reply.body);
    reply
}

/// The trial balance at `query` (e.g. `?as_of_position=3`), asserting 200 and a Ledger-Position.
async fn trial_balance(app: &TestApp, reader: &TestUser, query: &str) -> Value {
    let reply = app.get(&format!("{TRIAL_BALANCE}{query}"), &reader.token).await;
    assert_eq!(reply.status, StatusCode::OK, "trial balance{query}: {:?}", reply.body);
    let reached: i64 = reply.header("ledger-position").expect("a Ledger-Position header").parse().expect("a number");
    assert!(reached >= reply.body["as_of_position"].as_i64().expect("as_of_position"), "{:?}", reply.body);
    reply.body
}

/// A currency's accounts as (account, debits, credits, balance), in the answer's order.
fn accounts(report: &Value, currency: &str) -> Vec<(String, String, String, String)> {
    let field = |account: &Value, name: &str| account[name].as_str().expect(name).to_string();
    report["currencies"][currency]["accounts"]
        .as_array()
        .unwrap_or_else(|| panic!("{currency} in {report}"))
        .iter()
        .map(|a| (field(a, "account"), field(a, "debits"), field(a, "credits"), field(a, "balance")))
        .collect()
}

/// The expected rows, sorted by account as the answer must be.
fn expected(rows: &[(String, &str, &str, &str)]) -> Vec<(String, String, String, String)> {
    let mut rows: Vec<_> =
        rows.iter().map(|(a, d, c, b)| (a.clone(), d.to_string(), c.to_string(), b.to_string())).collect();
    rows.sort();
    rows
}

fn wallet(id: Uuid) -> String {
    format!("wallet:{id}")
}

fn system(name: &str) -> String {
    format!("system:{name}")
}

fn currency_codes(report: &Value) -> Vec<String> {
    report["currencies"].as_object().expect("currencies").keys().cloned().collect()
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What [`movements`] did.
struct Movements {
    admin: TestUser,
    alice: TestUser,
    bob: TestUser,
    /// Position after the two EUR deposits (alice 100.00, bob 50.00), before anything else.
    deposits_position: i64,
}

/// EUR: deposits to alice (100.00) and bob (50.00); alice withdraws 30.00 (completed), bob
/// 20.00 (failed); bob's deposit is reversed, then alice's completed withdrawal. CARBON: a
/// deposit of 5.000 to alice.
async fn movements(app: &TestApp) -> Movements {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    app.deposit(&admin, alice.wallet("EUR"), "100.00").await;
    let bob_deposit = app.deposit(&admin, bob.wallet("EUR"), "50.00").await;
    let deposits_position = bob_deposit.position();

    let completed = transaction_id(&withdraw(app, &alice, alice.wallet("EUR"), "30.00").await);
    admin_post(app, &admin, &format!("/api/v1/withdrawals/{completed}/complete"), json!({}), StatusCode::OK).await;
    let failed = transaction_id(&withdraw(app, &bob, bob.wallet("EUR"), "20.00").await);
    let reason = json!({"reason": "bank refused"});
    admin_post(app, &admin, &format!("/api/v1/withdrawals/{failed}/fail"), reason, StatusCode::OK).await;

    let reason = json!({"reason": "booked in error"});
    for original in [transaction_id(&bob_deposit), completed] {
        let path = format!("/api/v1/transactions/{original}/reversal");
        admin_post(app, &admin, &path, reason.clone(), StatusCode::CREATED).await;
    }
    app.deposit(&admin, alice.wallet("CARBON"), "5.000").await;
    Movements { admin, alice, bob, deposits_position }
}

/// Alice's EUR wallet gets 100.00, then, after a moment in between, 25.00. Returns the admin,
/// alice, the positions of both deposits and the moment between them.
async fn two_deposits_apart(app: &TestApp) -> (TestUser, TestUser, i64, DateTime<Utc>, i64) {
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let first = app.deposit(&admin, alice.wallet("EUR"), "100.00").await.position();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = app.deposit(&admin, alice.wallet("EUR"), "25.00").await.position();
    app.wait_for_projections(second).await;
    (admin, alice, first, between, second)
}

// ---------------------------------------------------------------------------------------------
// The trial balance
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_trial_balance_sums_to_zero_per_currency_with_each_accounts_debits_and_credits() {
    let app = TestApp::spawn().await;
    let m = movements(&app).await;
    let auditor = app.staff("auditor", Role::Auditor).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;

    let report = trial_balance(&app, &auditor, "").await;

    assert_eq!(report["as_of_position"], head, "without parameters: the journal's checkpoint");
    assert!(report.get("as_of").is_none(), "{report}");
    assert_eq!(report["balanced"], true);
    assert_eq!(currency_codes(&report), vec!["CARBON", "EUR"], "every currency that moved, and only those");
    let (alice, bob) = (wallet(m.alice.wallet("EUR")), wallet(m.bob.wallet("EUR")));
    let eur = expected(&[
        // Deposits 100 + 50 in; out: 30 paid out, 50 reversed; 30 back by the payout's reversal.
        (system("external"), "180.00", "80.00", "-100.00"),
        (system("transit"), "50.00", "50.00", "0.00"),
        (alice, "30.00", "130.00", "100.00"),
        (bob, "70.00", "70.00", "0.00"),
    ]);
    assert_eq!(accounts(&report, "EUR"), eur);
    assert_eq!(report["currencies"]["EUR"]["total"], "0.00");
    let carbon = expected(&[
        (system("external"), "5.000", "0.000", "-5.000"),
        (wallet(m.alice.wallet("CARBON")), "0.000", "5.000", "5.000"),
    ]);
    assert_eq!(accounts(&report, "CARBON"), carbon);
    assert_eq!(report["currencies"]["CARBON"]["total"], "0.000");
}

#[tokio::test]
async fn each_wallets_trial_balance_figure_is_its_balance() {
    let app = TestApp::spawn().await;
    let m = movements(&app).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;

    let report = trial_balance(&app, &m.admin, &format!("?min_position={head}")).await;

    for (user, currency) in [(&m.alice, "EUR"), (&m.bob, "EUR"), (&m.alice, "CARBON")] {
        let id = user.wallet(currency);
        let view = app.get(&format!("/api/v1/wallets/{id}"), &user.token).await;
        let row = accounts(&report, currency).into_iter().find(|row| row.0 == wallet(id)).expect("the wallet's row");
        assert_eq!(row.3, view.body["balance"].as_str().expect("a balance"), "{currency} wallet of {}", user.username);
    }
}

#[tokio::test]
async fn a_past_position_gives_the_figures_as_they_were_then() {
    let app = TestApp::spawn().await;
    let m = movements(&app).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;

    let report = trial_balance(&app, &m.admin, &format!("?as_of_position={}", m.deposits_position)).await;

    assert_eq!(report["as_of_position"], m.deposits_position);
    assert_eq!(report["balanced"], true);
    assert_eq!(currency_codes(&report), vec!["EUR"], "CARBON moved later");
    let eur = expected(&[
        (system("external"), "150.00", "0.00", "-150.00"),
        (wallet(m.alice.wallet("EUR")), "0.00", "100.00", "100.00"),
        (wallet(m.bob.wallet("EUR")), "0.00", "50.00", "50.00"),
    ]);
    assert_eq!(accounts(&report, "EUR"), eur);
    let empty = trial_balance(&app, &m.admin, "?as_of_position=0").await;
    assert_eq!((empty["as_of_position"].clone(), empty["balanced"].clone()), (json!(0), json!(true)));
    assert_eq!(empty["currencies"], json!({}));
}

#[tokio::test]
async fn a_position_the_journal_has_not_reached_is_awaited() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;

    let path = format!("{TRIAL_BALANCE}?as_of_position={}", head + 1);
    let deposit_later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.deposit(&admin, alice.wallet("EUR"), "12.34").await
    };
    let (reply, deposit) = tokio::join!(app.get(&path, &admin.token), deposit_later);

    assert_eq!(deposit.position(), head + 1, "nothing else wrote in between");
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["as_of_position"], head + 1);
    let eur = expected(&[
        (system("external"), "12.34", "0.00", "-12.34"),
        (wallet(alice.wallet("EUR")), "0.00", "12.34", "12.34"),
    ]);
    assert_eq!(accounts(&reply.body, "EUR"), eur);
}

#[tokio::test]
async fn a_position_beyond_what_the_journal_reaches_in_time_answers_projection_lagging() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let head = app.head_position().await;

    let reply = app.get(&format!("{TRIAL_BALANCE}?as_of_position={}", head + 1000), &admin.token).await;

    assert_problem(&reply, 503, "projection_lagging");
    assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
}

#[tokio::test]
async fn a_trial_balance_as_of_a_time_stands_at_the_last_position_that_occurred_by_then() {
    let app = TestApp::spawn().await;
    let (admin, alice, first, between, second) = two_deposits_apart(&app).await;

    let report = trial_balance(&app, &admin, &format!("?as_of={}", rfc3339(between))).await;

    assert_eq!(report["as_of_position"], first);
    let echoed: DateTime<Utc> = report["as_of"].as_str().expect("as_of echoed").parse().expect("RFC 3339");
    assert_eq!(echoed, between.trunc_subsecs(6));
    assert_eq!(
        accounts(&report, "EUR")[1],
        (wallet(alice.wallet("EUR")), "0.00".into(), "100.00".into(), "100.00".into())
    );
    let now = trial_balance(&app, &admin, &format!("?as_of={}", rfc3339(Utc::now()))).await;
    assert_eq!(now["as_of_position"], second);
    assert_eq!(accounts(&now, "EUR")[1].3, "125.00");
    let before = trial_balance(&app, &admin, "?as_of=2000-01-01T00:00:00Z").await;
    assert_eq!((before["as_of_position"].clone(), before["currencies"].clone()), (json!(0), json!({})));
}

#[tokio::test]
async fn only_auditors_and_admins_read_the_trial_balance() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let auditor = app.staff("auditor", Role::Auditor).await;
    let alice = app.register("alice").await;

    assert_problem(&app.get(TRIAL_BALANCE, &alice.token).await, 403, "forbidden");
    let refused = app.get(&format!("{TRIAL_BALANCE}?as_of_position=abc"), &alice.token).await;
    assert_problem(&refused, 403, "forbidden");
    for reader in [&admin, &auditor] {
        trial_balance(&app, reader, "").await;
    }
    let anonymous = app.request(reqwest::Method::GET, TRIAL_BALANCE, None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{:?}", anonymous.body);
}

#[tokio::test]
async fn bad_report_parameters_are_refused_with_validation_failed_naming_the_field() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let entries = format!("/api/v1/wallets/{}/entries", alice.wallet("EUR"));
    let cases = [
        (format!("{TRIAL_BALANCE}?as_of_position=-1"), "as_of_position"),
        (format!("{TRIAL_BALANCE}?as_of_position=abc"), "as_of_position"),
        (format!("{TRIAL_BALANCE}?as_of_position=99999999999999999999"), "as_of_position"),
        (format!("{TRIAL_BALANCE}?as_of_position="), "as_of_position"),
        (format!("{TRIAL_BALANCE}?as_of=yesterday"), "as_of"),
        (format!("{TRIAL_BALANCE}?as_of=2026-13-01T00:00:00Z"), "as_of"),
        (format!("{TRIAL_BALANCE}?as_of=2026-01-01"), "as_of"),
        (format!("{TRIAL_BALANCE}?as_of_position=1&as_of=2026-01-01T00:00:00Z"), "as_of"),
        (format!("{TRIAL_BALANCE}?min_position=-3"), "min_position"),
        (format!("{entries}?as_of=noon"), "as_of"),
    ];
    for (path, field) in cases {
        let reply = app.get(&path, &admin.token).await;
        assert_problem(&reply, 422, "validation_failed");
        assert_eq!(reply.body["errors"][0]["field"], field, "{path}: {:?}", reply.body);
    }
}

// ---------------------------------------------------------------------------------------------
// The journal
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_replay_reproduces_the_journal_row_for_row() {
    let app = TestApp::spawn().await;
    movements(&app).await;
    let head = app.head_position().await;
    app.wait_for_projections(head).await;

    let report =
        projections::replay_into_schema(&app.store, &projections::all(), "journal_replay", head).await.expect("replay");

    assert_eq!(report.position, head);
    let (live, replayed, only_live, only_replayed): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM public.rm_postings), (SELECT count(*) FROM journal_replay.rm_postings), \
                (SELECT count(*) FROM (SELECT * FROM public.rm_postings EXCEPT ALL SELECT * FROM journal_replay.rm_postings) a), \
                (SELECT count(*) FROM (SELECT * FROM journal_replay.rm_postings EXCEPT ALL SELECT * FROM public.rm_postings) b)",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("compare journals");
    assert_eq!(live, 9, "one posting per money-moving event: 3 deposits, 2 requests, complete, fail, 2 reversals");
    assert_eq!((replayed, only_live, only_replayed), (live, 0, 0));
}

#[tokio::test]
async fn every_posting_records_its_events_time_and_both_sides() {
    let app = TestApp::spawn().await;
    let (_, alice, first, _, _) = two_deposits_apart(&app).await;

    let (index, currency, debit, credit, amount, occurred_at): (i16, String, String, String, String, DateTime<Utc>) =
        sqlx::query_as(
            "SELECT posting_index, currency, debit_account, credit_account, amount::text, occurred_at \
             FROM rm_postings WHERE position = $1",
        )
        .bind(first)
        .fetch_one(&app.db.pool)
        .await
        .expect("the first deposit's posting");

    assert_eq!((index, currency.as_str(), debit.as_str()), (0, "EUR", "system:external"));
    assert_eq!((credit, amount), (wallet(alice.wallet("EUR")), "100.00".to_string()));
    let audited: DateTime<Utc> = sqlx::query_scalar("SELECT occurred_at FROM rm_audit_events WHERE position = $1")
        .bind(first)
        .fetch_one(&app.db.pool)
        .await
        .expect("the audit row");
    assert_eq!(occurred_at, audited, "the event's own time, not the projector's clock");
}

// ---------------------------------------------------------------------------------------------
// Statements at a point in time
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_statement_as_of_a_time_holds_only_the_entries_that_occurred_by_then() {
    let app = TestApp::spawn().await;
    let (_, alice, first, between, second) = two_deposits_apart(&app).await;
    let entries = format!("/api/v1/wallets/{}/entries", alice.wallet("EUR"));
    let positions = |reply: &Reply| -> Vec<i64> {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body["items"].as_array().expect("items").iter().map(|e| e["position"].as_i64().unwrap()).collect()
    };

    let then = app.get(&format!("{entries}?as_of={}", rfc3339(between)), &alice.token).await;

    assert_eq!(positions(&then), vec![first]);
    assert_eq!(then.body["items"][0]["balance_after"], "100.00");
    assert_eq!(positions(&app.get(&entries, &alice.token).await), vec![first, second]);
    let before = app.get(&format!("{entries}?as_of=2000-01-01T00:00:00%2B02:00"), &alice.token).await;
    assert_eq!(positions(&before), Vec::<i64>::new());
}
