//! The chain flows' API without a chain node: linking addresses by signed challenges,
//! withdrawals queued for the bridge and the rules that refuse them up front, retirements and
//! their public certificates, and the suspense of unknown bridge-ins. The chain is "configured"
//! by writing its identity row, as the bridge would at its first start.

mod common;

use alloy::signers::local::PrivateKeySigner;
use common::chain::{
    as_bridge, balance, challenge, configure_chain, link, link_with, record_on_chain_retirement_and_deposit, sign,
    suspend_bridge_in, withdraw, DEV_CHAIN_ID,
};
use common::{eventually, SpawnOptions, TestApp};
use domain::wallet::{Wallet, WalletCommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test]
async fn an_address_links_once_to_its_holder_and_foreign_replayed_expired_or_taken_links_are_refused() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let refused = app.get("/api/v1/chain/challenge", &alice.token).await;
    assert_eq!(refused.code(), "chain_not_configured");
    configure_chain(&app).await;
    let (alice_key, other_key) = (PrivateKeySigner::random(), PrivateKeySigner::random());

    let first = challenge(&app, &alice).await;
    let message = first["message"].as_str().unwrap();
    assert!(message.contains(&format!("Chain ID: {DEV_CHAIN_ID}")) && message.contains(&alice.id.to_string()));
    let (nonce, signature) = (first["nonce"].as_str().unwrap(), sign(&alice_key, message).await);
    let alice_address = alice_key.address().to_string();
    let linked = link_with(&app, &alice, &alice_address, &signature, nonce).await;
    assert_eq!(linked.status, StatusCode::CREATED, "{:?}", linked.body);
    let replayed = link_with(&app, &alice, &alice_address, &signature, nonce).await;
    assert_eq!((replayed.status, replayed.code()), (StatusCode::CONFLICT, "challenge_used"));

    let second = challenge(&app, &alice).await;
    let foreign = sign(&other_key, second["message"].as_str().unwrap()).await;
    let other_address = other_key.address().to_string();
    let reply = link_with(&app, &alice, &alice_address, &foreign, second["nonce"].as_str().unwrap()).await;
    assert_eq!(reply.code(), "signature_mismatch", "signed by another key: {:?}", reply.body);
    let reply = link_with(&app, &alice, &other_address, &signature, second["nonce"].as_str().unwrap()).await;
    assert_eq!(reply.code(), "signature_mismatch", "a signature of another message: {:?}", reply.body);

    let expiring = challenge(&app, &alice).await;
    let expiring_nonce = expiring["nonce"].as_str().unwrap();
    sqlx::query("UPDATE chain_link_challenges SET expires_at = now() - interval '1 second' WHERE nonce = $1")
        .bind(expiring_nonce)
        .execute(&app.db.pool)
        .await
        .expect("expire");
    let late = sign(&other_key, expiring["message"].as_str().unwrap()).await;
    let reply = link_with(&app, &alice, &other_address, &late, expiring_nonce).await;
    assert_eq!(reply.code(), "challenge_expired");

    let bobs = challenge(&app, &bob).await;
    let bobs_signed = sign(&other_key, bobs["message"].as_str().unwrap()).await;
    let reply = link_with(&app, &alice, &other_address, &bobs_signed, bobs["nonce"].as_str().unwrap()).await;
    assert_eq!(reply.code(), "challenge_not_yours");

    let taken = challenge(&app, &bob).await;
    let with_alices_key = sign(&alice_key, taken["message"].as_str().unwrap()).await;
    let reply = link_with(&app, &bob, &alice_address, &with_alices_key, taken["nonce"].as_str().unwrap()).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::CONFLICT, "address_already_linked"));

    let listed = app.get(&format!("/api/v1/chain/addresses?min_position={}", linked.position()), &alice.token).await;
    let addresses: Vec<&str> = listed.body.as_array().unwrap().iter().map(|a| a["address"].as_str().unwrap()).collect();
    assert_eq!(addresses, vec![alice_address.to_lowercase().as_str()]);
    let bobs_list = app.get(&format!("/api/v1/chain/addresses?min_position={}", linked.position()), &bob.token).await;
    assert_eq!(bobs_list.body, json!([]), "bob sees none of alice's addresses");
}

#[tokio::test]
async fn without_a_nonce_the_challenge_that_was_signed_links_even_beside_a_newer_one_of_the_same_second() {
    let app = TestApp::spawn().await;
    configure_chain(&app).await;
    let alice = app.register("alice").await;
    let key = PrivateKeySigner::random();
    let (first, second) = (challenge(&app, &alice).await, challenge(&app, &alice).await);
    // Signed: the one a tie on the time would not pick first (the larger nonce).
    let signed = if first["nonce"].as_str() > second["nonce"].as_str() { first } else { second };
    // Two quick requests fall in one second (issued_at is kept to the second): made so here.
    sqlx::query(
        "UPDATE chain_link_challenges SET issued_at = (SELECT max(issued_at) FROM chain_link_challenges \
         WHERE user_id = $1) WHERE user_id = $1",
    )
    .bind(alice.id)
    .execute(&app.db.pool)
    .await
    .expect("same second");
    let address = key.address().to_string();
    let signature = sign(&key, signed["message"].as_str().unwrap()).await;
    let body = json!({"address": address, "signature": signature});
    let linked = app.post("/api/v1/chain/addresses", &alice.token, body).await;
    assert_eq!(linked.status, StatusCode::CREATED, "{:?}", linked.body);
    let unsigned = sign(&key, "a message no challenge holds").await;
    let reply =
        app.post("/api/v1/chain/addresses", &alice.token, json!({"address": address, "signature": unsigned})).await;
    assert_eq!(reply.code(), "signature_mismatch", "{:?}", reply.body);
}

#[tokio::test]
async fn withdrawals_to_the_chain_queue_at_once_and_every_rule_refuses_up_front() {
    let options = SpawnOptions { chain_withdrawal_daily_limits: ("10.000", "15.000"), ..SpawnOptions::default() };
    let app = TestApp::spawn_with(options).await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let alice_carbon = alice.wallet("CARBON");
    app.deposit(&admin, alice_carbon, "5.000").await;
    app.deposit(&admin, bob.wallet("CARBON"), "20.000").await;
    let unlinked = PrivateKeySigner::random().address().to_string();
    let reply = withdraw(&app, &alice, alice_carbon, "1.000", &unlinked).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::SERVICE_UNAVAILABLE, "chain_not_configured"));
    configure_chain(&app).await;

    let reply = withdraw(&app, &alice, alice_carbon, "1.000", &unlinked).await;
    assert_eq!(reply.code(), "address_not_linked");
    let address = link(&app, &alice, &PrivateKeySigner::random()).await;
    let bob_address = link(&app, &bob, &PrivateKeySigner::random()).await;
    let reply = withdraw(&app, &alice, alice_carbon, "1.000", &bob_address).await;
    assert_eq!(reply.code(), "address_not_linked", "another user's address");
    let cases = [
        (alice.wallet("EUR"), "1.000", "currency_not_carbon"),
        (alice_carbon, "8.000", "insufficient_funds"),
        (alice_carbon, "11.000", "user_daily_limit_exceeded"),
        (alice_carbon, "1.0001", "amount_precision_exceeded"),
        (bob.wallet("CARBON"), "1.000", "wallet_not_found"),
    ];
    for (wallet, amount, code) in cases {
        let reply = withdraw(&app, &alice, wallet, amount, &address).await;
        assert_eq!(reply.code(), code, "{amount} from {wallet}: {:?}", reply.body);
    }

    let reply = app.request(Method::POST, "/api/v1/chain/pause", Some(&alice.token), None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = app.request(Method::POST, "/api/v1/chain/pause", Some(&admin.token), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reply = withdraw(&app, &alice, alice_carbon, "1.000", &address).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::CONFLICT, "bridge_paused"));
    app.request(Method::POST, "/api/v1/chain/unpause", Some(&admin.token), None).await;

    let accepted = withdraw(&app, &alice, alice_carbon, "2.000", &address).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let id = accepted.body["id"].as_str().unwrap().to_string();
    assert_eq!(accepted.header("location").as_deref(), Some(format!("/api/v1/chain/withdrawals/{id}").as_str()));
    assert_eq!(balance(&app, &alice, alice_carbon, accepted.position()).await, "3.000");
    let queued: (String, Vec<u8>) =
        sqlx::query_as("SELECT state, address FROM chain_withdrawals WHERE withdrawal_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .expect("queue row");
    assert_eq!((queued.0.as_str(), format!("0x{}", hex::encode(queued.1))), ("queued", address.clone()));
    let path = format!("/api/v1/chain/withdrawals/{id}?min_position={}", accepted.position());
    let shown = app.get(&path, &alice.token).await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    assert_eq!(
        (shown.body["status"].as_str(), shown.body["chain"]["state"].as_str()),
        (Some("pending"), Some("queued"))
    );
    assert_eq!(
        (shown.body["amount"].as_str(), shown.body["transaction_id"].as_str()),
        (Some("2.000"), Some(id.as_str()))
    );
    assert_eq!(app.get(&path, &bob.token).await.code(), "chain_withdrawal_not_found");

    let reply = withdraw(&app, &bob, bob.wallet("CARBON"), "9.000", &bob_address).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    let reply = withdraw(&app, &alice, alice_carbon, "5.000", &address).await;
    assert_eq!(reply.code(), "global_daily_limit_exceeded", "2 + 9 + 5 > 15");

    let cancel = format!("/api/v1/chain/withdrawals/{id}/cancel");
    assert_eq!(app.request(Method::POST, &cancel, Some(&alice.token), None).await.status, StatusCode::FORBIDDEN);
    let reply = app.request(Method::POST, &cancel, Some(&admin.token), None).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);

    let frozen =
        app.post(&format!("/api/v1/wallets/{alice_carbon}/freeze"), &admin.token, json!({"reason": "review"})).await;
    assert_eq!(frozen.status, StatusCode::OK);
    assert_eq!(withdraw(&app, &alice, alice_carbon, "1.000", &address).await.code(), "wallet_frozen");
}

#[tokio::test]
async fn two_concurrent_withdrawals_cannot_both_pass_a_limit_only_one_fits() {
    let options = SpawnOptions { chain_withdrawal_daily_limits: ("10.000", "100.000"), ..SpawnOptions::default() };
    let app = TestApp::spawn_with(options).await;
    configure_chain(&app).await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    app.deposit(&admin, alice.wallet("CARBON"), "20.000").await;
    let address = link(&app, &alice, &PrivateKeySigner::random()).await;
    let (first, second) = tokio::join!(
        withdraw(&app, &alice, alice.wallet("CARBON"), "6.000", &address),
        withdraw(&app, &alice, alice.wallet("CARBON"), "6.000", &address),
    );
    let mut codes = vec![first.code().to_string(), second.code().to_string()];
    codes.sort();
    assert_eq!(codes, vec!["".to_string(), "user_daily_limit_exceeded".to_string()]);
}

/// The certificate document as anyone can rebuild it from the served fields.
fn document_of(certificate: &Value) -> Value {
    let fields = [
        "id",
        "amount",
        "unit",
        "beneficiary",
        "reason",
        "consumption_period",
        "country",
        "retired_at",
        "position",
        "event_hash",
    ];
    Value::Object(fields.iter().map(|field| (field.to_string(), certificate[*field].clone())).collect())
}

#[tokio::test]
async fn a_retirement_debits_the_wallet_and_its_public_certificate_hashes_to_the_served_cert_hash() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    app.deposit(&admin, alice.wallet("CARBON"), "5.000").await;
    let request = json!({"wallet_id": alice.wallet("CARBON"), "amount": "1.500", "beneficiary": "Acme GmbH",
                         "reason": "Business travel 2025", "consumption_period": "2025", "country": "DE"});
    let retired = app.post("/api/v1/retirements", &alice.token, request.clone()).await;
    assert_eq!(retired.status, StatusCode::CREATED, "{:?}", retired.body);
    let id = retired.body["id"].as_str().unwrap().to_string();
    assert_eq!(balance(&app, &alice, alice.wallet("CARBON"), retired.position()).await, "3.500");
    let queued: String = sqlx::query_scalar("SELECT state FROM chain_retirements WHERE retirement_id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .expect("queued for recordRetirement");
    assert_eq!(queued, "queued");

    let path = format!("/api/v1/retirements/{id}?min_position={}", retired.position());
    let certificate = app.request(Method::GET, &path, None, None).await;
    assert_eq!(certificate.status, StatusCode::OK, "public: {:?}", certificate.body);
    let body = &certificate.body;
    assert_eq!((body["amount"].as_str(), body["unit"].as_str()), (Some("1.500"), Some("tCO2e")));
    assert_eq!((body["position"].as_i64(), body["chain_id"].as_i64()), (Some(retired.position()), None));
    let event_hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM events WHERE position = $1")
        .bind(retired.position())
        .fetch_one(&app.db.pool)
        .await
        .expect("event");
    assert_eq!(body["event_hash"].as_str(), Some(hex::encode(event_hash).as_str()));
    let recomputed = event_store::canonical::canonical_sha256(&document_of(body)).expect("canonical");
    assert_eq!(body["cert_hash"].as_str(), Some(hex::encode(recomputed).as_str()));

    let listed = app.request(Method::GET, "/api/v1/retirements?beneficiary=acme%20gmbh", None, None).await;
    let items = listed.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{:?}", listed.body);
    let text = items[0].to_string();
    assert!(!text.contains(&alice.id.to_string()) && !text.contains(&alice.wallet("CARBON").to_string()));
    assert!(items[0].get("wallet_id").is_none() && items[0].get("user_id").is_none());

    let cases = [
        (json!({"country": "XX"}), "validation_failed"),
        (json!({"beneficiary": " "}), "validation_failed"),
        (json!({"wallet_id": alice.wallet("EUR")}), "currency_not_carbon"),
        (json!({"amount": "100.000"}), "insufficient_funds"),
    ];
    for (change, code) in cases {
        let mut body = request.clone();
        body.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        let reply = app.post("/api/v1/retirements", &alice.token, body).await;
        assert_eq!(reply.code(), code, "{change}: {:?}", reply.body);
    }
}

#[tokio::test]
async fn a_suspended_bridge_in_credits_the_wallet_once_and_the_books_balance_and_replay_afterwards() {
    let app = TestApp::spawn().await;
    configure_chain(&app).await;
    let admin = app.admin().await;
    let auditor = app.staff("audrey", domain::user::Role::Auditor).await;
    let alice = app.register("alice").await;
    app.deposit(&admin, alice.wallet("CARBON"), "5.000").await;
    let address = link(&app, &alice, &PrivateKeySigner::random()).await;
    let accepted = withdraw(&app, &alice, alice.wallet("CARBON"), "1.000", &address).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let retire = json!({"wallet_id": alice.wallet("CARBON"), "amount": "0.500", "beneficiary": "Alice", "reason": "x"});
    assert_eq!(app.post("/api/v1/retirements", &alice.token, retire).await.status, StatusCode::CREATED);
    let suspense = suspend_bridge_in(&app, "2.000").await;
    let last = record_on_chain_retirement_and_deposit(&app, alice.wallet("CARBON")).await;

    let (app_ref, auditor_token) = (&app, auditor.token.as_str());
    let listed = eventually("the suspense listed", || {
        let path = format!("/api/v1/chain/suspense?min_position={last}");
        async move {
            let reply = app_ref.get(&path, auditor_token).await;
            (reply.status == StatusCode::OK).then_some(reply.body)
        }
    })
    .await;
    assert_eq!(listed["items"][0]["id"].as_str(), Some(suspense.to_string().as_str()), "{listed:?}");
    assert_eq!(listed["items"][0]["amount"].as_str(), Some("2.000"));
    let resolve = format!("/api/v1/chain/suspense/{suspense}/resolve");
    let body = json!({"wallet_id": alice.wallet("CARBON")});
    assert_eq!(app.post(&resolve, &alice.token, body.clone()).await.status, StatusCode::FORBIDDEN);
    let resolved = app.post(&resolve, &admin.token, body.clone()).await;
    assert_eq!(resolved.status, StatusCode::OK, "{:?}", resolved.body);
    let again = app.post(&resolve, &admin.token, body).await;
    assert_eq!((again.status, again.code()), (StatusCode::CONFLICT, "suspense_already_resolved"));
    // 5 - 1 withdrawn - 0.5 retired + 0.25 deposited + 2 resolved.
    assert_eq!(balance(&app, &alice, alice.wallet("CARBON"), resolved.position()).await, "5.750");

    let head = app.head_position().await;
    app.wait_for_projections(head).await;
    let accounts: Vec<(String, rust_decimal::Decimal)> =
        sqlx::query_as("SELECT account, balance FROM rm_system_accounts WHERE currency = 'CARBON' ORDER BY account")
            .fetch_all(&app.db.pool)
            .await
            .expect("system accounts");
    let shown: Vec<(String, String)> = accounts.into_iter().map(|(a, b)| (a, b.normalize().to_string())).collect();
    let expected = [("chain", "-1.5"), ("chain_suspense", "0"), ("external", "-5"), ("retired", "0.75")];
    assert_eq!(shown, expected.map(|(a, b)| (a.to_string(), b.to_string())).to_vec());
    let report = bench::invariants::check(&app.db.pool, &[]).await;
    assert!(report.ok(), "invariants:\n{report}");
}

#[tokio::test]
async fn the_openapi_document_describes_the_chain_and_retirement_routes() {
    let app = TestApp::spawn().await;
    let reply = app.request(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let paths = reply.body["paths"].as_object().expect("paths");
    let wanted = [
        "/api/v1/chain/challenge",
        "/api/v1/chain/addresses",
        "/api/v1/chain/withdrawals",
        "/api/v1/chain/withdrawals/{id}",
        "/api/v1/chain/withdrawals/{id}/cancel",
        "/api/v1/chain/pause",
        "/api/v1/chain/unpause",
        "/api/v1/chain/suspense",
        "/api/v1/chain/suspense/{id}/resolve",
        "/api/v1/retirements",
        "/api/v1/retirements/{id}",
    ];
    let missing: Vec<&str> = wanted.into_iter().filter(|path| !paths.contains_key(*path)).collect();
    assert_eq!(missing, Vec::<&str>::new());
}

#[tokio::test]
async fn a_withdrawal_shows_completed_once_minted_and_failed_with_the_wallet_credited_once_returned() {
    let app = TestApp::spawn().await;
    configure_chain(&app).await;
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("CARBON");
    app.deposit(&admin, wallet, "5.000").await;
    let address = link(&app, &alice, &PrivateKeySigner::random()).await;
    let body = json!({"wallet_id": wallet, "amount": "2.000", "address": address});
    let headers = [("idempotency-key", "withdraw-1")];
    let send = || {
        app.request_with(Method::POST, "/api/v1/chain/withdrawals", Some(&alice.token), Some(body.clone()), &headers)
    };
    let (minted, repeat) = (send().await, send().await);
    assert_eq!(minted.status, StatusCode::ACCEPTED, "{:?}", minted.body);
    assert_eq!(
        (repeat.body["id"].clone(), repeat.header("idempotent-replayed")),
        (minted.body["id"].clone(), Some("true".into()))
    );
    let returned = withdraw(&app, &alice, wallet, "1.000", &address).await;
    let minted_id: Uuid = minted.body["id"].as_str().unwrap().parse().unwrap();
    let returned_id: Uuid = returned.body["id"].as_str().unwrap().parse().unwrap();

    let last = as_bridge(&app, |mut uow| async move {
        let complete = WalletCommand::CompleteChainWithdrawal {
            withdrawal_id: minted_id,
            tx_hash: "0xabc".into(),
            block_number: 42,
        };
        uow.execute::<Wallet>(&wallet.to_string(), complete, &()).await.unwrap().unwrap();
        let give_back =
            WalletCommand::ReturnChainWithdrawal { withdrawal_id: returned_id, reason: "never_minted".into() };
        uow.execute::<Wallet>(&wallet.to_string(), give_back, &()).await.unwrap().unwrap();
        uow
    })
    .await;

    let shown = app.get(&format!("/api/v1/chain/withdrawals/{minted_id}?min_position={last}"), &alice.token).await;
    assert_eq!(
        (shown.body["status"].as_str(), shown.body["chain"]["block_number"].as_i64()),
        (Some("completed"), Some(42))
    );
    let shown = app.get(&format!("/api/v1/chain/withdrawals/{returned_id}?min_position={last}"), &alice.token).await;
    assert_eq!((shown.body["status"].as_str(), shown.body["reason"].as_str()), (Some("failed"), Some("never_minted")));
    assert_eq!(balance(&app, &alice, wallet, last).await, "3.000", "5 - 2 minted; the returned 1 is back");
    let history = app.get(&format!("/api/v1/transactions/{minted_id}?min_position={last}"), &alice.token).await;
    assert_eq!(
        (history.body["kind"].as_str(), history.body["status"].as_str()),
        (Some("chain_withdrawal"), Some("completed"))
    );
    app.wait_for_projections(last).await;
    let report = bench::invariants::check(&app.db.pool, &[]).await;
    assert!(report.ok(), "invariants:\n{report}");
}
