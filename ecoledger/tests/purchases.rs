//! Listings and purchases end to end: a seller lists credits, a buyer buys part of them.

mod common;

use common::{eventually, TestApp, TestUser};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn become_seller(app: &TestApp, user: &TestUser) {
    let body = json!({"is_seller": true, "is_buyer": true});
    let reply =
        app.request(Method::PUT, &format!("/api/v1/users/{}/profile", user.id), Some(&user.token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

fn listing(quantity: &str, unit_price: &str) -> Value {
    json!({
        "quantity": quantity,
        "pricing": {"kind": "fixed", "unit_price": unit_price, "currency": "EUR"},
        "credit": {"project_id": "VCS-1234", "registry": "Verra", "vintage": 2024},
    })
}

async fn wallet(app: &TestApp, user: &TestUser, currency: &str, min_position: i64) -> Value {
    let path = format!("/api/v1/wallets/{}?min_position={min_position}", user.wallet(currency));
    app.get(&path, &user.token).await.body
}

#[tokio::test]
async fn a_buyer_buys_part_of_a_fixed_price_listing_and_everyone_is_paid() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let seller = app.register("seller").await;
    let buyer = app.register("buyer").await;
    become_seller(&app, &seller).await;
    app.deposit(&admin, seller.wallet("CARBON"), "10").await;
    app.deposit(&admin, buyer.wallet("EUR"), "100").await;

    let listed = app.post("/api/v1/announcements", &seller.token, listing("10", "12.50")).await;
    assert_eq!(listed.status, StatusCode::CREATED, "{:?}", listed.body);
    let listing_id = listed.body["id"].as_str().unwrap().to_string();

    let order = json!({"announcement_id": listing_id, "quantity": "2.5", "max_total": "40"});
    let bought = app.post("/api/v1/purchases", &buyer.token, order).await;
    assert_eq!(bought.status, StatusCode::ACCEPTED, "{:?}", bought.body);
    assert_eq!((bought.body["subtotal"].as_str(), bought.body["fee"].as_str()), (Some("31.25"), Some("0.31")));
    assert_eq!(bought.body["total"], "31.56");
    let id = bought.body["id"].as_str().unwrap().to_string();
    let view = eventually("the purchase to settle", || async {
        let reply = app.get(&format!("/api/v1/purchases/{id}"), &buyer.token).await;
        (reply.status == StatusCode::OK && reply.body["status"] != "pending").then_some(reply.body)
    })
    .await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["price_source"], "listing");

    let head = app.head_position().await;
    assert_eq!(wallet(&app, &buyer, "EUR", head).await["balance"], "68.44");
    assert_eq!(wallet(&app, &buyer, "CARBON", head).await["balance"], "2.500");
    assert_eq!(wallet(&app, &seller, "EUR", head).await["balance"], "31.25");
    let seller_carbon = wallet(&app, &seller, "CARBON", head).await;
    assert_eq!((seller_carbon["balance"].as_str(), seller_carbon["held"].as_str()), (Some("7.500"), Some("7.500")));
    let fees: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT balance FROM rm_system_accounts WHERE currency = 'EUR' AND account = 'fees'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(fees, "0.31".parse().unwrap());
    let shown = app.get(&format!("/api/v1/announcements/{listing_id}?min_position={head}"), &buyer.token).await;
    assert_eq!((shown.body["sold"].as_str(), shown.body["available"].as_str()), (Some("2.500"), Some("7.500")));
}

#[tokio::test]
async fn refusals_known_up_front_answer_at_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let seller = app.register("seller").await;
    let buyer = app.register("buyer").await;
    become_seller(&app, &seller).await;
    app.deposit(&admin, seller.wallet("CARBON"), "10").await;
    app.deposit(&admin, buyer.wallet("EUR"), "20").await;
    let mut terms = listing("10", "12.50");
    terms["min_fill"] = json!("1");
    let listed = app.post("/api/v1/announcements", &seller.token, terms).await;
    let id = listed.body["id"].as_str().unwrap().to_string();
    let cases = [
        (&buyer, json!({"announcement_id": id, "quantity": "1", "max_total": "12.00"}), 422, "max_total_exceeded"),
        (&seller, json!({"announcement_id": id, "quantity": "1", "max_total": "99"}), 422, "own_listing"),
        (&buyer, json!({"announcement_id": id, "quantity": "0.5", "max_total": "99"}), 422, "below_min_fill"),
        (&buyer, json!({"announcement_id": id, "quantity": "11", "max_total": "999"}), 422, "insufficient_quantity"),
        (&buyer, json!({"announcement_id": id, "quantity": "2", "max_total": "99"}), 422, "insufficient_funds"),
        (
            &buyer,
            json!({"announcement_id": uuid::Uuid::new_v4(), "quantity": "1", "max_total": "99"}),
            404,
            "announcement_not_found",
        ),
    ];
    let events = app.event_count().await;
    for (who, body, status, code) in cases {
        let reply = app.post("/api/v1/purchases", &who.token, body.clone()).await;
        assert_eq!((reply.status.as_u16(), reply.code()), (status, code), "{body}: {:?}", reply.body);
    }
    assert_eq!(app.event_count().await, events, "refusals write nothing");
    let not_seller = app.post("/api/v1/announcements", &buyer.token, listing("1", "1")).await;
    assert_eq!((not_seller.status.as_u16(), not_seller.code()), (403, "not_a_seller"));
}
