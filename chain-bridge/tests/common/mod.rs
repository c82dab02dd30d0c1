//! A real anvil per test with the three contracts deployed, and helpers to send transactions
//! and read reverts.
#![allow(dead_code)]

use std::time::Duration;

use alloy::contract::Error as ContractError;
use alloy::network::Ethereum;
use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolError;
use chain_bridge::{
    deploy, CarbonStaking, CarbonToken, DeployConfig, Deployment, DevChain, DevChainConfig, LedgerAnchor,
};
use tempfile::TempDir;

/// Seconds a scheduled admin transfer waits in the test deployments.
pub const ADMIN_DELAY_SECS: u64 = 3_600;
/// Seconds a stake stays locked in the test deployments.
pub const STAKING_LOCK_SECS: u64 = 7 * 86_400;
/// The daily mint cap of the test deployments: 1,000 t in token units of 0.001 t.
pub const DAILY_MINT_CAP: u64 = 1_000_000;

/// One anvil with the contracts deployed and a key for each role.
pub struct Chain {
    // Declared before `_dir`: anvil stops before its state directory goes.
    pub chain: DevChain,
    _dir: TempDir,
    pub deployment: Deployment,
    pub deployer: PrivateKeySigner,
    /// The cold key.
    pub admin: PrivateKeySigner,
    /// The hot key.
    pub bridge: PrivateKeySigner,
    pub pauser: PrivateKeySigner,
}

impl Chain {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let chain = DevChain::start(DevChainConfig::new(dir.path())).await.expect("anvil starts");
        let deployer = chain.funded_key().await.expect("fund the deploy key");
        let admin = chain.funded_key().await.expect("fund the cold key");
        let bridge = chain.funded_key().await.expect("fund the hot key");
        let pauser = chain.funded_key().await.expect("fund the pauser key");
        let config = DeployConfig {
            admin: admin.address(),
            bridge: bridge.address(),
            pauser: pauser.address(),
            admin_delay_secs: ADMIN_DELAY_SECS,
            daily_mint_cap: U256::from(DAILY_MINT_CAP),
            staking_minimum_lock_secs: STAKING_LOCK_SECS,
        };
        let deployment = deploy(&chain.provider_with(deployer.clone()), &config).await.expect("deploy");
        Self { chain, _dir: dir, deployment, deployer, admin, bridge, pauser }
    }

    /// A funded key with no role.
    pub async fn user(&self) -> PrivateKeySigner {
        self.chain.funded_key().await.expect("fund a user key")
    }

    pub fn token(&self, signer: &PrivateKeySigner) -> CarbonToken::CarbonTokenInstance<DynProvider> {
        CarbonToken::new(self.deployment.token, self.chain.provider_with(signer.clone()))
    }

    pub fn staking(&self, signer: &PrivateKeySigner) -> CarbonStaking::CarbonStakingInstance<DynProvider> {
        CarbonStaking::new(self.deployment.staking, self.chain.provider_with(signer.clone()))
    }

    pub fn anchor(&self, signer: &PrivateKeySigner) -> LedgerAnchor::LedgerAnchorInstance<DynProvider> {
        LedgerAnchor::new(self.deployment.anchor, self.chain.provider_with(signer.clone()))
    }

    /// Read-only token calls.
    pub fn token_view(&self) -> CarbonToken::CarbonTokenInstance<DynProvider> {
        CarbonToken::new(self.deployment.token, self.chain.provider().clone())
    }

    pub async fn balance(&self, holder: Address) -> U256 {
        self.token_view().balanceOf(holder).call().await.expect("balanceOf")
    }

    pub async fn total_supply(&self) -> U256 {
        self.token_view().totalSupply().call().await.expect("totalSupply")
    }

    /// Moves the chain's clock `seconds` ahead and mines a block at the new time.
    pub async fn advance_time(&self, seconds: u64) {
        let provider = self.chain.provider();
        provider.anvil_increase_time(seconds).await.expect("evm_increaseTime");
        provider.evm_mine(None).await.expect("evm_mine");
    }

    /// The latest block's timestamp.
    pub async fn now(&self) -> u64 {
        let block = self
            .chain
            .provider()
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .expect("latest block")
            .expect("a latest block exists");
        block.header.timestamp
    }
}

/// How long a test waits for a receipt (anvil mines at once; a stuck nonce never ends).
const RECEIPT_WAIT_MAX: Duration = Duration::from_secs(30);

/// Waits for a sent transaction's receipt and requires it to have succeeded.
pub async fn mined(sent: Result<PendingTransactionBuilder<Ethereum>, ContractError>) -> TransactionReceipt {
    let pending = sent.expect("the transaction is accepted").with_timeout(Some(RECEIPT_WAIT_MAX));
    let receipt = pending.get_receipt().await.expect("a receipt in time");
    assert!(receipt.status(), "transaction {} reverted", receipt.transaction_hash);
    receipt
}

/// The custom error `E` a refused transaction reverted with (found when estimating its gas,
/// before anything is sent).
pub fn refused<E: SolError>(sent: Result<PendingTransactionBuilder<Ethereum>, ContractError>) -> E {
    let err = match sent {
        Ok(pending) => panic!("expected {} but transaction {} was sent", E::SIGNATURE, pending.tx_hash()),
        Err(err) => err,
    };
    err.as_decoded_error::<E>().unwrap_or_else(|| panic!("expected {} but got: {err}", E::SIGNATURE))
}
