//! The chain bridge's chain identity on a real anvil and Postgres: the dev chain is deployed
//! once and reused with its state, a different chain at the same database is refused, and
//! without a chain `chain/info` says so.

mod common;

use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::keccak256;
use alloy::providers::{Provider, ProviderBuilder};
use chain_bridge::bridge::{PrivateKeySigner, DEV_BRIDGE_KEY, DEV_DEPLOY_KEY};
use common::*;
use reqwest::StatusCode;
use serde_json::Value;

/// Longest a refused `ecoledger serve` may take to exit.
const REFUSED_EXIT_MAX: Duration = Duration::from_secs(30);

fn address_of(key: &str) -> String {
    key.parse::<PrivateKeySigner>().unwrap().address().to_checksum(None)
}

async fn chain_info(app: &TestApp) -> Value {
    let user = app.register("chainreader").await;
    let reply = app.get("/api/v1/chain/info", &user.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

#[tokio::test]
async fn serve_with_the_dev_chain_deploys_once_and_answers_chain_info() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::try_spawn_with_chain(&db, &unique_prefix(), &dev_chain_settings(dir.path())).await.unwrap();

    let info = chain_info(&app).await;
    assert_eq!(info["chain_id"], 31337);
    assert_eq!(info["bridge_address"], address_of(DEV_BRIDGE_KEY));
    assert_eq!(info["confirmations"], 2);
    assert_eq!(info["paused"], false);

    let (token, code_hash, is_dev, rpc_url): (Vec<u8>, Vec<u8>, bool, Option<String>) = sqlx::query_as(
        "SELECT carbon_token_address, carbon_token_code_hash, is_dev_chain, dev_rpc_url FROM chain_identity",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let token = alloy::primitives::Address::from_slice(&token);
    assert_eq!(info["contracts"]["carbon_token"], token.to_checksum(None));
    assert!(is_dev);
    assert_eq!(rpc_url.as_deref(), Some(app.bridge().rpc_url().as_str()));
    // The recorded hash is of the code on chain, not of the build JSON's.
    let provider = app.bridge().provider();
    assert_eq!(code_hash, keccak256(provider.get_code_at(token).await.unwrap()).to_vec());
    for contract in ["staking", "anchor"] {
        let address = info["contracts"][contract].as_str().unwrap().parse().unwrap();
        assert!(!provider.get_code_at(address).await.unwrap().is_empty(), "no {contract} code");
    }
    // Three creations by the deploy key, nothing else.
    let deployer = DEV_DEPLOY_KEY.parse::<PrivateKeySigner>().unwrap().address();
    assert_eq!(provider.get_transaction_count(deployer).await.unwrap(), 3);
}

#[tokio::test]
async fn a_restart_with_the_same_state_reuses_the_deployment() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix();
    let app = TestApp::try_spawn_with_chain(&db, &prefix, &dev_chain_settings(dir.path())).await.unwrap();
    let before = chain_info(&app).await;
    let old_url = app.bridge().rpc_url().clone();
    app.stop_chain().await;
    let probe = ProviderBuilder::new().connect_http(old_url.clone());
    assert!(probe.get_chain_id().await.is_err(), "anvil still answers after the server stopped");

    // Twice: a restarted anvil answers block 0 with either of two genesis blocks at random.
    for _ in 0..2 {
        let app = TestApp::try_spawn_with_chain(&db, &prefix, &dev_chain_settings(dir.path())).await.unwrap();
        assert_eq!(
            app.bridge().identity().identity.contracts,
            chain_bridge::identity::load_identity(&db.pool).await.unwrap().unwrap().identity.contracts
        );
        app.stop_chain().await;
    }
    let app = TestApp::try_spawn_with_chain(&db, &prefix, &dev_chain_settings(dir.path())).await.unwrap();
    let user = app.login("chainreader", PASSWORD).await;
    let reply = app.get("/api/v1/chain/info", &user).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, before);
    let deployer = DEV_DEPLOY_KEY.parse::<PrivateKeySigner>().unwrap().address();
    assert_eq!(app.bridge().provider().get_transaction_count(deployer).await.unwrap(), 3, "deployed again");
    let rpc_url: Option<String> =
        sqlx::query_scalar("SELECT dev_rpc_url FROM chain_identity").fetch_one(&db.pool).await.unwrap();
    assert_eq!(rpc_url.as_deref(), Some(app.bridge().rpc_url().as_str()));
    assert_ne!(app.bridge().rpc_url(), &old_url, "a new port at each start");
}

#[tokio::test]
async fn a_different_chain_at_the_same_database_is_refused() {
    let db = TestDb::create().await;
    let first = tempfile::tempdir().unwrap();
    let prefix = unique_prefix();
    let app = TestApp::try_spawn_with_chain(&db, &prefix, &dev_chain_settings(first.path())).await.unwrap();
    app.stop_chain().await;

    // A dev chain started without the recorded state: a new genesis, nothing deployed.
    let fresh = tempfile::tempdir().unwrap();
    let error = match TestApp::try_spawn_with_chain(&db, &prefix, &dev_chain_settings(fresh.path())).await {
        Ok(_) => panic!("the bridge started on a different chain"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("not the ledger's chain"), "{error}");
    // Anvil's genesis hash depends on the second it started: two fresh chains within one
    // second share it, and only the missing code tells them apart.
    assert!(error.contains("genesis block hash is") || error.contains("no CarbonToken code at"), "{error}");

    // `ecoledger serve` exits non-zero with the reason, and stops the anvil it started.
    let other = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecoledger"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("NATS_URL", nats_url())
        .env("ECOLEDGER_NATS_PREFIX", &prefix)
        .env("ECOLEDGER_HTTP_ADDR", "127.0.0.1:0")
        .env("ECOLEDGER_JWT_SECRET", JWT_SECRET)
        .env("ECOLEDGER_COMPONENTS", "api,bridge")
        .env("ECOLEDGER_ETH_DEV_CHAIN", "1")
        .env("ECOLEDGER_DATA_DIR", other.path())
        .env("ECOLEDGER_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(REFUSED_EXIT_MAX, child.wait_with_output()).await.expect("serve exits").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve succeeded on another chain: {stderr}");
    assert!(stderr.contains("REFUSING TO START THE BRIDGE"), "{stderr}");
    let log = std::fs::read_to_string(other.path().join("anvil/anvil.log")).unwrap();
    let address = log.lines().find_map(|l| l.trim().strip_prefix("Listening on ")).expect("anvil listened").trim();
    let probe = ProviderBuilder::new().connect_http(format!("http://{address}").parse().unwrap());
    assert!(probe.get_chain_id().await.is_err(), "the refused serve left anvil running");
}

#[tokio::test]
async fn without_a_chain_chain_info_answers_503_chain_not_configured() {
    let app = TestApp::spawn().await;
    let user = app.register("nochain").await;
    let reply = app.get("/api/v1/chain/info", &user.token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", reply.body);
    assert_eq!(reply.code(), "chain_not_configured");
    let anonymous = app.request(reqwest::Method::GET, "/api/v1/chain/info", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
