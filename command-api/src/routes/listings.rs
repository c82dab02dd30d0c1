//! `/api/v1/announcements`: carbon credits offered by sellers (the seeds' announcements).
//! A listing's quantity is one hold on the seller's CARBON wallet.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Datelike, Duration, Utc};
use domain::listing::{Credit, Listing, ListingCommand, ListingTerms, Pricing, PREMIUM_BPS_MAX};
use domain::user::{Role, User};
use domain::wallet::{wallet_id, Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::UnitOfWork;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{Arguments, Row};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_created, commit_ok, run, CommandInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::registration::arguments;
use crate::routes::wallets::validate_text;
use crate::state::AppState;
use crate::views::{cursor, format_amount, page_limit};

/// Listings run 90 days unless they say otherwise, and at most two years.
const LISTING_DAYS_DEFAULT: i64 = 90;
const LISTING_DAYS_MAX: i64 = 730;
/// Oldest vintage accepted (the Kyoto Protocol's first credits).
const VINTAGE_MIN: i32 = 1990;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PricingRequest {
    Fixed {
        #[schema(example = "12.50")]
        unit_price: String,
        #[schema(example = "EUR")]
        currency: String,
    },
    Market {
        #[schema(example = "EUA")]
        index: String,
        currency: String,
        #[serde(default)]
        premium_bps: i32,
    },
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditRequest {
    pub project_id: String,
    pub registry: String,
    pub vintage: i32,
    pub serial_range: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingRequest {
    /// Tonnes of CO2e, up to 3 decimals.
    #[schema(example = "100.000")]
    pub quantity: String,
    pub pricing: PricingRequest,
    pub min_fill: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub credit: CreditRequest,
}

fn carbon(field: &str, text: &str) -> Result<Amount, ApiError> {
    Amount::parse(text, Currency::Carbon).map_err(|error| ApiError::field_rule(field, error.code(), error.to_string()))
}

/// A fiat or ETH pricing currency (CARBON is what is sold, never the price).
fn pricing_currency(text: &str) -> Result<Currency, ApiError> {
    match text.parse::<Currency>() {
        Ok(Currency::Carbon) | Err(_) => {
            Err(ApiError::invalid_field("pricing.currency", "invalid_pricing_currency", "EUR, USD or ETH"))
        }
        Ok(currency) => Ok(currency),
    }
}

fn validate_index(index: &str) -> Result<(), ApiError> {
    let valid = (1..=16).contains(&index.len())
        && index.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    match valid {
        true => Ok(()),
        false => Err(ApiError::invalid_field("pricing.index", "invalid_index", "1 to 16 of A-Z, 0-9 and _")),
    }
}

impl PricingRequest {
    fn parse(&self) -> Result<Pricing, ApiError> {
        match self {
            PricingRequest::Fixed { unit_price, currency } => {
                let currency = pricing_currency(currency)?;
                let unit_price = Amount::parse(unit_price, currency)
                    .map_err(|error| ApiError::field_rule("pricing.unit_price", error.code(), error.to_string()))?;
                Ok(Pricing::Fixed { unit_price, currency })
            }
            PricingRequest::Market { index, currency, premium_bps } => {
                validate_index(index)?;
                if premium_bps.abs() > PREMIUM_BPS_MAX {
                    return Err(ApiError::invalid_field(
                        "pricing.premium_bps",
                        "premium_out_of_range",
                        format!("within ±{PREMIUM_BPS_MAX} basis points"),
                    ));
                }
                Ok(Pricing::Market {
                    index: index.clone(),
                    currency: pricing_currency(currency)?,
                    premium_bps: *premium_bps,
                })
            }
        }
    }
}

impl CreditRequest {
    fn parse(&self, now: DateTime<Utc>) -> Result<Credit, ApiError> {
        validate_text("credit.project_id", &self.project_id)?;
        validate_text("credit.registry", &self.registry)?;
        if let Some(range) = &self.serial_range {
            validate_text("credit.serial_range", range)?;
        }
        if !(VINTAGE_MIN..=now.year() + 1).contains(&self.vintage) {
            return Err(ApiError::invalid_field(
                "credit.vintage",
                "invalid_vintage",
                format!("a year from {VINTAGE_MIN}"),
            ));
        }
        Ok(Credit {
            project_id: self.project_id.clone(),
            registry: self.registry.clone(),
            vintage: self.vintage,
            serial_range: self.serial_range.clone(),
        })
    }
}

/// List carbon credits for sale: only a seller holding the CARBON may list; the quantity is
/// held in their CARBON wallet until sold, cancelled or expired.
#[utoipa::path(post, path = "/api/v1/announcements", request_body = ListingRequest, tag = "announcements", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "Listed"), (status = 403, description = "not_a_seller", body = crate::error::Problem),
              (status = 422, description = "insufficient_funds, validation_failed, ...", body = crate::error::Problem)))]
pub async fn announcements_create(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    body: ApiJson<ListingRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    let now = Utc::now();
    let pricing = request.pricing.parse()?;
    let credit = request.credit.parse(now)?;
    let quantity = carbon("quantity", &request.quantity)?;
    let min_fill = request.min_fill.as_deref().map(|m| carbon("min_fill", m)).transpose()?;
    if min_fill.is_some_and(|min| min > quantity) {
        return Err(ApiError::invalid_field("min_fill", "min_fill_above_quantity", "at most the quantity"));
    }
    let expires_at = request.expires_at.unwrap_or(now + Duration::days(LISTING_DAYS_DEFAULT));
    if expires_at <= now || expires_at > now + Duration::days(LISTING_DAYS_MAX) {
        return Err(ApiError::invalid_field("expires_at", "invalid_expiry", "in the future, within two years"));
    }
    let seller = caller.user_id;
    let input = CommandInput { actor: seller.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |uow| {
        let terms = ListingTerms {
            listing_id: domain::new_id(),
            seller_id: seller,
            seller_carbon_wallet_id: wallet_id(seller, Currency::Carbon),
            seller_cash_wallet_id: wallet_id(seller, pricing.currency()),
            quantity,
            pricing: pricing.clone(),
            min_fill,
            expires_at,
            credit: credit.clone(),
        };
        let state = state.clone();
        async move { create(uow, &state, terms).await }
    })
    .await
}

async fn create(
    mut uow: UnitOfWork,
    state: &AppState,
    terms: ListingTerms,
) -> Result<event_store::Committed, ApiError> {
    let user = state.store.load::<User>(uow.reader().await?, &terms.seller_id.to_string(), true).await?.aggregate;
    if !user.is_seller {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not_a_seller",
            "set is_seller in your profile to list credits",
        ));
    }
    let id = terms.listing_id;
    let hold = WalletCommand::PlaceHold { hold_id: id, amount: terms.quantity, expires_at: None };
    uow.execute::<Wallet>(&terms.seller_carbon_wallet_id.to_string(), hold, &()).await??;
    uow.execute::<Listing>(&id.to_string(), ListingCommand::Create(terms.clone()), &()).await??;
    let expiry = sagas::ListingExpirySaga { listing_id: id, seller_carbon_wallet_id: terms.seller_carbon_wallet_id };
    let payload = serde_json::to_value(expiry).map_err(|_| ApiError::internal())?;
    uow.stage_saga_statement(
        "INSERT INTO sagas (saga_id, kind, status, payload, next_attempt_at) VALUES ($1, $2, 'pending', $3, $4)",
        arguments(|a| {
            a.add(id)?;
            a.add(sagas::LISTING_EXPIRY_SAGA)?;
            a.add(payload)?;
            a.add(terms.expires_at)
        })?,
    );
    let body = json!({"id": id, "status": "active", "quantity": terms.quantity, "expires_at": terms.expires_at});
    commit_created(uow, body, format!("/api/v1/announcements/{id}")).await
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingUpdate {
    /// Fixed-price listings only.
    pub unit_price: Option<String>,
    /// Up or down, never below what is sold or reserved; the hold follows.
    pub quantity: Option<String>,
}

/// Change a listing's price or quantity (its seller).
#[utoipa::path(patch, path = "/api/v1/announcements/{id}", request_body = ListingUpdate, tag = "announcements", security(("bearer" = [])),
    responses((status = 200, description = "Updated"), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn announcements_update(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiJson<ListingUpdate>,
) -> Result<Response, ApiError> {
    let request = body.value;
    let quantity = request.quantity.as_deref().map(|q| carbon("quantity", q)).transpose()?;
    let input =
        CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |mut uow| {
        let (request, caller) = (request.clone(), caller.clone());
        async move {
            let decide = |listing: &Listing| {
                let terms = owned_listing(listing, &caller, false)?;
                let unit_price = match &request.unit_price {
                    Some(price) => Some(
                        Amount::parse(price, terms.pricing.currency())
                            .map_err(|error| ApiError::field_rule("unit_price", error.code(), error.to_string()))?,
                    ),
                    None => None,
                };
                Ok::<_, ApiError>(ListingCommand::Update { unit_price, quantity })
            };
            let listing = uow.execute_with::<Listing, ApiError>(&id.to_string(), decide, &()).await??.aggregate;
            resize_seller_hold(&mut uow, &listing).await?;
            commit_ok(uow, listing_summary(&listing)).await
        }
    })
    .await
}

/// Cancel a listing (its seller, or an admin): releases what is neither sold nor reserved.
#[utoipa::path(delete, path = "/api/v1/announcements/{id}", tag = "announcements", security(("bearer" = [])),
    responses((status = 200, description = "Cancelled"), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn announcements_cancel(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let input = CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash: Vec::new(), info };
    run(&state, input, |mut uow| {
        let caller = caller.clone();
        async move {
            let decide = |listing: &Listing| {
                owned_listing(listing, &caller, true)?;
                Ok::<_, ApiError>(ListingCommand::Cancel)
            };
            let listing = uow.execute_with::<Listing, ApiError>(&id.to_string(), decide, &()).await??.aggregate;
            resize_seller_hold(&mut uow, &listing).await?;
            commit_ok(uow, listing_summary(&listing)).await
        }
    })
    .await
}

/// The listing's terms when `caller` is its seller (or an admin, where `admin_may`).
fn owned_listing<'a>(listing: &'a Listing, caller: &Caller, admin_may: bool) -> Result<&'a ListingTerms, ApiError> {
    match &listing.terms {
        Some(terms) if terms.seller_id == caller.user_id || (admin_may && caller.has(Role::Admin)) => Ok(terms),
        _ => Err(listing_not_found()),
    }
}

/// Keeps the seller's CARBON hold equal to what the listing needs held.
async fn resize_seller_hold(uow: &mut UnitOfWork, listing: &Listing) -> Result<(), ApiError> {
    let terms = listing.terms.as_ref().expect("an executed listing exists");
    let resize = WalletCommand::ResizeHold { hold_id: terms.listing_id, remaining: listing.hold_target() };
    uow.execute::<Wallet>(&terms.seller_carbon_wallet_id.to_string(), resize, &()).await??;
    Ok(())
}

fn listing_summary(listing: &Listing) -> Value {
    let terms = listing.terms.as_ref().expect("an executed listing exists");
    json!({
        "id": terms.listing_id,
        "status": listing.status,
        "quantity": Currency::Carbon.format(listing.quantity),
        "sold": Currency::Carbon.format(listing.sold),
        "reserved": Currency::Carbon.format(listing.reserved()),
        "available": Currency::Carbon.format(listing.available()),
    })
}

pub fn listing_not_found() -> ApiError {
    ApiError::not_found("announcement_not_found", "no such announcement")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListingView {
    pub id: Uuid,
    pub seller_id: Uuid,
    /// `active`, `sold_out`, `cancelled` or `expired`.
    pub status: String,
    pub quantity: String,
    pub sold: String,
    pub reserved: String,
    pub available: String,
    pub pricing: Value,
    pub min_fill: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub credit: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub position: i64,
}

fn listing_view(row: &sqlx::postgres::PgRow) -> ListingView {
    let carbon = |column: &str| Currency::Carbon.format(row.get(column));
    let currency: String = row.get("currency");
    let (quantity, sold, reserved): (rust_decimal::Decimal, rust_decimal::Decimal, rust_decimal::Decimal) =
        (row.get("quantity"), row.get("sold"), row.get("reserved"));
    let status: String = row.get("status");
    let available = if status == "active" { quantity - sold - reserved } else { rust_decimal::Decimal::ZERO };
    let status = if status == "active" && sold == quantity { "sold_out".to_string() } else { status };
    let pricing = match row.get::<String, _>("pricing_kind").as_str() {
        "fixed" => json!({"kind": "fixed", "currency": currency,
                          "unit_price": row.get::<Option<rust_decimal::Decimal>, _>("unit_price").map(|p| format_amount(&currency, p))}),
        _ => json!({"kind": "market", "currency": currency, "index": row.get::<Option<String>, _>("price_index"),
                    "premium_bps": row.get::<Option<i32>, _>("premium_bps")}),
    };
    ListingView {
        id: row.get("listing_id"),
        seller_id: row.get("seller_id"),
        status,
        quantity: carbon("quantity"),
        sold: carbon("sold"),
        reserved: carbon("reserved"),
        available: Currency::Carbon.format(available),
        pricing,
        min_fill: row.get::<Option<rust_decimal::Decimal>, _>("min_fill").map(|m| Currency::Carbon.format(m)),
        expires_at: row.get("expires_at"),
        credit: json!({"project_id": row.get::<String, _>("project_id"), "registry": row.get::<String, _>("registry"),
                       "vintage": row.get::<i32, _>("vintage"), "serial_range": row.get::<Option<String>, _>("serial_range")}),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        position: row.get("position"),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListingsQuery {
    /// `active` (default) or `all`.
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListingsPage {
    pub items: Vec<ListingView>,
    pub next_cursor: Option<String>,
}

/// Listings, oldest first; `status=active` (default) hides cancelled, expired and sold-out ones.
#[utoipa::path(get, path = "/api/v1/announcements", tag = "announcements", security(("bearer" = [])), params(ListingsQuery),
    responses((status = 200, body = ListingsPage)))]
pub async fn announcements_list(
    State(state): State<AppState>,
    _caller: Caller,
    consistency: Consistency,
    ApiQuery(query): ApiQuery<ListingsQuery>,
) -> Result<Response, ApiError> {
    let only_active = match query.status.as_deref() {
        None | Some("active") => true,
        Some("all") => false,
        Some(_) => return Err(ApiError::invalid_field("status", "invalid_status", "active or all")),
    };
    let after = cursor::decode(query.cursor.as_deref())?;
    let limit = page_limit(query.limit)?;
    let position = position_of(&state, &["listings"], consistency.0).await?;
    let rows = sqlx::query(
        "SELECT * FROM rm_listings WHERE position > $1 \
         AND (NOT $2 OR (status = 'active' AND sold < quantity AND expires_at > now())) ORDER BY position LIMIT $3",
    )
    .bind(after)
    .bind(only_active)
    .bind(limit + 1)
    .fetch_all(state.store.pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<ListingView> = rows.iter().take(limit as usize).map(listing_view).collect();
    let next_cursor = more.then(|| items.last().map(|l| cursor::encode(l.position))).flatten();
    Ok(with_position(position, axum::Json(ListingsPage { items, next_cursor })))
}

/// One listing.
#[utoipa::path(get, path = "/api/v1/announcements/{id}", tag = "announcements", security(("bearer" = [])),
    responses((status = 200, body = ListingView), (status = 404, body = crate::error::Problem)))]
pub async fn announcements_get(
    State(state): State<AppState>,
    _caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["listings"], consistency.0).await?;
    let row = sqlx::query("SELECT * FROM rm_listings WHERE listing_id = $1")
        .bind(id)
        .fetch_optional(state.store.pool())
        .await?
        .ok_or_else(listing_not_found)?;
    Ok(with_position(position, axum::Json(listing_view(&row))))
}
