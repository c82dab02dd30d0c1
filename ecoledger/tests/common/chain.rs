//! The chain flows driven over the API and, for the chain's own facts (bridge-ins, on-chain
//! retirements), straight on the store as the bridge's watcher records them. No chain node:
//! the chain is "configured" by writing its identity row, as the bridge does at first start.

use alloy::signers::local::PrivateKeySigner;
use alloy::signers::Signer;
use domain::accounts::SystemAccount;
use domain::chain::{chain_log_id, ChainMovement, ChainMovementCommand};
use domain::wallet::{Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::{Begun, CommandContext, Outcome};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{Reply, TestApp, TestUser};

pub const DEV_CHAIN_ID: i64 = 31337;

/// Records a dev chain's identity, as the bridge does at its first start.
pub async fn configure_chain(app: &TestApp) {
    sqlx::query(
        "INSERT INTO chain_identity (chain_id, genesis_hash, carbon_token_address, staking_address, anchor_address, \
         carbon_token_code_hash, staking_code_hash, anchor_code_hash, is_dev_chain) \
         VALUES ($1, $2, $3, $3, $3, $2, $2, $2, true)",
    )
    .bind(DEV_CHAIN_ID)
    .bind(vec![7u8; 32])
    .bind(vec![0x5fu8; 20])
    .execute(&app.db.pool)
    .await
    .expect("chain identity");
}

pub async fn challenge(app: &TestApp, user: &TestUser) -> Value {
    let reply = app.get("/api/v1/chain/challenge", &user.token).await;
    assert_eq!(reply.status, StatusCode::OK, "challenge: {:?}", reply.body);
    reply.body
}

/// `personal_sign` (EIP-191) of `message`, as a wallet would sign it.
pub async fn sign(signer: &PrivateKeySigner, message: &str) -> String {
    let signature = signer.sign_message(message.as_bytes()).await.expect("sign");
    format!("0x{}", hex::encode(signature.as_bytes()))
}

pub async fn link_with(app: &TestApp, user: &TestUser, address: &str, signature: &str, nonce: &str) -> Reply {
    let body = json!({"address": address, "signature": signature, "nonce": nonce});
    app.post("/api/v1/chain/addresses", &user.token, body).await
}

/// Links `signer`'s address to `user` with a fresh challenge.
pub async fn link(app: &TestApp, user: &TestUser, signer: &PrivateKeySigner) -> String {
    let challenge = challenge(app, user).await;
    let signature = sign(signer, challenge["message"].as_str().unwrap()).await;
    let address = signer.address().to_string();
    let reply = link_with(app, user, &address, &signature, challenge["nonce"].as_str().unwrap()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "link: {:?}", reply.body);
    address.to_lowercase()
}

pub async fn withdraw(app: &TestApp, user: &TestUser, wallet: Uuid, amount: &str, address: &str) -> Reply {
    let body = json!({"wallet_id": wallet, "amount": amount, "address": address});
    app.post("/api/v1/chain/withdrawals", &user.token, body).await
}

pub async fn balance(app: &TestApp, user: &TestUser, wallet: Uuid, min_position: i64) -> String {
    let reply = app.get(&format!("/api/v1/wallets/{wallet}?min_position={min_position}"), &user.token).await;
    assert_eq!(reply.status, StatusCode::OK, "wallet: {:?}", reply.body);
    reply.body["balance"].as_str().expect("balance").to_string()
}

/// Runs one chain command straight on the store, as the bridge's watcher does.
pub async fn as_bridge<F, Fut>(app: &TestApp, body: F) -> i64
where
    F: FnOnce(event_store::UnitOfWork) -> Fut,
    Fut: std::future::Future<Output = event_store::UnitOfWork>,
{
    let context = CommandContext {
        actor: "chain-bridge".into(),
        request_id: Uuid::new_v4(),
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        command_id: Uuid::new_v4(),
        at: event_store::metadata::now_micros(),
    };
    let Begun::Fresh(uow) = app.store.begin(context, None).await.expect("begin") else { panic!("fresh") };
    let uow = body(*uow).await;
    uow.commit(|_| Outcome::new(200, json!({}))).await.expect("commit").position.expect("events")
}

pub fn carbon(text: &str) -> Amount {
    Amount::parse(text, Currency::Carbon).unwrap()
}

/// Every chain flow once, so each chain read model holds rows: `user` links an address,
/// withdraws 1.000 CARBON to it and retires 0.500; the bridge records a bridge-in for an
/// unknown account (resolved by `admin` to `user`'s wallet), an on-chain retirement and a
/// deposit. `user`'s CARBON wallet must hold 1.500 CARBON; it gains 2.250.
pub async fn every_chain_flow(app: &TestApp, admin: &TestUser, user: &TestUser) {
    if sqlx::query("SELECT 1 FROM chain_identity").fetch_optional(&app.db.pool).await.expect("identity").is_none() {
        configure_chain(app).await;
    }
    let wallet = user.wallet("CARBON");
    let address = link(app, user, &PrivateKeySigner::random()).await;
    let accepted = withdraw(app, user, wallet, "1.000", &address).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "withdraw: {:?}", accepted.body);
    let retire = json!({"wallet_id": wallet, "amount": "0.500", "beneficiary": "Alice", "reason": "Flights"});
    let retired = app.post("/api/v1/retirements", &user.token, retire).await;
    assert_eq!(retired.status, StatusCode::CREATED, "retire: {:?}", retired.body);
    let suspense = suspend_bridge_in(app, "2.000").await;
    record_on_chain_retirement_and_deposit(app, wallet).await;
    let resolve = format!("/api/v1/chain/suspense/{suspense}/resolve");
    let resolved = app.post(&resolve, &admin.token, json!({"wallet_id": wallet})).await;
    assert_eq!(resolved.status, StatusCode::OK, "resolve: {:?}", resolved.body);
}

/// A `BridgedIn` for an account the ledger does not know, recorded in suspense; its id.
pub async fn suspend_bridge_in(app: &TestApp, amount: &str) -> Uuid {
    let tx_hash = format!("0x{}", Uuid::new_v4().simple());
    let suspense = chain_log_id(DEV_CHAIN_ID as u64, &tx_hash, 0);
    let amount = carbon(amount);
    as_bridge(app, |mut uow| async move {
        let command =
            ChainMovementCommand::SuspendBridgeIn { amount, account_ref: "0xunknown".into(), tx_hash, log_index: 0 };
        uow.execute::<ChainMovement>(&suspense.to_string(), command, &()).await.unwrap().unwrap();
        uow
    })
    .await;
    suspense
}

/// A holder's `retire` on the chain (0.250) and a `BridgedIn` to `wallet` (0.250), in one
/// transaction; the position of the last event.
pub async fn record_on_chain_retirement_and_deposit(app: &TestApp, wallet: Uuid) -> i64 {
    let tx_hash = format!("0x{}", Uuid::new_v4().simple());
    as_bridge(app, |mut uow| async move {
        let retired = ChainMovementCommand::RecordOnChainRetirement {
            amount: carbon("0.250"),
            holder: "0xholder".into(),
            cert_hash: "0x02".into(),
            tx_hash: tx_hash.clone(),
            log_index: 1,
        };
        let on_chain = chain_log_id(DEV_CHAIN_ID as u64, &tx_hash, 1);
        uow.execute::<ChainMovement>(&on_chain.to_string(), retired, &()).await.unwrap().unwrap();
        let deposit = WalletCommand::CreditFromChain {
            deposit_id: chain_log_id(DEV_CHAIN_ID as u64, &tx_hash, 0),
            amount: carbon("0.250"),
            from: SystemAccount::Chain,
            tx_hash,
            log_index: 0,
        };
        uow.execute::<Wallet>(&wallet.to_string(), deposit, &()).await.unwrap().unwrap();
        uow
    })
    .await
}
