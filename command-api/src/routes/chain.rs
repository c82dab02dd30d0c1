//! `/api/v1/chain`: the chain the bridge works on. The API knows the chain only through
//! [`ChainInfoSource`], which the binary implements with the `chain-bridge` crate, so this crate
//! does not depend on an Ethereum client.

use axum::extract::State;
use axum::Json;
use futures::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Seconds a client waits before asking again when the chain does not answer.
const CHAIN_UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// The chain's identity and state as the bridge sees them.
pub trait ChainInfoSource: Send + Sync {
    /// Reads the chain's info now (`paused` from the token contract); `Err` carries why the
    /// chain did not answer (logged, never shown to the caller).
    fn chain_info(&self) -> BoxFuture<'_, Result<ChainInfo, String>>;

    /// The chain's latest block number; `Err` carries why the chain did not answer.
    fn head_block(&self) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async { Err("this chain source reads no head".to_string()) })
    }

    /// Reconciles the token's supply with the ledger's `chain` account now
    /// (`GET /api/v1/reports/chain-reconciliation`); `Err` carries why it could not.
    fn chain_reconciliation(
        &self,
    ) -> BoxFuture<'_, Result<crate::routes::chain_reconciliation::ChainReconciliation, String>> {
        Box::pin(async { Err("this chain source does not reconcile".to_string()) })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainInfo {
    /// EIP-155 chain id (31337 on the dev chain).
    #[schema(example = 31337)]
    pub chain_id: u64,
    pub contracts: ChainContracts,
    /// The bridge's hot key: it mints, records retirements and anchors.
    #[schema(example = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC")]
    pub bridge_address: String,
    /// Blocks a mint or a deposit waits for before it counts; `null`: only at the chain's
    /// `finalized` block.
    pub confirmations: Option<u64>,
    /// Whether the token is paused: no mint, transfer, bridge-in or retirement moves.
    pub paused: bool,
}

/// The contracts' addresses, EIP-55 checksummed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainContracts {
    /// `CarbonToken`: CARBON as an ERC-20 with 3 decimals (0.001 tCO2e).
    #[schema(example = "0x5FbDB2315678afecb367f032d93F642f64180aa3")]
    pub carbon_token: String,
    /// `CarbonStaking`.
    pub staking: String,
    /// `LedgerAnchor`: checkpoints of the ledger's global hash chain.
    pub anchor: String,
}

/// The chain the ledger bridges CARBON to: its id, the contracts, the bridge's address, the
/// confirmations a chain fact needs, and whether the token is paused. Any signed-in user.
#[utoipa::path(get, path = "/api/v1/chain/info", tag = "chain", security(("bearer" = [])),
    responses((status = 200, body = ChainInfo), (status = 401, body = crate::error::Problem),
              (status = 503, description = "chain_not_configured: this server runs no chain bridge; \
                  chain_unavailable: the chain's node did not answer", body = crate::error::Problem)))]
pub async fn chain_info(State(state): State<AppState>, _caller: Caller) -> Result<Json<ChainInfo>, ApiError> {
    let Some(source) = &state.chain else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "chain_not_configured",
            "no chain is configured on this server (ECOLEDGER_ETH_DEV_CHAIN or ECOLEDGER_ETH_RPC_URL)",
        ));
    };
    match source.chain_info().await {
        Ok(info) => Ok(Json(info)),
        Err(error) => {
            tracing::warn!(%error, "the chain did not answer chain/info");
            Err(ApiError::unavailable(
                "chain_unavailable",
                "the chain's node did not answer; try again shortly",
                CHAIN_UNAVAILABLE_RETRY_AFTER_SECS,
            ))
        }
    }
}
