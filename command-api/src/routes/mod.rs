//! Routes, one file per resource.

pub mod audit;
pub mod auth;
pub mod chain;
pub mod chain_addresses;
pub mod chain_reconciliation;
pub mod chain_withdrawals;
pub mod health;
pub mod listings;
pub mod prices;
pub mod purchases;
pub mod reports;
pub mod retirements;
pub mod transactions;
pub mod transfers;
pub mod users;
pub mod wallets;

use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::state::AppState;

/// Every `/api/v1` route.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", post(users::users_create))
        .route("/api/v1/users/me", get(users::users_me))
        .route("/api/v1/users/{id}", get(users::users_get))
        .route("/api/v1/users/{id}/profile", put(users::users_update_profile))
        .route("/api/v1/users/{id}/roles", post(users::users_grant_role))
        .route("/api/v1/users/{id}/roles/{role}", delete(users::users_revoke_role))
        .route("/api/v1/users/{id}/personal-data", delete(users::users_erase_personal_data))
        .route("/api/v1/users/{id}/wallets", get(users::users_wallets))
        .route("/api/v1/auth/token", post(auth::auth_token))
        .route("/api/v1/wallets/{id}", get(wallets::wallets_get))
        .route("/api/v1/wallets/{id}/entries", get(wallets::wallets_entries))
        .route("/api/v1/wallets/{id}/deposits", post(wallets::deposits_create))
        .route("/api/v1/wallets/{id}/withdrawals", post(wallets::withdrawals_create))
        .route("/api/v1/wallets/{id}/freeze", post(wallets::wallets_freeze))
        .route("/api/v1/wallets/{id}/unfreeze", post(wallets::wallets_unfreeze))
        .route("/api/v1/withdrawals/{id}/complete", post(wallets::withdrawals_complete))
        .route("/api/v1/withdrawals/{id}/fail", post(wallets::withdrawals_fail))
        .route("/api/v1/transactions", get(transactions::transactions_list))
        .route("/api/v1/transactions/{id}", get(transactions::transactions_get))
        .route("/api/v1/transactions/{id}/reversal", post(transactions::transactions_reverse))
        .route("/api/v1/announcements", post(listings::announcements_create).get(listings::announcements_list))
        .route(
            "/api/v1/announcements/{id}",
            get(listings::announcements_get)
                .patch(listings::announcements_update)
                .delete(listings::announcements_cancel),
        )
        .route("/api/v1/purchases", post(purchases::purchases_create))
        .route("/api/v1/purchases/{id}", get(purchases::purchases_get))
        .route("/api/v1/transfers", post(transfers::transfers_create))
        .route("/api/v1/transfers/{id}", get(transfers::transfers_get))
        .merge(prices::routes())
        .route("/api/v1/audit/events", get(audit::audit_events))
        .route("/api/v1/audit/verify", get(audit::audit_verify))
        .route("/api/v1/audit/security", get(audit::audit_security))
        .route("/api/v1/chain/info", get(chain::chain_info))
        .merge(chain_routes())
        .route("/api/v1/reports/trial-balance", get(reports::reports_trial_balance))
        .route("/api/v1/reports/chain-reconciliation", get(chain_reconciliation::reports_chain_reconciliation))
        .route("/health/live", get(health::health_live))
        .route("/health/ready", get(health::health_ready))
        .route("/metrics", get(health::metrics))
}

/// The chain flows: linking addresses, withdrawals to the chain and their controls, and
/// retirements (whose certificates are public).
fn chain_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chain/challenge", get(chain_addresses::chain_challenge))
        .route(
            "/api/v1/chain/addresses",
            post(chain_addresses::chain_addresses_link).get(chain_addresses::chain_addresses_list),
        )
        .route("/api/v1/chain/withdrawals", post(chain_withdrawals::chain_withdrawals_create))
        .route("/api/v1/chain/withdrawals/{id}", get(chain_withdrawals::chain_withdrawals_get))
        .route("/api/v1/chain/withdrawals/{id}/cancel", post(chain_withdrawals::chain_withdrawals_cancel))
        .route("/api/v1/chain/pause", post(chain_withdrawals::chain_pause))
        .route("/api/v1/chain/unpause", post(chain_withdrawals::chain_unpause))
        .route("/api/v1/chain/suspense", get(chain_withdrawals::chain_suspense_list))
        .route("/api/v1/chain/suspense/{id}/resolve", post(chain_withdrawals::chain_suspense_resolve))
        .route("/api/v1/retirements", post(retirements::retirements_create).get(retirements::retirements_list))
        .route("/api/v1/retirements/{id}", get(retirements::retirements_get))
}
