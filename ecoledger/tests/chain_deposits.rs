//! The chain watcher, the chain reconciliation and `verify --chain` on a real anvil and
//! Postgres: deposits credited exactly once, unknown accounts to suspense, on-chain
//! retirements, reorgs within and beyond the confirmations, the supply reconciled with the
//! ledger, and anchors checked against the event store.

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use chain_bridge::reconcile::{reconcile, ReconcileConfig, Reconciliation};
use chain_bridge::watcher::{Watcher, WatcherConfig, WatcherError, WatcherMetrics};
use chain_bridge::{deploy, uuid_ref, CarbonToken, DeployConfig, Deployment, DevChain, DevChainConfig, LedgerAnchor};
use common::*;
use domain::wallet::{Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::{Begun, CommandContext, Outcome};
use rust_decimal::Decimal;
use tempfile::TempDir;
use uuid::Uuid;

/// Confirmations the watcher in these tests waits for.
const CONFIRMATIONS: u64 = 2;

/// An anvil mining one block per transaction, with the contracts deployed.
struct Chain {
    chain: DevChain,
    _dir: TempDir,
    deployment: Deployment,
    bridge: PrivateKeySigner,
    holder: PrivateKeySigner,
}

impl Chain {
    async fn start() -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let chain = DevChain::start(DevChainConfig::new(dir.path())).await.expect("anvil starts");
        let deployer = chain.funded_key().await.unwrap();
        let admin = chain.funded_key().await.unwrap();
        let bridge = chain.funded_key().await.unwrap();
        let holder = chain.funded_key().await.unwrap();
        let config = DeployConfig {
            admin: admin.address(),
            bridge: bridge.address(),
            pauser: bridge.address(),
            admin_delay_secs: 3_600,
            daily_mint_cap: U256::from(1_000_000_000_u64),
            staking_minimum_lock_secs: 60,
        };
        let deployment = deploy(&chain.provider_with(deployer), &config).await.expect("deploy");
        Chain { chain, _dir: dir, deployment, bridge, holder }
    }

    fn provider(&self) -> DynProvider {
        self.chain.provider().clone()
    }

    fn token(&self, signer: &PrivateKeySigner) -> CarbonToken::CarbonTokenInstance<DynProvider> {
        CarbonToken::new(self.deployment.token, self.chain.provider_with(signer.clone()))
    }

    /// Mints `units` (0.001 t) to the holder with the bridge key under `reference`.
    async fn mint(&self, units: u64, reference: Uuid) {
        let token = self.token(&self.bridge);
        let call = token.mint(self.holder.address(), U256::from(units), uuid_ref(reference));
        call.send().await.unwrap().get_receipt().await.unwrap();
    }

    /// The holder bridges `units` in for `account`; the block it landed in.
    async fn bridge_in(&self, units: u64, account: Uuid) -> u64 {
        let token = self.token(&self.holder);
        let call = token.bridgeIn(U256::from(units), uuid_ref(account));
        call.send().await.unwrap().get_receipt().await.unwrap().block_number.unwrap()
    }

    /// The holder sends `units` to an address of no one: a block's content, supply unchanged.
    async fn transfer_away(&self, units: u64) {
        let token = self.token(&self.holder);
        let call = token.transfer(Address::repeat_byte(0x42), U256::from(units));
        call.send().await.unwrap().get_receipt().await.unwrap();
    }

    async fn retire(&self, units: u64) {
        let token = self.token(&self.holder);
        let call = token.retire(U256::from(units), B256::repeat_byte(7));
        call.send().await.unwrap().get_receipt().await.unwrap();
    }

    /// Mines enough blocks for everything so far to be confirmed.
    async fn confirm(&self) {
        self.provider().anvil_mine(Some(CONFIRMATIONS - 1), None).await.unwrap();
    }

    async fn watcher(&self, app: &TestApp) -> Watcher {
        let chain_id = self.provider().get_chain_id().await.unwrap();
        let config =
            WatcherConfig::new(chain_id, self.deployment.token, self.deployment.first_block, Some(CONFIRMATIONS));
        Watcher::new(app.store.clone(), self.provider(), config, WatcherMetrics::new())
    }

    async fn reconcile(&self, app: &TestApp) -> Reconciliation {
        let chain_id = self.provider().get_chain_id().await.unwrap();
        let config = ReconcileConfig {
            chain_id,
            token: self.deployment.token,
            first_block: self.deployment.first_block,
            confirmations: Some(CONFIRMATIONS),
        };
        let position = app.head_position().await;
        wait_for_relay(app, position).await;
        let published = app.store.published_position().await.unwrap();
        reconcile(&app.db.pool, &self.provider(), &config, published).await.expect("reconcile")
    }
}

async fn wait_for_relay(app: &TestApp, position: i64) {
    let store = app.store.clone();
    eventually("the relay to publish", || {
        let store = store.clone();
        async move { (store.published_position().await.ok()? >= position).then_some(()) }
    })
    .await;
}

async fn balance(app: &TestApp, wallet: Uuid) -> Decimal {
    app.store.load_current::<Wallet>(&wallet.to_string()).await.unwrap().aggregate.balance
}

async fn events_of_type(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

fn carbon(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// Debits `amount` from `wallet` into `chain`, as the withdrawal API does; the withdrawal id.
async fn withdraw_to_chain(app: &TestApp, wallet: Uuid, amount: &str, address: Address) -> Uuid {
    let withdrawal_id = Uuid::new_v4();
    let Begun::Fresh(uow) = app.store.begin(CommandContext::new("test"), None).await.unwrap() else { unreachable!() };
    let mut uow = *uow;
    let command = WalletCommand::WithdrawToChain {
        withdrawal_id,
        amount: Amount::parse(amount, Currency::Carbon).unwrap(),
        address: address.to_string().to_lowercase(),
    };
    uow.execute::<Wallet>(&wallet.to_string(), command, &()).await.unwrap().expect("the withdrawal is accepted");
    uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await.unwrap();
    withdrawal_id
}

#[tokio::test]
async fn a_bridge_in_for_a_known_wallet_is_credited_exactly_once_across_restarts_and_re_reads() {
    let app = TestApp::spawn().await;
    let chain = Chain::start().await;
    let user = app.register("bridger").await;
    let wallet = user.wallet("CARBON");
    chain.mint(5_000, Uuid::new_v4()).await;
    chain.bridge_in(1_500, wallet).await;

    // Not yet confirmed: nothing.
    let watcher = chain.watcher(&app).await;
    assert_eq!(watcher.pass().await.unwrap().logs_recorded, 0);
    chain.confirm().await;
    assert_eq!(watcher.pass().await.unwrap().logs_recorded, 1);
    assert_eq!(balance(&app, wallet).await, carbon("1.500"));

    // A second pass, a new watcher (a restart), and a watcher that lost its cursor all read
    // the log again and record nothing.
    assert_eq!(watcher.pass().await.unwrap().logs_recorded, 0);
    assert_eq!(chain.watcher(&app).await.pass().await.unwrap().logs_recorded, 0);
    sqlx::query("DELETE FROM chain_watcher_cursor").execute(&app.db.pool).await.unwrap();
    let reread = chain.watcher(&app).await.pass().await.unwrap();
    assert_eq!((reread.logs_recorded, reread.logs_skipped), (0, 1));

    assert_eq!(balance(&app, wallet).await, carbon("1.500"));
    assert_eq!(events_of_type(&app, "ChainDeposited").await, 1);
    let (outcome, ordinal): (String, i32) = sqlx::query_as("SELECT outcome, log_index_in_tx FROM chain_watcher_logs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    // The burn's Transfer log comes first in the transaction, BridgedIn second.
    assert_eq!((outcome.as_str(), ordinal), ("credited", 1));
}

#[tokio::test]
async fn unknown_accounts_go_to_chain_suspense_and_an_on_chain_retire_posts_chain_to_retired() {
    let app = TestApp::spawn().await;
    let chain = Chain::start().await;
    let user = app.register("suspended").await;
    chain.mint(10_000, Uuid::new_v4()).await;
    chain.bridge_in(1_000, Uuid::new_v4()).await; // no such wallet
    chain.bridge_in(2_000, user.wallet("EUR")).await; // not a CARBON wallet
    chain.retire(500).await;
    chain.confirm().await;

    // Ranges of two blocks: the cursor is checked and moved between them.
    let chain_id = chain.provider().get_chain_id().await.unwrap();
    let mut config =
        WatcherConfig::new(chain_id, chain.deployment.token, chain.deployment.first_block, Some(CONFIRMATIONS));
    config.blocks_per_range = 2;
    let watcher = Watcher::new(app.store.clone(), chain.provider(), config, WatcherMetrics::new());
    assert_eq!(watcher.pass().await.unwrap().logs_recorded, 3);

    assert_eq!(events_of_type(&app, "BridgeInSuspended").await, 2);
    assert_eq!(events_of_type(&app, "RetiredOnChain").await, 1);
    assert_eq!(events_of_type(&app, "ChainDeposited").await, 0);
    assert_eq!(balance(&app, user.wallet("EUR")).await, Decimal::ZERO);
    let outcomes: Vec<(String, Decimal)> =
        sqlx::query_as("SELECT outcome, amount FROM chain_watcher_logs ORDER BY block_number")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let expected = vec![("suspended", carbon("1")), ("suspended", carbon("2")), ("retired", carbon("0.5"))];
    let outcomes: Vec<(&str, Decimal)> = outcomes.iter().map(|(o, a)| (o.as_str(), *a)).collect();
    assert_eq!(outcomes, expected);
}

#[tokio::test]
async fn a_deposit_a_reorg_removes_before_it_is_confirmed_is_never_credited() {
    let app = TestApp::spawn().await;
    let chain = Chain::start().await;
    let user = app.register("reorged").await;
    let wallet = user.wallet("CARBON");
    withdrawn_and_minted(&app, &chain, wallet).await;
    let provider = chain.provider();
    let snapshot = provider.anvil_snapshot().await.unwrap();
    chain.bridge_in(1_000, wallet).await;
    let watcher = chain.watcher(&app).await;
    assert_eq!(watcher.pass().await.unwrap().logs_recorded, 0, "one block: not yet confirmed");

    // The block holding the deposit is replaced: the chain goes on without it.
    assert!(provider.anvil_revert(snapshot).await.unwrap());
    chain.transfer_away(1).await;
    provider.anvil_mine(Some(3), None).await.unwrap();

    let pass = watcher.pass().await.unwrap();
    assert_eq!(pass.logs_recorded, 0);
    assert_eq!(balance(&app, wallet).await, carbon("5"));
    assert_eq!(events_of_type(&app, "ChainDeposited").await, 0);
    let holder_balance = chain.token(&chain.holder).balanceOf(chain.holder.address()).call().await.unwrap();
    assert_eq!(holder_balance, U256::from(4_999), "the bridge-in is gone from the chain");
    let report = chain.reconcile(&app).await;
    assert_eq!((report.total_supply, report.difference), (carbon("5"), Decimal::ZERO), "{report:?}");
}

#[tokio::test]
async fn a_reorg_deeper_than_the_confirmations_halts_the_watcher_and_debits_nothing() {
    let app = TestApp::spawn().await;
    let chain = Chain::start().await;
    let user = app.register("deepreorg").await;
    let wallet = user.wallet("CARBON");
    withdrawn_and_minted(&app, &chain, wallet).await;
    let provider = chain.provider();
    let snapshot = provider.anvil_snapshot().await.unwrap();
    chain.bridge_in(1_000, wallet).await;
    chain.confirm().await;
    let metrics = WatcherMetrics::new();
    let chain_id = provider.get_chain_id().await.unwrap();
    let config =
        WatcherConfig::new(chain_id, chain.deployment.token, chain.deployment.first_block, Some(CONFIRMATIONS));
    let watcher = Watcher::new(app.store.clone(), provider.clone(), config, metrics.clone());
    assert_eq!(watcher.pass().await.unwrap().logs_recorded, 1);
    assert_eq!(balance(&app, wallet).await, carbon("6"));

    // Confirmed blocks are replaced by others (different content, same heights and more).
    assert!(provider.anvil_revert(snapshot).await.unwrap());
    chain.transfer_away(7).await;
    provider.anvil_mine(Some(4), None).await.unwrap();

    let halted = watcher.pass().await;
    assert!(matches!(halted, Err(WatcherError::Halted(_))), "{halted:?}");
    assert_eq!(metrics.halted.get(), 1);
    assert_eq!(metrics.alerts.get(), 1);
    let reason: Option<String> =
        sqlx::query_scalar("SELECT halt_reason FROM chain_watcher_cursor").fetch_one(&app.db.pool).await.unwrap();
    assert!(reason.is_some_and(|r| r.contains("when processed")));
    // A new watcher (a restart) stays halted; nothing is debited or undone.
    assert!(matches!(chain.watcher(&app).await.pass().await, Err(WatcherError::Halted(_))));
    assert_eq!(balance(&app, wallet).await, carbon("6"));
    assert_eq!(events_of_type(&app, "ChainDeposited").await, 1);
    // The reconciliation shows the credit whose log the chain no longer has.
    let report = chain.reconcile(&app).await;
    assert_eq!(report.difference, carbon("1"), "{report:?}");
    assert_eq!((report.unmatched[0].kind, report.unmatched[0].amount), ("posting_without_log", carbon("1")));
}

/// 10 CARBON deposited to `wallet`, 5 withdrawn to the chain and minted to the holder.
async fn withdrawn_and_minted(app: &TestApp, chain: &Chain, wallet: Uuid) {
    let admin = app.admin().await;
    app.deposit(&admin, wallet, "10").await;
    let withdrawal = withdraw_to_chain(app, wallet, "5", chain.holder.address()).await;
    chain.mint(5_000, withdrawal).await;
}

#[tokio::test]
async fn the_supply_reconciles_with_the_chain_account_and_a_mint_without_a_withdrawal_is_a_difference() {
    let app = TestApp::spawn().await;
    let chain = Chain::start().await;
    let admin = app.admin().await;
    let user = app.register("reconciled").await;
    let wallet = user.wallet("CARBON");
    app.deposit(&admin, wallet, "20").await;

    // Withdrawn 4 and minted by the "sender"; 1.5 bridged back, 0.5 retired on chain.
    let minted = withdraw_to_chain(&app, wallet, "4", chain.holder.address()).await;
    chain.mint(4_000, minted).await;
    chain.bridge_in(1_500, wallet).await;
    chain.retire(500).await;
    chain.confirm().await;
    chain.watcher(&app).await.pass().await.unwrap();
    let report = chain.reconcile(&app).await;
    assert_eq!((report.total_supply, report.chain_account), (carbon("2"), carbon("2")));
    assert!(report.terms.iter().all(|t| t.amount.is_zero()), "{:?}", report.terms);
    assert_eq!(report.difference, Decimal::ZERO);

    // In flight: a withdrawal debited but not minted, a bridge-in not yet recorded.
    withdraw_to_chain(&app, wallet, "3", chain.holder.address()).await;
    chain.bridge_in(250, wallet).await;
    chain.confirm().await;
    let report = chain.reconcile(&app).await;
    let term = |kind: &str| report.terms.iter().find(|t| t.kind == kind).unwrap().amount;
    assert_eq!((term("mints_pending"), term("burns_not_posted")), (carbon("-3"), carbon("-0.25")));
    assert_eq!(report.difference, Decimal::ZERO, "{report:?}");

    // Minted on chain with no withdrawal in the ledger: a difference, named.
    chain.mint(7_000, Uuid::new_v4()).await;
    chain.confirm().await;
    let report = chain.reconcile(&app).await;
    assert_eq!(report.difference, carbon("7"));
    assert_eq!(report.unmatched.len(), 1);
    assert_eq!((report.unmatched[0].kind, report.unmatched[0].amount), ("mint_without_withdrawal", carbon("7")));
}

#[tokio::test]
async fn the_reconciliation_report_is_for_staff_and_a_difference_is_logged_and_serve_runs_the_watcher() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::try_spawn_with_chain(&db, &unique_prefix(), &dev_chain_settings(dir.path())).await.unwrap();
    let auditor = app.staff("chainauditor", domain::user::Role::Auditor).await;
    let user = app.register("chainuser").await;
    let path = "/api/v1/reports/chain-reconciliation";
    assert_eq!(app.get(path, &user.token).await.status, reqwest::StatusCode::FORBIDDEN);
    let reply = app.get(path, &auditor.token).await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["difference"], "0.000");
    assert_eq!(reply.body["terms"].as_array().unwrap().len(), 4);

    // A direct mint with the bridge key, then bridged in for an unknown account: serve's
    // watcher records the bridge-in (suspense) and the report shows the unexplained mint.
    let bridge_key: PrivateKeySigner = chain_bridge::bridge::DEV_BRIDGE_KEY.parse().unwrap();
    let token = app.bridge().identity().identity.contracts.carbon_token;
    let signing = chain_bridge::bridge::signing_provider(app.bridge().rpc_url().clone(), bridge_key.clone());
    let token = CarbonToken::new(token, &signing);
    let call = token.mint(bridge_key.address(), U256::from(7_000), uuid_ref(Uuid::new_v4()));
    call.send().await.unwrap().get_receipt().await.unwrap();
    let call = token.bridgeIn(U256::from(1_000), uuid_ref(Uuid::new_v4()));
    call.send().await.unwrap().get_receipt().await.unwrap();
    let pool = app.db.pool.clone();
    eventually("serve's watcher to record the bridge-in", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'BridgeInSuspended'")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n == 1).then_some(())
        }
    })
    .await;
    let reply = eventually("the mint to be final", || async {
        let reply = app.get(path, &auditor.token).await;
        (reply.body["total_supply"] == "6.000").then_some(reply)
    })
    .await;
    assert_eq!(reply.body["unmatched"][0]["kind"], "mint_without_withdrawal");
    assert_eq!(reply.body["difference"], "7.000");
    let logged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM security_audit WHERE kind = 'chain_reconciliation_difference'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(logged >= 1);

    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ecoledger_chain_reconciliation_difference_units 7000"), "{metrics}");
    assert!(metrics.contains("ecoledger_chain_watcher_halted 0"), "{metrics}");
    assert!(metrics.contains("ecoledger_chain_watcher_logs_recorded_total 1"), "{metrics}");

    // The bridge's own round writes the difference once, not at every round.
    let reconciler = ecoledger::chain_checks::Reconciler::new(app.store.clone(), &prometheus::Registry::new()).unwrap();
    let by_bridge = || async {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM security_audit WHERE kind = 'chain_reconciliation_difference' AND actor = 'chain-bridge'",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        count
    };
    let before = by_bridge().await;
    let mut last_alerted = None;
    reconciler.check(app.bridge(), &mut last_alerted).await;
    assert_eq!(last_alerted, Some(carbon("7")));
    assert_eq!(by_bridge().await, before + 1);
    reconciler.check(app.bridge(), &mut last_alerted).await;
    assert_eq!(by_bridge().await, before + 1);
    app.stop_chain().await;
}

/// The global chain (position, head hash, count) over every event, as the relay checkpoints it.
async fn global_head(app: &TestApp) -> (u64, B256, u64) {
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT position, hash FROM events ORDER BY position").fetch_all(&app.db.pool).await.unwrap();
    let mut head = event_store::record::GENESIS_HASH;
    for (_, hash) in &rows {
        head = event_store::record::global_hash(&head, hash);
    }
    (rows.last().unwrap().0 as u64, B256::from(head), rows.len() as u64)
}

#[tokio::test]
async fn verify_chain_passes_on_a_real_anchor_and_fails_on_a_tampered_one() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::try_spawn_with_chain(&db, &unique_prefix(), &dev_chain_settings(dir.path())).await.unwrap();
    app.register("anchored").await;
    let bridge_key: PrivateKeySigner = chain_bridge::bridge::DEV_BRIDGE_KEY.parse().unwrap();
    let anchor_address = app.bridge().identity().identity.contracts.anchor;
    let signing = chain_bridge::bridge::signing_provider(app.bridge().rpc_url().clone(), bridge_key);
    let anchor = LedgerAnchor::new(anchor_address, &signing);

    let (position, head, count) = global_head(&app).await;
    anchor.anchor(position, head, count).send().await.unwrap().get_receipt().await.unwrap();
    let output = verify_chain(&app).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("ok: the event store matches every on-chain anchor"), "{}", text(&output));

    app.register("anchored2").await;
    let (position, _, count) = global_head(&app).await;
    anchor.anchor(position, B256::repeat_byte(0xab), count).send().await.unwrap().get_receipt().await.unwrap();
    let output = verify_chain(&app).await;
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("MISMATCH"), "{}", text(&output));
    app.stop_chain().await;
}

async fn verify_chain(app: &TestApp) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ecoledger"))
        .args(["verify", "--chain"])
        .env("DATABASE_URL", &app.db.url)
        .env("ECOLEDGER_LOG", "warn")
        .env_remove("ECOLEDGER_ETH_RPC_URL")
        .env_remove("ECOLEDGER_ETH_DEV_CHAIN")
        .output()
        .await
        .expect("the ecoledger binary runs")
}

fn text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// End to end with every component: a withdrawal over the API is minted by the sender, the
/// holder bridges part back (serve's watcher credits the wallet) and retires part on chain,
/// and the reconciliation over the API comes to zero with nothing in flight.
#[tokio::test]
async fn withdraw_bridge_back_and_retire_over_serve_and_the_reconciliation_is_zero() {
    use ecoledger::configuration::Component;

    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let components =
        vec![Component::Api, Component::Relay, Component::Projections, Component::Sagas, Component::Bridge];
    let settings = dev_chain_settings(dir.path());
    let app = TestApp::try_spawn_with_chain_running(&db, &unique_prefix(), &settings, components).await.unwrap();
    let admin = app.admin().await;
    let auditor = app.staff("e2eauditor", domain::user::Role::Auditor).await;
    let alice = app.register("e2ealice").await;
    let wallet = alice.wallet("CARBON");
    app.deposit(&admin, wallet, "10.000").await;
    let holder = PrivateKeySigner::random();
    app.bridge().provider().anvil_set_balance(holder.address(), U256::from(10_u128.pow(21))).await.unwrap();
    let address = common::chain::link(&app, &alice, &holder).await;
    let reply = common::chain::withdraw(&app, &alice, wallet, "4.000", &address).await;
    assert_eq!(reply.status, reqwest::StatusCode::ACCEPTED, "{:?}", reply.body);

    let token_address = app.bridge().identity().identity.contracts.carbon_token;
    let signing = chain_bridge::bridge::signing_provider(app.bridge().rpc_url().clone(), holder.clone());
    let token = CarbonToken::new(token_address, &signing);
    eventually("the mint to reach the holder", || async {
        (token.balanceOf(holder.address()).call().await.ok()? == U256::from(4_000)).then_some(())
    })
    .await;
    let call = token.bridgeIn(U256::from(1_500), uuid_ref(wallet));
    call.send().await.unwrap().get_receipt().await.unwrap();
    let call = token.retire(U256::from(500), B256::repeat_byte(9));
    call.send().await.unwrap().get_receipt().await.unwrap();

    eventually("serve's watcher to credit the bridge-in", || async {
        (balance(&app, wallet).await == carbon("7.5")).then_some(())
    })
    .await;
    let path = "/api/v1/reports/chain-reconciliation";
    let report = eventually("the reconciliation to see everything settled", || async {
        let reply = app.get(path, &auditor.token).await;
        let settled = reply.body["terms"].as_array()?.iter().all(|t| t["amount"] == "0.000");
        (reply.body["total_supply"] == "2.000" && settled).then_some(reply.body)
    })
    .await;
    assert_eq!((report["chain_account"].as_str(), report["difference"].as_str()), (Some("2.000"), Some("0.000")));
    assert_eq!(events_of_type(&app, "RetiredOnChain").await, 1);
    app.stop_chain().await;
}

#[tokio::test]
async fn without_confirmations_only_the_finalized_block_counts() {
    let app = TestApp::spawn().await;
    let chain = Chain::start().await;
    let user = app.register("finalized").await;
    let wallet = user.wallet("CARBON");
    chain.mint(2_000, Uuid::new_v4()).await;
    chain.bridge_in(1_000, wallet).await;
    let chain_id = chain.provider().get_chain_id().await.unwrap();
    let config = WatcherConfig::new(chain_id, chain.deployment.token, chain.deployment.first_block, None);
    let watcher = Watcher::new(app.store.clone(), chain.provider(), config, WatcherMetrics::new());
    chain.provider().anvil_mine(Some(3), None).await.unwrap();
    assert_eq!(watcher.pass().await.unwrap().logs_recorded, 0, "not final after 3 blocks");
    chain.provider().anvil_mine(Some(200), None).await.unwrap();
    assert_eq!(watcher.pass().await.unwrap().logs_recorded, 1);
    assert_eq!(balance(&app, wallet).await, carbon("1"));
}

#[tokio::test]
async fn a_chain_that_is_down_fails_a_pass_without_halting_and_the_ledger_goes_on() {
    let app = TestApp::spawn().await;
    let chain = Chain::start().await;
    let admin = app.admin().await;
    let user = app.register("chaindown").await;
    chain.mint(1_000, Uuid::new_v4()).await;
    chain.confirm().await;
    let watcher = chain.watcher(&app).await;
    watcher.pass().await.unwrap();
    let Chain { chain: dev_chain, _dir, .. } = chain;
    tokio::task::spawn_blocking(move || dev_chain.stop()).await.unwrap();

    let failed = watcher.pass().await;
    assert!(matches!(failed, Err(WatcherError::Rpc(_))), "{failed:?}");
    let halted: Option<String> =
        sqlx::query_scalar("SELECT halt_reason FROM chain_watcher_cursor").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(halted, None);
    app.deposit(&admin, user.wallet("CARBON"), "1").await;
}

#[tokio::test]
async fn verify_chain_finds_a_removed_last_event_that_the_stream_chains_alone_cannot() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::try_spawn_with_chain(&db, &unique_prefix(), &dev_chain_settings(dir.path())).await.unwrap();
    app.register("truncated").await;
    let bridge_key: PrivateKeySigner = chain_bridge::bridge::DEV_BRIDGE_KEY.parse().unwrap();
    let signing = chain_bridge::bridge::signing_provider(app.bridge().rpc_url().clone(), bridge_key);
    let anchor = LedgerAnchor::new(app.bridge().identity().identity.contracts.anchor, &signing);
    let (position, head, count) = global_head(&app).await;
    anchor.anchor(position, head, count).send().await.unwrap().get_receipt().await.unwrap();

    // The newest event goes, as a database owner could remove it: every stream's chain still
    // holds (no relay checkpoint covers it here), the anchor does not.
    let mut tx = app.db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    sqlx::query("DELETE FROM events WHERE position = $1").bind(position as i64).execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    let plain = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecoledger"))
        .arg("verify")
        .env("DATABASE_URL", &app.db.url)
        .env("ECOLEDGER_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(plain.status.success(), "{}", text(&plain));
    let output = verify_chain(&app).await;
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("no event at the anchored position"), "{}", text(&output));
    app.stop_chain().await;
}

/// The watcher's loop on a chain that hangs (anvil stopped with SIGSTOP): the ledger takes
/// commands meanwhile, and once the chain answers again the deposit is credited; the loop
/// ends when told to stop.
#[tokio::test]
async fn the_watcher_loop_waits_out_a_hanging_chain_and_credits_once_it_answers() {
    let app = TestApp::spawn().await;
    let chain = Chain::start().await;
    let admin = app.admin().await;
    let user = app.register("hanging").await;
    let wallet = user.wallet("CARBON");
    chain.mint(3_000, Uuid::new_v4()).await;
    chain.bridge_in(2_000, wallet).await;
    chain.confirm().await;
    let watcher = chain.watcher(&app).await;
    let pid = chain.chain.pid().expect("anvil runs") as i32;
    // SAFETY: signals our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(watcher.run(stopped));
    app.deposit(&admin, wallet, "1").await;
    assert_eq!(balance(&app, wallet).await, carbon("1"));

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    eventually("the deposit to be credited", || async { (balance(&app, wallet).await == carbon("3")).then_some(()) })
        .await;
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), task).await.expect("the loop stops").unwrap();
}
