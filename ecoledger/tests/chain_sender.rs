//! `ecoledger serve` with the dev chain runs the bridge's transaction sender: a withdrawal
//! queued with its wallet event is minted on the chain and completes the wallet, and the
//! sender's metrics are served. (The sender's faults: chain-bridge/tests/sender.rs.)

mod common;

use alloy::primitives::{Address, U256};
use chain_bridge::CarbonToken;
use common::*;
use domain::money::{Amount, Currency};
use domain::wallet::{Wallet, WalletCommand};
use event_store::{Begun, CommandContext, Outcome};
use reqwest::StatusCode;
use sqlx::Arguments;
use uuid::Uuid;

#[tokio::test]
async fn serve_mints_a_queued_withdrawal_and_completes_the_wallet() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::try_spawn_with_chain(&db, &unique_prefix(), &dev_chain_settings(dir.path())).await.unwrap();
    let admin = app.admin().await;
    let user = app.register("chainminter").await;
    let wallet = user.wallet("CARBON");
    app.deposit(&admin, wallet, "10.000").await;

    // Queued as the API does: the wallet's event and the queue row in one unit of work.
    let recipient = Address::repeat_byte(0x42);
    let withdrawal_id = Uuid::new_v4();
    let Begun::Fresh(uow) = app.store.begin(CommandContext::new("test"), None).await.unwrap() else { unreachable!() };
    let mut uow = *uow;
    let amount = Amount::parse("1.500", Currency::Carbon).unwrap();
    let command = WalletCommand::WithdrawToChain { withdrawal_id, amount, address: format!("{recipient:#x}") };
    uow.execute::<Wallet>(&wallet.to_string(), command, &()).await.unwrap().unwrap();
    let mut arguments = sqlx::postgres::PgArguments::default();
    arguments.add(withdrawal_id).unwrap();
    arguments.add(wallet).unwrap();
    arguments.add(user.id).unwrap();
    arguments.add(amount.value()).unwrap();
    arguments.add(recipient.to_vec()).unwrap();
    uow.stage_statement(
        "INSERT INTO chain_withdrawals (withdrawal_id, wallet_id, user_id, amount, address, requested_at) \
         VALUES ($1, $2, $3, $4, $5, now())",
        arguments,
    );
    uow.commit(|_| Outcome::new(202, serde_json::Value::Null)).await.unwrap();

    let tx_hash: Vec<u8> = eventually("the withdrawal's mint to be final", || async {
        sqlx::query_scalar("SELECT tx_hash FROM chain_withdrawals WHERE withdrawal_id = $1 AND state = 'final'")
            .bind(withdrawal_id)
            .fetch_optional(&app.db.pool)
            .await
            .unwrap()
    })
    .await;
    let token = CarbonToken::new(app.bridge().identity().identity.contracts.carbon_token, app.bridge().provider());
    assert_eq!(token.balanceOf(recipient).call().await.unwrap(), U256::from(1_500));
    let minted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'ChainWithdrawalMinted' AND aggregate_id = $1",
    )
    .bind(wallet.to_string())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(minted, 1);
    assert_eq!(tx_hash.len(), 32);

    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("ecoledger_chain_signer_balance_wei"), "{text}");
    assert!(text.contains("ecoledger_chain_sender_halted 0"), "{text}");
    app.stop_chain().await;
}

/// The README's walkthrough end to end: a linked address receives a withdrawal as tokens, and
/// a retirement's public certificate carries the transaction that recorded its hash.
#[tokio::test]
async fn a_withdrawal_and_a_retirement_over_the_api_reach_the_chain() {
    use ecoledger::configuration::Component;
    use serde_json::json;

    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let components =
        vec![Component::Api, Component::Relay, Component::Projections, Component::Sagas, Component::Bridge];
    let chain = dev_chain_settings(dir.path());
    let app = TestApp::try_spawn_with_chain_running(&db, &unique_prefix(), &chain, components).await.unwrap();
    let admin = app.admin().await;
    let alice = app.register("alice").await;
    let wallet = alice.wallet("CARBON");
    app.deposit(&admin, wallet, "10.000").await;
    let holder = alloy::signers::local::PrivateKeySigner::random();
    let address = common::chain::link(&app, &alice, &holder).await;

    let reply = common::chain::withdraw(&app, &alice, wallet, "1.500", &address).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/chain/withdrawals/{id}?min_position={}", reply.position());
    let view = eventually("the withdrawal to be final on the chain", || async {
        let view = app.get(&path, &alice.token).await;
        (view.body["chain"]["state"] == "final").then_some(view.body)
    })
    .await;
    let token = CarbonToken::new(app.bridge().identity().identity.contracts.carbon_token, app.bridge().provider());
    assert_eq!(token.balanceOf(holder.address()).call().await.unwrap(), U256::from(1_500));
    assert!(view["chain"]["tx_hash"].as_str().is_some_and(|h| h.len() == 66), "{view}");

    let request = json!({"wallet_id": wallet, "amount": "2.000", "beneficiary": "Acme GmbH",
                         "reason": "Business travel 2025", "consumption_period": "2025", "country": "DE"});
    let retired = app.post("/api/v1/retirements", &alice.token, request).await;
    assert_eq!(retired.status, StatusCode::CREATED, "{:?}", retired.body);
    let retirement = retired.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/retirements/{retirement}?min_position={}", retired.position());
    let certificate = eventually("the retirement to be recorded on the chain", || async {
        let reply = app.request(reqwest::Method::GET, &path, None, None).await;
        (reply.body["chain_state"] == "final").then_some(reply.body)
    })
    .await;
    let on_chain = token.recordedRetirements(chain_bridge::uuid_ref(retirement.parse().unwrap())).call().await.unwrap();
    assert_eq!(certificate["cert_hash"].as_str().unwrap(), hex::encode(on_chain.certHash));
    assert_eq!(on_chain.amount, U256::from(2_000));
    assert!(certificate["tx_hash"].as_str().is_some_and(|h| h.len() == 66), "{certificate}");
    app.stop_chain().await;
}
