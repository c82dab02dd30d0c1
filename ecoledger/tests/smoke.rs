//! The harness itself works: a server starts, a user registers and is projected.

mod common;

use std::process::Stdio;

use common::TestApp;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_registered_user_is_projected_with_four_empty_wallets() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    assert_eq!(alice.wallets.len(), 4);
    let position = app.head_position().await;
    app.wait_for_projections(position).await;
    let reply = app.get(&format!("/api/v1/users/{}/wallets", alice.id), &alice.token).await;
    assert_eq!(reply.status, 200);
    let balances: Vec<&str> = reply.body.as_array().unwrap().iter().map(|w| w["balance"].as_str().unwrap()).collect();
    assert_eq!(balances, ["0.00", "0.00", "0.000000000000000000", "0.000"]);
    assert_eq!(reply.header("ledger-position").unwrap().parse::<i64>().unwrap(), position);
}

#[tokio::test]
async fn the_databases_ledger_scale_agrees_with_the_domains_currency_scales() {
    let db = common::TestDb::create().await;
    for currency in domain::Currency::ALL {
        let scale: i32 =
            sqlx::query_scalar("SELECT ledger_scale($1)").bind(currency.code()).fetch_one(&db.pool).await.unwrap();
        assert_eq!(scale as u32, currency.scale(), "{currency}");
    }
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_terminal_colour_codes() {
    let db = common::TestDb::create().await;
    let mut child = common::serve_command(&db, &common::unique_prefix(), "api")
        .env("ECOLEDGER_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ecoledger binary starts");
    common::wait_until_listening(&mut child).await;
    child.kill().await.expect("the server stops");
    let mut logs = String::new();
    child.stderr.take().expect("piped stderr").read_to_string(&mut logs).await.expect("stderr readable");

    assert!(logs.contains("ecoledger serving"), "the startup line is logged: {logs}");
    assert!(!logs.contains('\x1b'), "no escape codes in: {logs:?}");
}
