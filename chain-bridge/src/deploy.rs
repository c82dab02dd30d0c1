//! Deploys the three contracts with a deploy key that keeps no role afterwards: the
//! constructors put the admin role on the cold key and `BRIDGE_ROLE` on the hot key directly.

use alloy::primitives::{Address, U256};
use std::time::Duration;

use alloy::network::Ethereum;
use alloy::providers::{PendingTransactionBuilder, Provider};
use alloy::rpc::types::TransactionReceipt;

use crate::contracts::{CarbonStaking, CarbonToken, LedgerAnchor};

/// How long a deployment waits for each receipt.
const RECEIPT_WAIT_MAX: Duration = Duration::from_secs(120);

/// What [`deploy`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("failed to deploy {contract}: {source}")]
    Send {
        contract: &'static str,
        #[source]
        source: alloy::contract::Error,
    },
    #[error("failed to get the receipt of {contract}'s deployment: {source}")]
    Receipt {
        contract: &'static str,
        #[source]
        source: alloy::providers::PendingTransactionError,
    },
    #[error("{contract}'s deployment (transaction {tx_hash}) reverted")]
    Reverted { contract: &'static str, tx_hash: alloy::primitives::TxHash },
    #[error("the admin delay {0} s does not fit in 48 bits")]
    AdminDelayTooLong(u64),
}

/// Who holds which role, and the contracts' parameters.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// The cold key: `DEFAULT_ADMIN_ROLE` on the token and the anchor.
    pub admin: Address,
    /// The bridge's hot key: `BRIDGE_ROLE` on the token and the anchor.
    pub bridge: Address,
    /// `PAUSER_ROLE` on the token (usually the hot key, so the API can pause at once).
    pub pauser: Address,
    /// Seconds an admin transfer waits before the new admin may accept it.
    pub admin_delay_secs: u64,
    /// Token units (0.001 tCO2e) the bridge may mint per UTC day.
    pub daily_mint_cap: U256,
    /// Seconds a stake stays locked (at least 1).
    pub staking_minimum_lock_secs: u64,
}

/// Where the contracts went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    pub token: Address,
    pub staking: Address,
    pub anchor: Address,
    /// The block of the first deployment: where a log watcher starts.
    pub first_block: u64,
}

/// Deploys `CarbonToken`, `CarbonStaking` (on that token) and `LedgerAnchor` from the key that
/// signs for `provider`, one after the other, each waiting for its receipt.
pub async fn deploy<P: Provider>(provider: &P, config: &DeployConfig) -> Result<Deployment, DeployError> {
    let admin_delay = alloy::primitives::Uint::<48, 1>::try_from(config.admin_delay_secs)
        .map_err(|_| DeployError::AdminDelayTooLong(config.admin_delay_secs))?;

    let token_tx = CarbonToken::deploy_builder(
        provider,
        admin_delay,
        config.admin,
        config.bridge,
        config.pauser,
        config.daily_mint_cap,
    );
    let token_receipt = confirm("CarbonToken", token_tx.send().await).await?;
    let token = token_receipt.contract_address.expect("a successful creation has an address");

    let staking_tx = CarbonStaking::deploy_builder(provider, token, config.staking_minimum_lock_secs);
    let staking_receipt = confirm("CarbonStaking", staking_tx.send().await).await?;

    let anchor_tx = LedgerAnchor::deploy_builder(provider, admin_delay, config.admin, config.bridge);
    let anchor_receipt = confirm("LedgerAnchor", anchor_tx.send().await).await?;

    Ok(Deployment {
        token,
        staking: staking_receipt.contract_address.expect("a successful creation has an address"),
        anchor: anchor_receipt.contract_address.expect("a successful creation has an address"),
        first_block: token_receipt.block_number.expect("a mined receipt has a block"),
    })
}

async fn confirm(
    contract: &'static str,
    sent: Result<PendingTransactionBuilder<Ethereum>, alloy::contract::Error>,
) -> Result<TransactionReceipt, DeployError> {
    let pending = sent.map_err(|source| DeployError::Send { contract, source })?;
    let receipt = pending
        .with_timeout(Some(RECEIPT_WAIT_MAX))
        .get_receipt()
        .await
        .map_err(|source| DeployError::Receipt { contract, source })?;
    if !receipt.status() || receipt.contract_address.is_none() {
        return Err(DeployError::Reverted { contract, tx_hash: receipt.transaction_hash });
    }
    Ok(receipt)
}
