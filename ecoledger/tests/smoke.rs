//! The harness itself works: a server starts, a user registers and is projected.

mod common;

use common::TestApp;

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
