//! The transaction sender on a real anvil and Postgres: each withdrawal minted exactly once
//! through crashes, dropped and stuck transactions, duplicate refs and a hung node; credit back
//! only when provably never minted; retirements recorded with their certificate's hash;
//! anchors equal to checkpoints. Rounds are driven by the test, each step waited for by
//! polling against a deadline.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use chain_bridge::sender::{Sender, SenderChain, SenderConfig, SenderMetrics};
use chain_bridge::{uuid_ref, CarbonToken, ContractAddresses, LedgerAnchor};
use common::{mined, Chain};
use domain::money::{Amount, Currency};
use domain::wallet::{Wallet, WalletCommand};
use event_store::{Begun, CommandContext, Outcome, RecordedEvent, Store};
use rust_decimal::Decimal;
use sqlx::postgres::{PgArguments, PgPoolOptions};
use sqlx::{Arguments, PgPool, Row};
use uuid::Uuid;

/// Longest any step of a test may take.
const DEADLINE: Duration = Duration::from_secs(30);

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/ecoledger".to_string())
}

/// A fresh database with the migrations applied (named so the ecoledger tests' cleanup of
/// stale test databases drops it too).
async fn test_pool() -> PgPool {
    let url = database_url();
    let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
    let prefix = &base[..base.rfind('/').unwrap()];
    let with = |db: &str| match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let name = format!("ecoledger_test_{now}_{}", Uuid::new_v4().simple());
    let admin = PgPoolOptions::new().max_connections(1).connect(&with("postgres")).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    admin.close().await;
    let pool = PgPoolOptions::new().max_connections(8).connect(&with(&name)).await.unwrap();
    event_store::MIGRATOR.run(&pool).await.unwrap();
    pool
}

fn carbon(text: &str) -> Amount {
    Amount::parse(text, Currency::Carbon).unwrap()
}

fn args() -> PgArguments {
    PgArguments::default()
}

/// A chain, a ledger, a CARBON wallet holding 5,000 and a recipient address.
struct Rig {
    c: Chain,
    store: Store,
    wallet: Uuid,
    user: Uuid,
    recipient: Address,
}

impl Rig {
    async fn start() -> Rig {
        let c = Chain::start().await;
        let store = Store::new(test_pool().await);
        let (user, wallet) = (Uuid::new_v4(), Uuid::new_v4());
        let mut uow = begin(&store).await;
        let open = WalletCommand::OpenWallet { wallet_id: wallet, owner_id: user, currency: Currency::Carbon };
        uow.execute::<Wallet>(&wallet.to_string(), open, &()).await.unwrap().unwrap();
        let deposit = WalletCommand::Deposit {
            transaction_id: Uuid::new_v4(),
            amount: carbon("5000"),
            currency: Currency::Carbon,
            reference: "seed".into(),
        };
        uow.execute::<Wallet>(&wallet.to_string(), deposit, &()).await.unwrap().unwrap();
        uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await.unwrap();
        let recipient = c.user().await.address();
        Rig { c, store, wallet, user, recipient }
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    fn provider(&self) -> &alloy::providers::DynProvider {
        self.c.chain.provider()
    }

    fn sender_with(&self, config: SenderConfig) -> Sender {
        self.sender_confirming(config, 1)
    }

    fn sender_confirming(&self, config: SenderConfig, confirmations: u64) -> Sender {
        let chain = SenderChain {
            provider: self.provider().clone(),
            signer: self.c.bridge.clone(),
            chain_id: 31_337,
            contracts: ContractAddresses {
                carbon_token: self.c.deployment.token,
                staking: self.c.deployment.staking,
                anchor: self.c.deployment.anchor,
            },
            first_block: self.c.deployment.first_block,
            confirmations: Some(confirmations),
        };
        Sender::new(self.store.clone(), chain, config, SenderMetrics::new())
    }

    async fn sender(&self) -> Sender {
        self.started(SenderConfig { rebroadcast_after: Duration::ZERO, ..SenderConfig::default() }).await
    }

    async fn started(&self, config: SenderConfig) -> Sender {
        let mut sender = self.sender_with(config);
        sender.check_nonce().await.unwrap().expect("the nonce agrees with the node");
        sender
    }

    /// A withdrawal to the chain as the API queues it: the wallet's event and the queue row
    /// in one unit of work.
    async fn withdraw(&self, amount: &str) -> Uuid {
        let id = Uuid::new_v4();
        let mut uow = begin(&self.store).await;
        let command = WalletCommand::WithdrawToChain {
            withdrawal_id: id,
            amount: carbon(amount),
            address: format!("{:#x}", self.recipient),
        };
        uow.execute::<Wallet>(&self.wallet.to_string(), command, &()).await.unwrap().unwrap();
        let mut a = args();
        a.add(id).unwrap();
        a.add(self.wallet).unwrap();
        a.add(self.user).unwrap();
        a.add(carbon(amount).value()).unwrap();
        a.add(self.recipient.to_vec()).unwrap();
        uow.stage_statement(
            "INSERT INTO chain_withdrawals (withdrawal_id, wallet_id, user_id, amount, address, requested_at) \
             VALUES ($1, $2, $3, $4, $5, now())",
            a,
        );
        uow.commit(|_| Outcome::new(202, serde_json::Value::Null)).await.unwrap();
        id
    }

    async fn withdrawal(&self, id: Uuid) -> (String, Option<Vec<u8>>) {
        let row = sqlx::query("SELECT state, tx_hash FROM chain_withdrawals WHERE withdrawal_id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// Runs rounds until the withdrawal's row is in `state`, mining a block between rounds.
    async fn rounds_until(&self, sender: &mut Sender, id: Uuid, state: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            sender.round().await.expect("a round");
            if self.withdrawal(id).await.0 == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "withdrawal {id} never reached {state}: {:?}",
                self.withdrawal(id).await
            );
            self.provider().evm_mine(None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn minted_logs(&self, id: Uuid) -> Vec<alloy::rpc::types::Log> {
        let filter = Filter::new()
            .address(self.c.deployment.token)
            .event_signature(CarbonToken::Minted::SIGNATURE_HASH)
            .topic1(uuid_ref(id))
            .from_block(0);
        self.provider().get_logs(&filter).await.unwrap()
    }

    /// The wallet's events of `event_type`, payloads only.
    async fn wallet_events(&self, event_type: &str) -> Vec<serde_json::Value> {
        let rows = sqlx::query_scalar::<_, String>(
            "SELECT canonical FROM events WHERE aggregate_id = $1 AND event_type = $2 ORDER BY sequence",
        )
        .bind(self.wallet.to_string())
        .bind(event_type)
        .fetch_all(self.pool())
        .await
        .unwrap();
        rows.iter().map(|text| RecordedEvent::from_canonical(text).unwrap().payload[event_type].clone()).collect()
    }

    async fn balance(&self) -> Decimal {
        let loaded = self.store.load_current::<Wallet>(&self.wallet.to_string()).await.unwrap();
        loaded.aggregate.balance
    }
}

async fn begin(store: &Store) -> event_store::UnitOfWork {
    match store.begin(CommandContext::new("test"), None).await.unwrap() {
        Begun::Fresh(uow) => *uow,
        Begun::Replayed(_) => unreachable!(),
    }
}

fn hash_of(bytes: &Option<Vec<u8>>) -> B256 {
    B256::from_slice(bytes.as_ref().expect("a tx hash"))
}

async fn assert_minted_once(rig: &Rig, id: Uuid, amount_units: u64) -> B256 {
    let logs = rig.minted_logs(id).await;
    assert_eq!(logs.len(), 1, "exactly one Minted for the ref");
    let tx_hash = logs[0].transaction_hash.unwrap();
    let (state, row_hash) = rig.withdrawal(id).await;
    assert_eq!(state, "final");
    assert_eq!(hash_of(&row_hash), tx_hash);
    let minted = rig.wallet_events("ChainWithdrawalMinted").await;
    let event = minted.iter().find(|e| e["withdrawal_id"] == id.to_string()).expect("ChainWithdrawalMinted");
    assert_eq!(event["tx_hash"], format!("{tx_hash:#x}"));
    assert_eq!(event["block_number"], logs[0].block_number.unwrap());
    assert_eq!(rig.c.balance(rig.recipient).await, U256::from(amount_units));
    tx_hash
}

#[tokio::test]
async fn a_queued_withdrawal_is_minted_once_and_completes_the_wallet() {
    let rig = Rig::start().await;
    let id = rig.withdraw("1.500").await;
    let mut sender = rig.sender().await;
    rig.rounds_until(&mut sender, id, "final").await;
    assert_minted_once(&rig, id, 1_500).await;
    assert_eq!(rig.balance().await, Decimal::new(4_998_500, 3));
    // More rounds change nothing.
    for _ in 0..3 {
        sender.round().await.unwrap();
    }
    assert_eq!(rig.minted_logs(id).await.len(), 1);
    assert_eq!(rig.wallet_events("ChainWithdrawalMinted").await.len(), 1);
}

#[tokio::test]
async fn a_transaction_stored_but_never_broadcast_is_rebroadcast_by_the_next_sender() {
    let rig = Rig::start().await;
    let id = rig.withdraw("2").await;
    let mut crashed = rig.started(SenderConfig { broadcast: false, ..SenderConfig::default() }).await;
    crashed.round().await.unwrap();
    let (state, stored) = rig.withdrawal(id).await;
    assert_eq!(state, "submitted");
    let stored = hash_of(&stored);
    assert!(rig.provider().get_transaction_by_hash(stored).await.unwrap().is_none(), "never broadcast");
    drop(crashed);

    let mut sender = rig.sender().await;
    rig.rounds_until(&mut sender, id, "final").await;
    let tx_hash = assert_minted_once(&rig, id, 2_000).await;
    assert_eq!(tx_hash, stored, "the stored transaction itself was broadcast");
}

#[tokio::test]
async fn a_dropped_transaction_is_rebroadcast_and_mints_once() {
    let rig = Rig::start().await;
    let provider = rig.provider();
    provider.anvil_set_auto_mine(false).await.unwrap();
    let id = rig.withdraw("3").await;
    let mut sender = rig.started(SenderConfig { rebroadcast_after: Duration::ZERO, ..SenderConfig::default() }).await;
    sender.round().await.unwrap();
    let stored = hash_of(&rig.withdrawal(id).await.1);
    assert!(provider.get_transaction_by_hash(stored).await.unwrap().is_some(), "in the node's pool");
    provider.anvil_drop_all_transactions().await.unwrap();
    assert!(provider.get_transaction_by_hash(stored).await.unwrap().is_none(), "dropped");
    rig.rounds_until(&mut sender, id, "final").await;
    assert_eq!(assert_minted_once(&rig, id, 3_000).await, stored);
}

#[tokio::test]
async fn a_stuck_transaction_is_replaced_by_a_fee_bump_of_the_same_nonce() {
    let rig = Rig::start().await;
    let provider = rig.provider();
    provider.anvil_set_auto_mine(false).await.unwrap();
    let id = rig.withdraw("4").await;
    let config = SenderConfig { bump_after: Duration::from_secs(3_600), ..SenderConfig::default() };
    let mut sender = rig.started(config.clone()).await;
    sender.round().await.unwrap();
    let first = hash_of(&rig.withdrawal(id).await.1);
    // Fees rise above what the first transaction offers: a block is mined without it.
    provider.anvil_set_next_block_base_fee_per_gas(100_000_000_000).await.unwrap();
    provider.evm_mine(None).await.unwrap();
    assert!(provider.get_transaction_receipt(first).await.unwrap().is_none(), "stuck below the base fee");

    let mut bumping = rig.sender_with(SenderConfig { bump_after: Duration::ZERO, ..config });
    bumping.round().await.unwrap();
    let hashes: Vec<Vec<u8>> = sqlx::query_scalar("SELECT tx_hash FROM chain_transaction_attempts ORDER BY attempt")
        .fetch_all(rig.pool())
        .await
        .unwrap();
    assert_eq!(hashes.len(), 2, "one fee bump stored");
    let bumped = B256::from_slice(&hashes[1]);
    assert_eq!(hash_of(&rig.withdrawal(id).await.1), bumped, "the queue row shows the latest signature");
    provider.evm_mine(None).await.unwrap();
    provider.anvil_set_auto_mine(true).await.unwrap();
    rig.rounds_until(&mut sender, id, "final").await;
    assert_eq!(assert_minted_once(&rig, id, 4_000).await, bumped);
    assert!(provider.get_transaction_receipt(first).await.unwrap().is_none(), "the first hash is never mined");
}

#[tokio::test]
async fn a_mint_reverted_as_a_duplicate_ref_counts_as_done_with_the_real_transaction() {
    let rig = Rig::start().await;
    let provider = rig.provider();
    // A second bridge key (say, the key before a rotation) mints the same ref first.
    let other = rig.c.user().await;
    let role = rig.c.token_view().BRIDGE_ROLE().call().await.unwrap();
    mined(rig.c.token(&rig.c.admin).grantRole(role, other.address()).send().await).await;
    provider.anvil_set_auto_mine(false).await.unwrap();
    let id = rig.withdraw("1.250").await;
    let mut sender = rig.sender().await;
    sender.round().await.unwrap();
    let ours = hash_of(&rig.withdrawal(id).await.1);
    let theirs = *rig
        .c
        .token(&other)
        .mint(rig.recipient, U256::from(1_250), uuid_ref(id))
        .gas(200_000)
        .max_priority_fee_per_gas(50_000_000_000)
        .max_fee_per_gas(100_000_000_000)
        .send()
        .await
        .unwrap()
        .tx_hash();
    provider.evm_mine(None).await.unwrap();
    let receipt = provider.get_transaction_receipt(ours).await.unwrap().expect("ours mined");
    assert!(!receipt.status(), "ours reverted: RefAlreadyMinted");
    provider.anvil_set_auto_mine(true).await.unwrap();
    rig.rounds_until(&mut sender, id, "final").await;
    assert_eq!(assert_minted_once(&rig, id, 1_250).await, theirs);
}

/// Resumes a SIGSTOPped anvil even when the test fails.
struct Resume(libc::pid_t);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the test's own anvil child.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

#[tokio::test]
async fn a_hung_chain_never_blocks_the_ledger_and_the_withdrawal_completes_after() {
    let rig = Rig::start().await;
    let mut sender = rig.sender().await;
    let pid = libc::pid_t::try_from(rig.c.chain.pid().unwrap()).unwrap();
    // SAFETY: kill(2) on the test's own anvil child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let resume = Resume(pid);
    let started = Instant::now();
    let id = rig.withdraw("0.500").await;
    assert!(started.elapsed() < Duration::from_secs(2), "the ledger does not wait for the chain");
    let round = tokio::time::timeout(Duration::from_millis(500), sender.round()).await;
    assert!(round.is_err(), "the round waits on the hung node");
    assert_eq!(rig.withdrawal(id).await.0, "queued", "nothing stored half-way");
    drop(resume);
    rig.rounds_until(&mut sender, id, "final").await;
    assert_minted_once(&rig, id, 500).await;
}

#[tokio::test]
async fn a_cancelled_withdrawal_is_credited_back_only_when_provably_never_minted() {
    let rig = Rig::start().await;
    let before = rig.balance().await;
    // Above the daily cap (1,000 t): mined, reverted.
    let refused = rig.withdraw("1000.001").await;
    let mut sender = rig.sender().await;
    sender.round().await.unwrap();
    assert_eq!(rig.withdrawal(refused).await.0, "submitted");
    sqlx::query("UPDATE chain_withdrawals SET cancel_requested_at = now() WHERE withdrawal_id = $1")
        .bind(refused)
        .execute(rig.pool())
        .await
        .unwrap();
    rig.rounds_until(&mut sender, refused, "returned").await;
    let returned = rig.wallet_events("ChainWithdrawalReturned").await;
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0]["withdrawal_id"], refused.to_string());
    assert_eq!(rig.balance().await, before);
    assert!(rig.minted_logs(refused).await.is_empty());

    // Minted before the cancel is seen: never credited back.
    let minted = rig.withdraw("7").await;
    sender.round().await.unwrap();
    sqlx::query("UPDATE chain_withdrawals SET cancel_requested_at = now() WHERE withdrawal_id = $1")
        .bind(minted)
        .execute(rig.pool())
        .await
        .unwrap();
    rig.rounds_until(&mut sender, minted, "final").await;
    assert_minted_once(&rig, minted, 7_000).await;
    assert_eq!(rig.wallet_events("ChainWithdrawalReturned").await.len(), 1);
    assert_eq!(rig.balance().await, before - Decimal::from(7));
}

#[tokio::test]
async fn a_retirement_is_recorded_once_with_its_certificate_hash() {
    let rig = Rig::start().await;
    let id = Uuid::new_v4();
    let mut uow = begin(&rig.store).await;
    let retire = WalletCommand::Retire { retirement_id: id, amount: carbon("2.5") };
    uow.execute::<Wallet>(&rig.wallet.to_string(), retire, &()).await.unwrap().unwrap();
    let mut a = args();
    a.add(id).unwrap();
    a.add(rig.wallet).unwrap();
    a.add(rig.user).unwrap();
    uow.stage_statement(
        "INSERT INTO retirement_details (retirement_id, wallet_id, user_id, beneficiary, reason, consumption_period, \
         country, created_at) VALUES ($1, $2, $3, 'Acme GmbH', 'Scope 2, 2025', '2025', 'DE', now())",
        a,
    );
    let mut a = args();
    a.add(id).unwrap();
    a.add(Decimal::new(25, 1)).unwrap();
    uow.stage_statement("INSERT INTO chain_retirements (retirement_id, amount, queued_at) VALUES ($1, $2, now())", a);
    uow.commit(|_| Outcome::new(202, serde_json::Value::Null)).await.unwrap();

    let mut sender = rig.sender().await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        sender.round().await.unwrap();
        let state: String = sqlx::query_scalar("SELECT state FROM chain_retirements WHERE retirement_id = $1")
            .bind(id)
            .fetch_one(rig.pool())
            .await
            .unwrap();
        if state == "final" {
            break;
        }
        assert!(Instant::now() < deadline, "retirement stuck in {state}");
        rig.provider().evm_mine(None).await.unwrap();
    }
    // The certificate as anyone can rebuild it from the event and the details.
    let row = sqlx::query("SELECT position, canonical, hash FROM events WHERE event_type = 'CreditsRetired'")
        .fetch_one(rig.pool())
        .await
        .unwrap();
    let event = RecordedEvent::from_canonical(row.get(1)).unwrap();
    let certificate = domain::retirement::Certificate {
        id,
        amount: carbon("2.500"),
        beneficiary: "Acme GmbH".into(),
        reason: "Scope 2, 2025".into(),
        consumption_period: Some("2025".into()),
        country: Some("DE".into()),
        retired_at: event.occurred_at().unwrap(),
        position: row.get(0),
        event_hash: hex::encode(row.get::<Vec<u8>, _>(2)),
    };
    let expected = B256::from(event_store::canonical::canonical_sha256(&certificate.document()).unwrap());
    let stored: Vec<u8> = sqlx::query_scalar("SELECT cert_hash FROM chain_retirements WHERE retirement_id = $1")
        .bind(id)
        .fetch_one(rig.pool())
        .await
        .unwrap();
    assert_eq!(B256::from_slice(&stored), expected);
    let on_chain = rig.c.token_view().recordedRetirements(uuid_ref(id)).call().await.unwrap();
    assert_eq!((on_chain.certHash, on_chain.amount), (expected, U256::from(2_500)));
    let filter = Filter::new()
        .address(rig.c.deployment.token)
        .event_signature(CarbonToken::RetirementRecorded::SIGNATURE_HASH)
        .from_block(0);
    assert_eq!(rig.provider().get_logs(&filter).await.unwrap().len(), 1, "recorded once");
}

#[tokio::test]
async fn the_anchor_on_chain_is_a_checkpoint_below_the_published_watermark() {
    let rig = Rig::start().await;
    let head: i64 = sqlx::query_scalar("SELECT max(position) FROM events").fetch_one(rig.pool()).await.unwrap();
    // Checkpoints as the relay writes them; the last one above the published watermark.
    for (position, byte) in [(head - 1, 1u8), (head, 2u8)] {
        sqlx::query("INSERT INTO chain_checkpoints (position, head_hash, count) VALUES ($1, $2, $1)")
            .bind(position)
            .bind(vec![byte; 32])
            .execute(rig.pool())
            .await
            .unwrap();
    }
    sqlx::query("UPDATE relay_state SET published_position = $1").bind(head - 1).execute(rig.pool()).await.unwrap();
    let config = SenderConfig { anchor_every: 1, rebroadcast_after: Duration::ZERO, ..SenderConfig::default() };
    let mut sender = rig.started(config).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        sender.round().await.unwrap();
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM chain_anchors WHERE position = $1")
            .bind(head - 1)
            .fetch_optional(rig.pool())
            .await
            .unwrap();
        if state.as_deref() == Some("final") {
            break;
        }
        assert!(Instant::now() < deadline, "anchor stuck in {state:?}");
        rig.provider().evm_mine(None).await.unwrap();
    }
    let filter = Filter::new()
        .address(rig.c.deployment.anchor)
        .event_signature(LedgerAnchor::Anchored::SIGNATURE_HASH)
        .from_block(0);
    let logs = rig.provider().get_logs(&filter).await.unwrap();
    assert_eq!(logs.len(), 1);
    let anchored = LedgerAnchor::Anchored::decode_log_data(logs[0].data()).unwrap();
    let checkpoint = sqlx::query("SELECT position, head_hash, count FROM chain_checkpoints WHERE position = $1")
        .bind(anchored.position as i64)
        .fetch_one(rig.pool())
        .await
        .unwrap();
    assert_eq!(anchored.position as i64, head - 1);
    assert_eq!(anchored.headHash, B256::from_slice(&checkpoint.get::<Vec<u8>, _>(1)));
    assert_eq!(anchored.count as i64, checkpoint.get::<i64, _>(2));
}

#[tokio::test]
async fn a_sender_halts_when_someone_else_used_its_key() {
    let rig = Rig::start().await;
    let mut sender = rig.sender().await;
    // The hot key sends a transaction the ledger never stored.
    let r = uuid_ref(Uuid::new_v4());
    mined(rig.c.token(&rig.c.bridge).mint(rig.recipient, U256::from(1), r).send().await).await;
    let halt = sender.check_nonce().await.unwrap().expect_err("halts");
    assert!(halt.0.contains("someone else"), "{halt:?}");
}

#[tokio::test]
async fn a_reverted_mint_is_sent_again_with_a_new_nonce_and_never_compensated() {
    let rig = Rig::start().await;
    let before = rig.balance().await;
    // Above the daily cap (1,000 t): every mint of it reverts.
    let id = rig.withdraw("1000.001").await;
    let config = SenderConfig { revert_retry_after: Duration::ZERO, ..SenderConfig::default() };
    let mut sender = rig.started(config).await;
    let deadline = Instant::now() + DEADLINE;
    let nonces = loop {
        sender.round().await.unwrap();
        let nonces: Vec<i64> =
            sqlx::query_scalar("SELECT nonce FROM chain_transactions WHERE subject = $1 ORDER BY nonce")
                .bind(id.to_string())
                .fetch_all(rig.pool())
                .await
                .unwrap();
        if nonces.len() >= 2 {
            break nonces;
        }
        assert!(Instant::now() < deadline, "never resent: {nonces:?}");
    };
    assert!(nonces[1] > nonces[0], "a new nonce, never the reverted one again");
    assert!(rig.wallet_events("ChainWithdrawalReturned").await.is_empty(), "never compensated");
    assert_eq!(rig.balance().await, before - Decimal::new(1_000_001, 3));
    assert!(rig.minted_logs(id).await.is_empty());
}

#[tokio::test]
async fn a_mint_removed_by_a_reorg_before_it_is_final_is_sent_again_and_minted_once() {
    let rig = Rig::start().await;
    let provider = rig.provider();
    let id = rig.withdraw("6").await;
    let config = SenderConfig { rebroadcast_after: Duration::ZERO, ..SenderConfig::default() };
    let mut sender = rig.sender_confirming(config, 4);
    sender.check_nonce().await.unwrap().unwrap();
    let deadline = Instant::now() + DEADLINE;
    while rig.withdrawal(id).await.0 != "mined" {
        sender.round().await.unwrap();
        assert!(Instant::now() < deadline, "never mined");
    }
    let first = hash_of(&rig.withdrawal(id).await.1);
    let receipt = provider.get_transaction_receipt(first).await.unwrap().unwrap();
    // Replace the blocks from the mint's on with empty ones.
    let head = provider.get_block_number().await.unwrap();
    let depth = head - receipt.block_number.unwrap() + 1;
    provider.anvil_reorg(alloy::rpc::types::anvil::ReorgOptions { depth, tx_block_pairs: vec![] }).await.unwrap();
    assert!(rig.minted_logs(id).await.is_empty(), "the reorg removed the mint");
    rig.rounds_until(&mut sender, id, "final").await;
    assert_minted_once(&rig, id, 6_000).await;
    assert_eq!(rig.wallet_events("ChainWithdrawalMinted").await.len(), 1);
}

#[tokio::test]
async fn one_sender_per_key_runs_and_a_standby_takes_over_when_it_stops() {
    let rig = Rig::start().await;
    let config = SenderConfig { poll_interval: Duration::from_millis(50), ..SenderConfig::default() };
    let active = tokio::spawn(rig.sender_with(config.clone()).run());
    let deadline = Instant::now() + DEADLINE;
    let lock_holders = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(chain_bridge::sender::SENDER_LOCK_CLASS as i64)
        .fetch_one(rig.pool())
        .await
        .unwrap()
    };
    while lock_holders().await == 0 {
        assert!(Instant::now() < deadline, "the first sender never took the key's lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let standby = tokio::spawn(rig.sender_with(config).run());
    let first = rig.withdraw("1").await;
    while rig.withdrawal(first).await.0 != "final" {
        assert!(Instant::now() < deadline, "never final");
        rig.provider().evm_mine(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lock_holders().await, 1, "the standby holds no lock");

    active.abort();
    let second = rig.withdraw("2").await;
    while rig.withdrawal(second).await.0 != "final" {
        assert!(Instant::now() < deadline, "the standby never took over");
        rig.provider().evm_mine(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    standby.abort();
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM chain_transactions").fetch_one(rig.pool()).await.unwrap();
    assert_eq!(sent, 2, "one transaction per withdrawal");
    assert_eq!(rig.minted_logs(first).await.len(), 1);
    assert_eq!(rig.minted_logs(second).await.len(), 1);
}

#[tokio::test]
async fn a_fee_above_the_cap_leaves_the_mint_pending_never_failed_until_the_cap_allows_it() {
    let rig = Rig::start().await;
    let id = rig.withdraw("1.001").await;
    // A cap below the chain's base fee: the node will not take the transaction.
    let capped = SenderConfig { max_fee_per_gas: 1, bump_after: Duration::ZERO, ..SenderConfig::default() };
    let mut sender = rig.started(capped).await;
    for _ in 0..3 {
        sender.round().await.expect("a refused broadcast fails nothing");
        rig.provider().evm_mine(None).await.unwrap();
    }
    assert_eq!(rig.withdrawal(id).await.0, "submitted", "pending, never failed");
    assert!(rig.wallet_events("ChainWithdrawalReturned").await.is_empty());
    let stored = hash_of(&rig.withdrawal(id).await.1);
    assert!(rig.provider().get_transaction_receipt(stored).await.unwrap().is_none());

    // The cap is raised: the same nonce is re-signed with fees the chain takes.
    let mut sender = rig.sender_with(SenderConfig { bump_after: Duration::ZERO, ..SenderConfig::default() });
    rig.rounds_until(&mut sender, id, "final").await;
    assert_minted_once(&rig, id, 1_001).await;
    let nonces: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chain_transactions").fetch_one(rig.pool()).await.unwrap();
    assert_eq!(nonces, 1, "one nonce, re-signed");
}

#[tokio::test]
async fn the_admins_pause_pauses_the_token_and_holds_mints_until_unpaused() {
    let rig = Rig::start().await;
    // On the dev deployment the hot key holds PAUSER_ROLE; here the test deployment's pauser
    // is another key, so give it to the hot key as the dev chain does.
    let pauser_role = rig.c.token_view().PAUSER_ROLE().call().await.unwrap();
    mined(rig.c.token(&rig.c.admin).grantRole(pauser_role, rig.c.bridge.address()).send().await).await;
    let mut sender = rig.sender().await;
    sqlx::query("UPDATE chain_controls SET paused = true").execute(rig.pool()).await.unwrap();
    let id = rig.withdraw("1").await;
    let deadline = Instant::now() + DEADLINE;
    while !rig.c.token_view().paused().call().await.unwrap() {
        sender.round().await.unwrap();
        assert!(Instant::now() < deadline, "never paused");
    }
    for _ in 0..3 {
        sender.round().await.unwrap();
    }
    assert_eq!(rig.withdrawal(id).await.0, "queued", "no mint while paused");

    // Unpausing takes the admin key (`ecoledger chain unpause`); the ledger's control follows.
    let (url, token) = (rig.c.chain.rpc_url().clone(), rig.c.deployment.token);
    chain_bridge::holder::unpause(url, rig.c.admin.clone(), token).await.expect("the admin unpauses");
    assert!(!rig.c.token_view().paused().call().await.unwrap(), "the admin's unpause is on the chain");
    sqlx::query("UPDATE chain_controls SET paused = false").execute(rig.pool()).await.unwrap();
    rig.rounds_until(&mut sender, id, "final").await;
    assert_minted_once(&rig, id, 1_000).await;
}

#[tokio::test]
async fn a_hot_key_low_on_eth_is_reported_by_a_metric() {
    let rig = Rig::start().await;
    let metrics = SenderMetrics::new();
    let chain = SenderChain {
        provider: rig.provider().clone(),
        signer: rig.c.bridge.clone(),
        chain_id: 31_337,
        contracts: ContractAddresses {
            carbon_token: rig.c.deployment.token,
            staking: rig.c.deployment.staking,
            anchor: rig.c.deployment.anchor,
        },
        first_block: rig.c.deployment.first_block,
        confirmations: Some(1),
    };
    let low = SenderConfig { low_balance_wei: u128::MAX, ..SenderConfig::default() };
    let mut sender = Sender::new(rig.store.clone(), chain, low, metrics.clone());
    sender.check_nonce().await.unwrap().unwrap();
    sender.round().await.unwrap();
    assert_eq!(metrics.balance_low.get(), 1);
    assert!(metrics.balance_wei.get() > 0.0);
}

#[tokio::test]
async fn an_anchor_of_a_real_relay_checkpoint_passes_verify_chain() {
    let rig = Rig::start().await;
    // Enough events for the relay to store a checkpoint at once (every 1,000 events).
    let mut uow = begin(&rig.store).await;
    for _ in 0..1_000 {
        let deposit = WalletCommand::Deposit {
            transaction_id: Uuid::new_v4(),
            amount: carbon("1"),
            currency: Currency::Carbon,
            reference: "bulk".into(),
        };
        uow.execute::<Wallet>(&rig.wallet.to_string(), deposit, &()).await.unwrap().unwrap();
    }
    uow.commit(|_| Outcome::new(200, serde_json::Value::Null)).await.unwrap();
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let nats = event_store::bus::connect(&nats_url).await.expect("NATS");
    let bus = event_store::Bus::new(&format!("sendertest{}", Uuid::new_v4().simple())).unwrap();
    let relay = tokio::spawn(event_store::Relay::new(rig.store.clone(), bus, nats).run());

    let config = SenderConfig { anchor_every: 1, rebroadcast_after: Duration::ZERO, ..SenderConfig::default() };
    let mut sender = rig.started(config).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        sender.round().await.unwrap();
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM chain_anchors ORDER BY position DESC LIMIT 1")
                .fetch_optional(rig.pool())
                .await
                .unwrap();
        if state.as_deref() == Some("final") {
            break;
        }
        assert!(Instant::now() < deadline, "no anchor final: {state:?}");
        rig.provider().evm_mine(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.abort();
    let anchors = chain_bridge::verify_anchors::read_anchors(rig.provider(), rig.c.deployment.anchor, 0).await.unwrap();
    assert_eq!(anchors.len(), 1);
    assert!(anchors[0].count >= 1_000);
    let checks = chain_bridge::verify_anchors::check_anchors(rig.pool(), anchors).await.unwrap();
    assert_eq!(checks[0].problem, None, "verify --chain accepts the anchor");
}

#[tokio::test]
async fn a_nonce_taken_by_a_transaction_the_ledger_did_not_send_requeues_the_work() {
    let rig = Rig::start().await;
    let provider = rig.provider();
    provider.anvil_set_auto_mine(false).await.unwrap();
    let id = rig.withdraw("2.5").await;
    let config = SenderConfig { revert_retry_after: Duration::ZERO, ..SenderConfig::default() };
    let mut sender = rig.started(config).await;
    sender.round().await.unwrap();
    let ours = hash_of(&rig.withdrawal(id).await.1);
    provider.anvil_drop_all_transactions().await.unwrap();
    // Someone with the hot key sends another transaction with the same nonce.
    let token = rig.c.token(&rig.c.bridge);
    let _ = token.mint(rig.recipient, U256::from(1), uuid_ref(Uuid::new_v4())).gas(200_000).send().await.unwrap();
    provider.evm_mine(None).await.unwrap();
    provider.anvil_set_auto_mine(true).await.unwrap();
    sender.round().await.unwrap();
    assert!(sender.foreign_nonce_seen(), "seen, so the sender checks its nonce again");
    sender.check_nonce().await.unwrap().expect("one foreign transaction on our nonce: still consistent");
    rig.rounds_until(&mut sender, id, "final").await;
    let tx_hash = assert_minted_once(&rig, id, 2_501).await;
    assert_ne!(tx_hash, ours, "sent again with a new nonce");
}

#[tokio::test]
async fn a_sender_that_loses_its_lock_connection_takes_the_lock_again_and_goes_on() {
    let rig = Rig::start().await;
    let config = SenderConfig { poll_interval: Duration::from_millis(50), ..SenderConfig::default() };
    let sender = tokio::spawn(rig.sender_with(config).run());
    let holder = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(chain_bridge::sender::SENDER_LOCK_CLASS as i64)
        .fetch_optional(rig.pool())
        .await
        .unwrap()
    };
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        if let Some(pid) = holder().await {
            break pid;
        }
        assert!(Instant::now() < deadline, "never locked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sqlx::query("SELECT pg_terminate_backend($1)").bind(first).execute(rig.pool()).await.unwrap();
    let id = rig.withdraw("1").await;
    while rig.withdrawal(id).await.0 != "final" || holder().await.is_none_or(|pid| pid == first) {
        assert!(Instant::now() < deadline, "never recovered: {:?} {:?}", rig.withdrawal(id).await, holder().await);
        rig.provider().evm_mine(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sender.abort();
    assert_minted_once(&rig, id, 1_000).await;
}
