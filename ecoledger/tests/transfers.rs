//! Transfers end to end: both steps settle in the request's one transaction, refusals answer
//! at once, the books balance.

mod common;

use common::{eventually, TestApp, TestUser};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

async fn transfer(app: &TestApp, from: &TestUser, body: Value) -> common::Reply {
    app.post("/api/v1/transfers", &from.token, body).await
}

/// Waits until the transfer's read model shows a final status, and returns the view as of
/// every projection it joins.
async fn settled(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let position = eventually("the transfer to settle", || async {
        let reply = app.get(&format!("/api/v1/transfers/{id}"), &user.token).await;
        (reply.status == StatusCode::OK && reply.body["status"] != "pending").then_some(app.head_position().await)
    })
    .await;
    app.get(&format!("/api/v1/transfers/{id}?min_position={position}"), &user.token).await.body
}

async fn balance(app: &TestApp, user: &TestUser, wallet: Uuid, min_position: i64) -> String {
    let reply = app.get(&format!("/api/v1/wallets/{wallet}?min_position={min_position}"), &user.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["balance"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_transfer_by_username_moves_money_through_transit_and_completes() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    app.deposit(&admin, alice.wallet("EUR"), "100").await;
    let body = json!({"from_wallet_id": alice.wallet("EUR"), "amount": "30.25", "to_username": "Bob", "currency": "EUR", "memo": "rent"});
    let reply = transfer(&app, &alice, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "completed", "settled before the answer");
    let id = reply.body["id"].as_str().unwrap().to_string();
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xact_id::text) FROM events WHERE canonical LIKE '%' || $1 || '%'")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(transactions, 1, "debit, credit and the transfer's events commit together");
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(sagas, 0, "nothing is left for a saga");
    assert_eq!(reply.header("location").unwrap(), format!("/api/v1/transfers/{id}"));
    let view = settled(&app, &alice, &id).await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["to_username"], "bob");
    assert_eq!(view["memo"], "rent");
    assert!(view["to_wallet_id"].is_null(), "the sender does not see the recipient's wallet");
    let received = app.get(&format!("/api/v1/transfers/{id}"), &bob.token).await;
    assert_eq!(received.body["to_wallet_id"], json!(bob.wallet("EUR")));
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    assert_eq!(balance(&app, &alice, alice.wallet("EUR"), head).await, "69.75");
    assert_eq!(balance(&app, &bob, bob.wallet("EUR"), head).await, "30.25");
    let transit: Option<rust_decimal::Decimal> =
        sqlx::query_scalar("SELECT balance FROM rm_system_accounts WHERE currency = 'EUR' AND account = 'transit'")
            .fetch_optional(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(transit.unwrap_or_default(), rust_decimal::Decimal::ZERO, "transit is empty once settled");
}

#[tokio::test]
async fn refusals_answer_at_once_and_move_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    app.deposit(&admin, alice.wallet("EUR"), "10").await;
    let from = alice.wallet("EUR");
    let cases = [
        (
            json!({"from_wallet_id": from, "amount": "10.01", "to_username": "bob", "currency": "EUR"}),
            422,
            "insufficient_funds",
        ),
        (
            json!({"from_wallet_id": from, "amount": "1", "to_username": "bob", "currency": "USD"}),
            422,
            "currency_mismatch",
        ),
        (
            json!({"from_wallet_id": from, "amount": "1", "to_wallet_id": bob.wallet("CARBON")}),
            422,
            "currency_mismatch",
        ),
        (json!({"from_wallet_id": from, "amount": "1", "to_wallet_id": from}), 422, "same_wallet"),
        (
            json!({"from_wallet_id": from, "amount": "1", "to_username": "nobody", "currency": "EUR"}),
            422,
            "recipient_not_found",
        ),
        (json!({"from_wallet_id": from, "amount": "1", "to_wallet_id": Uuid::new_v4()}), 422, "recipient_not_found"),
        (
            json!({"from_wallet_id": bob.wallet("EUR"), "amount": "1", "to_username": "alice", "currency": "EUR"}),
            404,
            "wallet_not_found",
        ),
        (
            json!({"from_wallet_id": from, "amount": "1.001", "to_username": "bob", "currency": "EUR"}),
            422,
            "amount_precision_exceeded",
        ),
        (json!({"from_wallet_id": from, "amount": "1", "to_username": "bob"}), 422, "validation_failed"),
        (
            json!({"from_wallet_id": from, "amount": "1", "to_username": "bob", "currency": "EUR", "to_wallet_id": from}),
            422,
            "validation_failed",
        ),
    ];
    let events = app.event_count().await;
    for (body, status, code) in cases {
        let reply = transfer(&app, &alice, body.clone()).await;
        assert_eq!((reply.status.as_u16(), reply.code()), (status, code), "{body}: {:?}", reply.body);
    }
    let frozen = app.post(&format!("/api/v1/wallets/{from}/freeze"), &admin.token, json!({"reason": "review"})).await;
    assert_eq!(frozen.status, StatusCode::OK);
    let events = events + 1;
    let reply =
        transfer(&app, &alice, json!({"from_wallet_id": from, "amount": "1", "to_username": "bob", "currency": "EUR"}))
            .await;
    assert_eq!((reply.status.as_u16(), reply.code()), (422, "wallet_frozen"));
    assert_eq!(app.event_count().await, events, "refusals write nothing");
}

#[tokio::test]
async fn a_destination_that_refuses_the_credit_fails_the_transfer_and_returns_the_money() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    app.deposit(&admin, alice.wallet("EUR"), "5").await;
    // Bob's wallet at the ledger's balance limit refuses any credit (balance_overflow).
    for _ in 0..5 {
        app.deposit(&admin, bob.wallet("EUR"), "10000000000").await;
    }
    let reply = transfer(
        &app,
        &alice,
        json!({"from_wallet_id": alice.wallet("EUR"), "amount": "2", "to_username": "bob", "currency": "EUR"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(
        (reply.body["status"].as_str(), reply.body["reason"].as_str()),
        (Some("failed"), Some("balance_overflow"))
    );
    let view = settled(&app, &alice, reply.body["id"].as_str().unwrap()).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["reason"], "balance_overflow");
    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    assert_eq!(balance(&app, &alice, alice.wallet("EUR"), head).await, "5.00");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM rm_wallet_entries WHERE wallet_id = $1 ORDER BY position")
            .bind(alice.wallet("EUR"))
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(kinds, ["deposit", "transfer_out", "transfer_returned"]);
}

#[tokio::test]
async fn each_party_sees_its_own_line_of_a_transfer_in_the_history() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    app.deposit(&admin, alice.wallet("EUR"), "10").await;
    let body = json!({"from_wallet_id": alice.wallet("EUR"), "amount": "4", "to_username": "bob", "currency": "EUR"});
    let id = transfer(&app, &alice, body).await.body["id"].as_str().unwrap().to_string();
    settled(&app, &alice, &id).await;
    let head = app.head_position().await;
    for (user, kind) in [(&alice, "transfer_out"), (&bob, "transfer_in")] {
        let line = app.get(&format!("/api/v1/transactions/{id}?min_position={head}"), &user.token).await;
        assert_eq!(line.status, StatusCode::OK, "{:?}", line.body);
        assert_eq!((line.body["kind"].as_str(), line.body["status"].as_str()), (Some(kind), Some("completed")));
        assert_eq!(line.body["wallet_id"], json!(user.wallet("EUR")));
    }
    let stranger = app.register("carol").await;
    let hidden = app.get(&format!("/api/v1/transactions/{id}?min_position={head}"), &stranger.token).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
}
