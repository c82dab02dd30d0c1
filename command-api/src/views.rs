//! Response bodies shared by several routes. Amounts print at their currency's scale.

use chrono::{DateTime, Utc};
use domain::Currency;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WalletView {
    pub id: Uuid,
    pub owner_id: Uuid,
    #[schema(example = "EUR")]
    pub currency: String,
    #[schema(example = "10.00")]
    pub balance: String,
    #[schema(example = "0.00")]
    pub held: String,
    #[schema(example = "10.00")]
    pub available: String,
    pub frozen: bool,
}

impl WalletView {
    pub fn new(
        id: Uuid,
        owner_id: Uuid,
        currency: Currency,
        balance: Decimal,
        held: Decimal,
        frozen: bool,
    ) -> WalletView {
        WalletView {
            id,
            owner_id,
            currency: currency.code().to_string(),
            balance: currency.format(balance),
            held: currency.format(held),
            available: currency.format(balance - held),
            frozen,
        }
    }

    /// From an `rm_wallets` row (wallet_id, owner_id, currency, balance, held, frozen).
    pub fn from_row(row: &sqlx::postgres::PgRow) -> WalletView {
        let currency: Currency = row.get::<String, _>("currency").parse().unwrap_or(Currency::Eur);
        WalletView::new(
            row.get("wallet_id"),
            row.get("owner_id"),
            currency,
            row.get("balance"),
            row.get("held"),
            row.get("frozen"),
        )
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    /// Absent once erased, and for other users' views.
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub roles: Vec<String>,
    pub is_seller: bool,
    pub is_buyer: bool,
    pub registered_at: Option<DateTime<Utc>>,
}

/// Role names in alphabetical order, as every answer lists them.
pub fn role_names(roles: &std::collections::BTreeSet<domain::user::Role>) -> Vec<String> {
    let mut names: Vec<String> = roles.iter().map(|role| role.name().to_string()).collect();
    names.sort();
    names
}

/// Formats a stored amount of a currency code (as the read models keep them).
pub fn format_amount(currency: &str, amount: Decimal) -> String {
    currency.parse::<Currency>().map(|c| c.format(amount)).unwrap_or_else(|_| amount.to_string())
}

/// Opaque list cursors: base64url of the last position (or id) returned.
pub mod cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use crate::error::ApiError;

    pub fn encode(position: i64) -> String {
        URL_SAFE_NO_PAD.encode(format!("p{position}"))
    }

    pub fn decode(cursor: Option<&str>) -> Result<i64, ApiError> {
        let Some(cursor) = cursor else { return Ok(0) };
        let invalid = || ApiError::invalid_field("cursor", "invalid", "not a cursor this API returned");
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        text.strip_prefix('p').and_then(|p| p.parse().ok()).filter(|p: &i64| *p >= 0).ok_or_else(invalid)
    }
}

/// Page sizes: default and maximum of every list.
pub const PAGE_LIMIT_DEFAULT: i64 = 50;
pub const PAGE_LIMIT_MAX: i64 = 200;

/// A requested page size within bounds.
pub fn page_limit(limit: Option<i64>) -> Result<i64, crate::error::ApiError> {
    match limit {
        None => Ok(PAGE_LIMIT_DEFAULT),
        Some(limit) if (1..=PAGE_LIMIT_MAX).contains(&limit) => Ok(limit),
        Some(_) => Err(crate::error::ApiError::invalid_field(
            "limit",
            "out_of_range",
            format!("must be between 1 and {PAGE_LIMIT_MAX}"),
        )),
    }
}
