//! The bridge's chain: the dev chain it starts or the network it is pointed at, the contracts
//! there, the hot key, and the chain's identity checked against the one the ledger recorded
//! ([`crate::identity`]). The flows (withdrawals, deposits, anchoring) run on top of it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use alloy::network::EthereumWallet;
pub use alloy::primitives::Address;
use alloy::primitives::U256;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
pub use alloy::signers::local::PrivateKeySigner;
pub use alloy::transports::http::reqwest::Url;
use sqlx::PgPool;

use crate::contracts::CarbonToken;
use crate::deploy::{deploy, DeployConfig, DeployError};
use crate::dev_chain::{DevChain, DevChainConfig, DevChainError};
use crate::identity::{self, ContractAddresses, IdentityError, RecordedIdentity};

/// DEV ONLY: anvil's well-known account 0, which deploys the dev chain's contracts and keeps no
/// role. Anvil funds its well-known accounts at genesis; they are public, never use them on a
/// real network.
pub const DEV_DEPLOY_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// DEV ONLY: anvil's well-known account 1, the dev chain's cold admin key.
pub const DEV_ADMIN_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// DEV ONLY: anvil's well-known account 2, the dev chain's hot (bridge) key when
/// `ECOLEDGER_ETH_SIGNER_KEY` is unset.
pub const DEV_BRIDGE_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
/// Confirmations a mint or deposit needs on the dev chain.
pub const DEV_CONFIRMATIONS_DEFAULT: u64 = 2;
/// The dev chain mines a block every this long.
pub const DEV_BLOCK_TIME_DEFAULT: Duration = Duration::from_secs(1);
/// The dev deployment's daily mint cap: 1,000,000 t in token units of 0.001 t.
const DEV_DAILY_MINT_CAP: u64 = 1_000_000_000;
/// The dev deployment's staking lock.
const DEV_STAKING_LOCK_SECS: u64 = 60;
/// Where the dev chain keeps its state under the data directory.
const DEV_STATE_SUBDIR: &str = "anvil";

/// Which chain the bridge works on.
#[derive(Debug, Clone)]
pub enum Network {
    /// DEV ONLY: a local anvil started by the bridge, its state under `<data_dir>/anvil`, the
    /// contracts deployed on its first start with the well-known dev keys.
    Dev { data_dir: PathBuf, block_time: Duration },
    /// A node at `url` with the contracts at `contracts` (`None`: the recorded ones).
    Rpc { url: Url, contracts: Option<ContractAddresses> },
}

/// How to run the bridge.
#[derive(Clone)]
pub struct BridgeConfig {
    pub network: Network,
    /// The hot key (`BRIDGE_ROLE`); on the dev chain `None` is [`DEV_BRIDGE_KEY`].
    pub signer: Option<PrivateKeySigner>,
    /// Confirmations a mint or deposit needs; `None` counts only the `finalized` block (the dev
    /// chain's default is [`DEV_CONFIRMATIONS_DEFAULT`]).
    pub confirmations: Option<u64>,
}

impl std::fmt::Debug for BridgeConfig {
    /// The signer shows as its address, never its key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("network", &self.network)
            .field("signer", &self.signer.as_ref().map(PrivateKeySigner::address))
            .field("confirmations", &self.confirmations)
            .finish()
    }
}

/// What starting the bridge can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("failed to start the dev chain: {0}")]
    DevChain(#[from] DevChainError),
    #[error("failed to deploy the contracts on the dev chain: {0}")]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Config(String),
}

/// What `GET /api/v1/chain/info` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub chain_id: u64,
    pub contracts: ContractAddresses,
    /// The hot key's address; `None` where no signer is configured (a CLI reading the chain).
    pub bridge_address: Option<Address>,
    pub confirmations: Option<u64>,
    /// `CarbonToken.paused()` at the latest block.
    pub paused: bool,
}

/// The bridge's chain, its identity checked. Stops the dev chain (if it started one) when
/// dropped or at [`Bridge::stop`].
#[derive(Debug)]
pub struct Bridge {
    dev_chain: Mutex<Option<DevChain>>,
    rpc_url: Url,
    provider: DynProvider,
    identity: RecordedIdentity,
    bridge_address: Address,
    /// The hot key; the transaction sender signs with it (never printed: `Debug` shows its
    /// address).
    signer: PrivateKeySigner,
    confirmations: Option<u64>,
}

impl Bridge {
    /// Starts the dev chain or connects to the configured node, deploys the contracts on a dev
    /// chain the ledger has not used yet, then records the chain's identity (first use) or
    /// checks it against the recorded one, refusing a different chain.
    pub async fn start(pool: &PgPool, config: &BridgeConfig) -> Result<Bridge, BridgeError> {
        let recorded = identity::load_identity(pool).await?;
        match &config.network {
            Network::Dev { data_dir, block_time } => {
                let state_dir = data_dir.join(DEV_STATE_SUBDIR);
                let chain = DevChain::start(DevChainConfig::new(state_dir).block_time(*block_time)).await?;
                let signer = match &config.signer {
                    Some(signer) => signer.clone(),
                    None => dev_key(DEV_BRIDGE_KEY),
                };
                let (contracts, first_block) = match &recorded {
                    Some(recorded) => (recorded.identity.contracts, recorded.first_block),
                    None => deploy_dev(&chain, signer.address()).await?,
                };
                let confirmations = config.confirmations.or(Some(DEV_CONFIRMATIONS_DEFAULT));
                let rpc_url = chain.rpc_url().clone();
                let provider = chain.provider().clone();
                let current = current_identity(&provider, contracts, first_block, Some(&rpc_url)).await?;
                let identity = identity::record_or_check(pool, &current).await?;
                tracing::info!(
                    chain_id = identity.identity.chain_id,
                    %rpc_url,
                    token = %contracts.carbon_token,
                    "dev chain running; chain identity checked"
                );
                Ok(Bridge {
                    dev_chain: Mutex::new(Some(chain)),
                    rpc_url,
                    provider,
                    identity,
                    bridge_address: signer.address(),
                    signer,
                    confirmations,
                })
            }
            Network::Rpc { url, contracts } => {
                let Some(signer) = &config.signer else {
                    return Err(BridgeError::Config(
                        "ECOLEDGER_ETH_SIGNER_KEY (the bridge's hot key) is required with ECOLEDGER_ETH_RPC_URL".into(),
                    ));
                };
                let contracts = contracts.or(recorded.as_ref().map(|r| r.identity.contracts)).ok_or_else(|| {
                    BridgeError::Config(
                        "set ECOLEDGER_CARBON_TOKEN_ADDRESS, ECOLEDGER_STAKING_ADDRESS and ECOLEDGER_ANCHOR_ADDRESS \
                         (`ecoledger chain deploy` prints them)"
                            .into(),
                    )
                })?;
                let provider = ProviderBuilder::new().connect_http(url.clone()).erased();
                let first_block = recorded.as_ref().and_then(|r| r.first_block);
                let current = current_identity(&provider, contracts, first_block, None).await?;
                let identity = identity::record_or_check(pool, &current).await?;
                tracing::info!(chain_id = identity.identity.chain_id, "chain identity checked");
                Ok(Bridge {
                    dev_chain: Mutex::new(None),
                    rpc_url: url.clone(),
                    provider,
                    identity,
                    bridge_address: signer.address(),
                    signer: signer.clone(),
                    confirmations: config.confirmations,
                })
            }
        }
    }

    /// The recorded identity (the dev chain's RPC URL current).
    pub fn identity(&self) -> &RecordedIdentity {
        &self.identity
    }

    pub fn rpc_url(&self) -> &Url {
        &self.rpc_url
    }

    /// The hot key the transaction sender signs with.
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    /// Confirmations a mint or deposit needs; `None`: only the `finalized` block counts.
    pub fn confirmations(&self) -> Option<u64> {
        self.confirmations
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The chain's id, contracts, hot key and whether the token is paused (read now).
    pub async fn info(&self) -> Result<ChainInfo, alloy::contract::Error> {
        let contracts = self.identity.identity.contracts;
        let paused = CarbonToken::new(contracts.carbon_token, &self.provider).paused().call().await?;
        Ok(ChainInfo {
            chain_id: self.identity.identity.chain_id,
            contracts,
            bridge_address: Some(self.bridge_address),
            confirmations: self.confirmations,
            paused,
        })
    }

    /// Stops the dev chain (its state written); nothing on a real network. Blocks until anvil
    /// has exited (at most a few seconds).
    pub fn stop(&self) {
        let chain = self.dev_chain.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(chain) = chain {
            chain.stop();
        }
    }
}

/// The identity of the chain behind `provider`, refusing addresses without code: a chain the
/// ledger has not used must hold the contracts before it is recorded, and a recorded chain
/// without them is reported by the comparison.
async fn current_identity(
    provider: &DynProvider,
    contracts: ContractAddresses,
    first_block: Option<u64>,
    dev_rpc_url: Option<&Url>,
) -> Result<RecordedIdentity, IdentityError> {
    let identity = identity::read_identity(provider, contracts).await?;
    Ok(RecordedIdentity {
        identity,
        is_dev_chain: dev_rpc_url.is_some(),
        dev_rpc_url: dev_rpc_url.map(Url::to_string),
        first_block,
    })
}

/// Deploys the contracts on a dev chain with the dev deploy key: admin on the dev cold key,
/// bridge and pauser on `bridge`, which gets ETH when it is not one of anvil's funded accounts.
async fn deploy_dev(chain: &DevChain, bridge: Address) -> Result<(ContractAddresses, Option<u64>), BridgeError> {
    let balance = chain.provider().get_balance(bridge).await.map_err(DevChainError::Rpc)?;
    if balance.is_zero() {
        chain.fund(bridge).await?;
    }
    let config = DeployConfig {
        admin: dev_key(DEV_ADMIN_KEY).address(),
        bridge,
        pauser: bridge,
        admin_delay_secs: 0,
        daily_mint_cap: U256::from(DEV_DAILY_MINT_CAP),
        staking_minimum_lock_secs: DEV_STAKING_LOCK_SECS,
    };
    let deployment = deploy(&chain.provider_with(dev_key(DEV_DEPLOY_KEY)), &config).await?;
    tracing::info!(token = %deployment.token, staking = %deployment.staking, anchor = %deployment.anchor,
        "deployed the contracts on the dev chain");
    let contracts =
        ContractAddresses { carbon_token: deployment.token, staking: deployment.staking, anchor: deployment.anchor };
    Ok((contracts, Some(deployment.first_block)))
}

fn dev_key(key: &str) -> PrivateKeySigner {
    key.parse().expect("a well-known dev key parses")
}

/// A provider that signs with `signer` and asks the node for each nonce (see
/// [`DevChain::provider_with`] for why).
pub fn signing_provider(url: Url, signer: PrivateKeySigner) -> DynProvider {
    ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased()
}

/// Reads the chain's info for a CLI: at `url`, or without it at the dev chain's recorded RPC
/// URL; the contracts configured or else recorded; the identity compared with the recorded one
/// when there is one (never recorded from here).
pub async fn read_info(
    pool: &PgPool,
    url: Option<Url>,
    contracts: Option<ContractAddresses>,
    signer: Option<Address>,
    confirmations: Option<u64>,
) -> Result<ChainInfo, BridgeError> {
    let chain = resolve_chain(pool, url, contracts).await?;
    let paused = CarbonToken::new(chain.contracts.carbon_token, &chain.provider)
        .paused()
        .call()
        .await
        .map_err(|error| BridgeError::Config(format!("failed to read CarbonToken.paused(): {error}")))?;
    Ok(ChainInfo {
        chain_id: chain.chain_id,
        contracts: chain.contracts,
        bridge_address: signer,
        confirmations: confirmations.or(chain.is_dev.then_some(DEV_CONFIRMATIONS_DEFAULT)),
        paused,
    })
}

/// The ledger's chain as a CLI reaches it, its identity checked.
pub struct ResolvedChain {
    pub url: Url,
    pub provider: DynProvider,
    pub chain_id: u64,
    pub contracts: ContractAddresses,
    pub is_dev: bool,
}

/// Finds the ledger's chain for a CLI: at `url`, or without it at the dev chain's recorded RPC
/// URL; the contracts configured or else recorded; compared with the recorded identity when
/// there is one.
pub async fn resolve_chain(
    pool: &PgPool,
    url: Option<Url>,
    contracts: Option<ContractAddresses>,
) -> Result<ResolvedChain, BridgeError> {
    let recorded = identity::load_identity(pool).await?;
    let url = match (url, &recorded) {
        (Some(url), _) => url,
        (None, Some(RecordedIdentity { dev_rpc_url: Some(url), .. })) => url
            .parse()
            .map_err(|_| BridgeError::Config(format!("the recorded dev chain RPC URL {url:?} does not parse")))?,
        (None, _) => {
            return Err(BridgeError::Config(
                "no chain: set ECOLEDGER_ETH_RPC_URL, or run `ecoledger serve` with ECOLEDGER_ETH_DEV_CHAIN=1 once"
                    .into(),
            ))
        }
    };
    let contracts = contracts
        .or(recorded.as_ref().map(|r| r.identity.contracts))
        .ok_or_else(|| BridgeError::Config("no contract addresses configured or recorded".into()))?;
    let provider = ProviderBuilder::new().connect_http(url.clone()).erased();
    let current = identity::read_identity(&provider, contracts).await?;
    if let Some(recorded) = &recorded {
        let as_recorded = RecordedIdentity { identity: current.clone(), ..recorded.clone() };
        identity::compare(recorded, &as_recorded)?;
    }
    let is_dev = recorded.as_ref().is_some_and(|r| r.is_dev_chain);
    Ok(ResolvedChain { url, provider, chain_id: current.chain_id, contracts, is_dev })
}
