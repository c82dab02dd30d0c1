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
    assert_eq!(reply.body["transaction_id"], reply.body["id"], "the 202 names the history line");
    let confirmations = view["chain"]["confirmations"].as_i64().expect("confirmations of a final mint");
    assert!(confirmations >= 2, "final on the dev chain takes 2 confirmations: {view}");

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

/// `ecoledger serve` (bridge only, dev chain) as a child process.
async fn serve_bridge(db: &TestDb, data_dir: &std::path::Path, broadcast: bool) -> tokio::process::Child {
    let data_dir = data_dir.to_str().unwrap();
    let prefix = unique_prefix();
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("NATS_URL", "nats://127.0.0.1:4222"),
        ("ECOLEDGER_NATS_PREFIX", prefix.as_str()),
        ("ECOLEDGER_HTTP_ADDR", "127.0.0.1:0"),
        ("ECOLEDGER_JWT_SECRET", JWT_SECRET),
        ("ECOLEDGER_COMPONENTS", "bridge"),
        ("ECOLEDGER_ETH_DEV_CHAIN", "1"),
        ("ECOLEDGER_DATA_DIR", data_dir),
        ("ECOLEDGER_ETH_DEV_BLOCK_TIME_MS", "100"),
        ("ECOLEDGER_ETH_SENDER_BROADCAST", if broadcast { "1" } else { "0" }),
    ];
    spawn_ecoledger(&["serve"], &envs, "ecoledger listening on ").await.0
}

/// The fault test of the issue: the bridge killed (SIGKILL) after it signed and stored a mint
/// but before it broadcast it. The next start rebroadcasts the stored transaction: minted once.
#[tokio::test]
async fn a_bridge_killed_between_signing_and_broadcasting_mints_once_after_a_restart() {
    use alloy::providers::{Provider, ProviderBuilder};

    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut crashing = serve_bridge(&db, dir.path(), false).await;
    let store = event_store::Store::new(db.pool.clone());
    let (user, wallet, withdrawal_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let recipient = Address::repeat_byte(0x24);
    let Begun::Fresh(uow) = store.begin(CommandContext::new("test"), None).await.unwrap() else { unreachable!() };
    let mut uow = *uow;
    let open = WalletCommand::OpenWallet { wallet_id: wallet, owner_id: user, currency: Currency::Carbon };
    uow.execute::<Wallet>(&wallet.to_string(), open, &()).await.unwrap().unwrap();
    let deposit = WalletCommand::Deposit {
        transaction_id: Uuid::new_v4(),
        amount: Amount::parse("5", Currency::Carbon).unwrap(),
        currency: Currency::Carbon,
        reference: "seed".into(),
    };
    uow.execute::<Wallet>(&wallet.to_string(), deposit, &()).await.unwrap().unwrap();
    let amount = Amount::parse("2.750", Currency::Carbon).unwrap();
    let command = WalletCommand::WithdrawToChain { withdrawal_id, amount, address: format!("{recipient:#x}") };
    uow.execute::<Wallet>(&wallet.to_string(), command, &()).await.unwrap().unwrap();
    let mut arguments = sqlx::postgres::PgArguments::default();
    arguments.add(withdrawal_id).unwrap();
    arguments.add(wallet).unwrap();
    arguments.add(user).unwrap();
    arguments.add(amount.value()).unwrap();
    arguments.add(recipient.to_vec()).unwrap();
    uow.stage_statement(
        "INSERT INTO chain_withdrawals (withdrawal_id, wallet_id, user_id, amount, address, requested_at) \
         VALUES ($1, $2, $3, $4, $5, now())",
        arguments,
    );
    uow.commit(|_| Outcome::new(202, serde_json::Value::Null)).await.unwrap();

    let stored: Vec<u8> = eventually("the mint to be signed and stored", || async {
        sqlx::query_scalar("SELECT tx_hash FROM chain_withdrawals WHERE withdrawal_id = $1 AND state = 'submitted'")
            .bind(withdrawal_id)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
    })
    .await;
    crashing.start_kill().unwrap();
    crashing.wait().await.unwrap();
    // Its anvil writes its state on the way down; wait until it no longer answers.
    let url: String = sqlx::query_scalar("SELECT dev_rpc_url FROM chain_identity").fetch_one(&db.pool).await.unwrap();
    let probe = ProviderBuilder::new().connect_http(url.parse().unwrap());
    eventually("the old dev chain to stop", || async { probe.get_chain_id().await.is_err().then_some(()) }).await;

    let _restarted = serve_bridge(&db, dir.path(), true).await;
    let minted: Vec<u8> = eventually("the mint to be final after the restart", || async {
        sqlx::query_scalar("SELECT tx_hash FROM chain_withdrawals WHERE withdrawal_id = $1 AND state = 'final'")
            .bind(withdrawal_id)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(minted, stored, "the stored transaction itself was broadcast and mined");
    let url: String = sqlx::query_scalar("SELECT dev_rpc_url FROM chain_identity").fetch_one(&db.pool).await.unwrap();
    let provider = ProviderBuilder::new().connect_http(url.parse().unwrap()).erased();
    let token: Address = sqlx::query_scalar::<_, Vec<u8>>("SELECT carbon_token_address FROM chain_identity")
        .fetch_one(&db.pool)
        .await
        .map(|bytes| Address::from_slice(&bytes))
        .unwrap();
    assert_eq!(CarbonToken::new(token, &provider).balanceOf(recipient).call().await.unwrap(), U256::from(2_750));
    let filter = alloy::rpc::types::Filter::new()
        .address(token)
        .event_signature(<CarbonToken::Minted as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
        .topic1(chain_bridge::uuid_ref(withdrawal_id))
        .from_block(0);
    assert_eq!(provider.get_logs(&filter).await.unwrap().len(), 1, "exactly one Minted for the ref");
}
