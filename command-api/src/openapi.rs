//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{audit, auth, health, listings, purchases, reports, transactions, transfers, users, wallets};

#[derive(OpenApi)]
#[openapi(
    info(title = "EcoLedger API", description = "Event-sourced ledger for carbon-credit markets. Amounts are JSON strings \
        at the currency's scale (EUR/USD 2, ETH 18, CARBON 3 decimals); more decimals than allowed is \
        `amount_precision_exceeded`, never rounded. Where the platform computes an amount it rounds half-even. \
        Errors are application/problem+json with a stable `code`."),
    paths(
        users::users_create, users::users_me, users::users_get, users::users_update_profile, users::users_wallets,
        users::users_grant_role, users::users_revoke_role, users::users_erase_personal_data,
        auth::auth_token,
        wallets::wallets_get, wallets::wallets_entries, wallets::deposits_create, wallets::withdrawals_create,
        wallets::withdrawals_complete, wallets::withdrawals_fail, wallets::wallets_freeze, wallets::wallets_unfreeze,
        transactions::transactions_get, transactions::transactions_list, transactions::transactions_reverse,
        transfers::transfers_create, transfers::transfers_get,
        listings::announcements_create, listings::announcements_list, listings::announcements_get,
        listings::announcements_update, listings::announcements_cancel,
        purchases::purchases_create, purchases::purchases_get,
        crate::routes::prices::prices_create, crate::routes::prices::prices_list,
        crate::routes::prices::prices_history, crate::routes::prices::prices_stream,
        audit::audit_events, audit::audit_verify, audit::audit_security,
        reports::reports_trial_balance,
        crate::routes::chain_reconciliation::reports_chain_reconciliation,
        crate::routes::chain::chain_info,
        crate::routes::chain_addresses::chain_challenge, crate::routes::chain_addresses::chain_addresses_link,
        crate::routes::chain_addresses::chain_addresses_list,
        crate::routes::chain_withdrawals::chain_withdrawals_create, crate::routes::chain_withdrawals::chain_withdrawals_get,
        crate::routes::chain_withdrawals::chain_withdrawals_cancel, crate::routes::chain_withdrawals::chain_pause,
        crate::routes::chain_withdrawals::chain_unpause, crate::routes::chain_withdrawals::chain_suspense_list,
        crate::routes::chain_withdrawals::chain_suspense_resolve,
        crate::routes::retirements::retirements_create, crate::routes::retirements::retirements_get,
        crate::routes::retirements::retirements_list,
        health::health_live, health::health_ready,
    ),
    modifiers(&BearerAuth),
    tags((name = "users"), (name = "auth"), (name = "wallets"), (name = "transactions"), (name = "transfers"), (name = "announcements"), (name = "purchases"), (name = "prices"), (name = "audit"), (name = "reports"), (name = "chain"), (name = "retirements"), (name = "health"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
