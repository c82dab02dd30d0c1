//! `GET /api/v1/reports/chain-reconciliation`: the token's supply on the chain against the
//! ledger's `chain` account, with every timing difference shown as a term (issue 6, flow 6).
//! The API reads it through [`ChainInfoSource::chain_reconciliation`], which the binary
//! implements with the `chain-bridge` crate.
//!
//! [`ChainInfoSource::chain_reconciliation`]: crate::routes::chain::ChainInfoSource::chain_reconciliation

use axum::extract::State;
use axum::Json;
use domain::user::Role;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Caller, RequestInfo};
use crate::error::ApiError;
use crate::security::{self, SecurityEvent};
use crate::state::AppState;

const STAFF: &[Role] = &[Role::Admin, Role::Auditor];
/// Seconds a client waits before asking again when the chain does not answer.
const CHAIN_UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;
/// The security log's kind (and code) for a reconciliation that does not balance.
pub const DIFFERENCE_KIND: &str = "chain_reconciliation_difference";

/// The reconciliation at a final block and a ledger position. Amounts are CARBON at scale 3.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainReconciliation {
    /// The final block B: `head - confirmations + 1`, or the chain's `finalized` block.
    pub block: u64,
    pub block_hash: String,
    /// The ledger position P: the relay's published watermark (every event at or below it is
    /// committed and none can appear below it later).
    pub position: i64,
    /// `totalSupply()` at B.
    #[schema(example = "1500.000")]
    pub total_supply: String,
    /// Credits minus debits of `system:chain` at P.
    #[schema(example = "1500.000")]
    pub chain_account: String,
    /// Timing differences between B and P, each signed as it is added to `chain_account`.
    pub terms: Vec<ReconciliationTerm>,
    /// What no term explains (a mint without a ledger withdrawal, a posted burn without its
    /// log): it shows in `difference`, never absorbed.
    pub unmatched: Vec<ReconciliationUnmatched>,
    /// `total_supply - (chain_account + sum of terms)`: non-zero is an alert.
    #[schema(example = "0.000")]
    pub difference: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReconciliationTerm {
    /// `mints_pending`, `mints_ahead_of_ledger`, `burns_not_posted`, `burns_posted_ahead`.
    pub kind: String,
    pub description: String,
    #[schema(example = "-10.000")]
    pub amount: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReconciliationUnmatched {
    /// `mint_without_withdrawal`, `mint_of_returned_withdrawal`, `posting_without_log`.
    pub kind: String,
    /// The on-chain ref of a mint, or the ledger's id of a log.
    pub reference: String,
    pub tx_hash: Option<String>,
    /// Signed as it adds to `difference` (the listed items sum to it when none were left out).
    pub amount: String,
}

/// The token's total supply at a final block against the ledger's `chain` account, with each
/// term shown. Auditors and admins. A non-zero `difference` is written to the security log.
#[utoipa::path(get, path = "/api/v1/reports/chain-reconciliation", tag = "reports", security(("bearer" = [])),
    responses((status = 200, body = ChainReconciliation), (status = 401, body = crate::error::Problem),
              (status = 403, body = crate::error::Problem),
              (status = 503, description = "chain_not_configured: this server runs no chain bridge; \
                  chain_unavailable: the chain's node did not answer", body = crate::error::Problem)))]
pub async fn reports_chain_reconciliation(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
) -> Result<Json<ChainReconciliation>, ApiError> {
    caller.require_any(&state, &info, STAFF).await?;
    let Some(source) = &state.chain else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "chain_not_configured",
            "no chain is configured on this server (ECOLEDGER_ETH_DEV_CHAIN or ECOLEDGER_ETH_RPC_URL)",
        ));
    };
    let report = match source.chain_reconciliation().await {
        Ok(report) => report,
        Err(error) => {
            tracing::warn!(%error, "chain reconciliation failed");
            return Err(ApiError::unavailable(
                "chain_unavailable",
                "the chain's node did not answer; try again shortly",
                CHAIN_UNAVAILABLE_RETRY_AFTER_SECS,
            ));
        }
    };
    if report.difference.parse::<Decimal>().map_or(true, |difference| !difference.is_zero()) {
        let event = SecurityEvent::new(DIFFERENCE_KIND, &info)
            .actor(caller.user_id.to_string())
            .code(DIFFERENCE_KIND)
            .details(serde_json::json!({
                "block": report.block,
                "position": report.position,
                "total_supply": report.total_supply,
                "chain_account": report.chain_account,
                "difference": report.difference,
            }));
        security::record(&state, event).await;
    }
    Ok(Json(report))
}
