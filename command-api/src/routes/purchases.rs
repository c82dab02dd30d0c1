//! `/api/v1/purchases`: buying part of a listing (the seeds' PAYMENT).
//!
//! Everything known up front is checked in the request, which also reserves the quantity,
//! fixes the price and holds the buyer's funds in one transaction; the saga then settles
//! through `transit` or compensates fully.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::listing::{Listing, ListingCommand, Pricing};
use domain::purchase::{price_purchase, round_to, Purchase, PurchaseCommand, PurchaseTerms};
use domain::wallet::{wallet_id, Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::UnitOfWork;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Arguments, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_accepted, run, CommandInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::registration::arguments;
use crate::routes::listings::listing_not_found;
use crate::state::AppState;
use crate::views::format_amount;

/// The index prices of market listings are CARBON prices.
const PRICED_ASSET: &str = "CARBON";

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    pub announcement_id: Uuid,
    /// Tonnes, up to 3 decimals.
    #[schema(example = "2.500")]
    pub quantity: String,
    /// The most you will pay, fee included, in the listing's currency.
    #[schema(example = "40.00")]
    pub max_total: String,
}

/// Buy part of a listing: 202 pending, or 4xx at once (`max_total_exceeded`, `own_listing`,
/// `below_min_fill`, `insufficient_quantity`, `insufficient_funds`, `price_unavailable`,
/// `price_stale`). Subtotal = quantity × unit price and fee = subtotal × fee_bps / 10,000, each
/// rounded half-even to the currency's scale.
#[utoipa::path(post, path = "/api/v1/purchases", request_body = PurchaseRequest, tag = "purchases", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 202, description = "Accepted: the purchase settles asynchronously"),
              (status = 404, description = "announcement_not_found", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn purchases_create(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    body: ApiJson<PurchaseRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    let quantity = Amount::parse(&request.quantity, Currency::Carbon)
        .map_err(|error| ApiError::field_rule("quantity", error.code(), error.to_string()))?;
    let buyer = caller.user_id;
    let input = CommandInput { actor: buyer.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |uow| {
        let (state, request) = (state.clone(), request.clone());
        async move { initiate(uow, &state, buyer, &request, quantity).await }
    })
    .await
}

/// The price a purchase pays per tonne, where it came from and when it was observed.
struct Quote {
    unit_price: Decimal,
    source: String,
    observed_at: DateTime<Utc>,
}

async fn quote(uow: &mut UnitOfWork, state: &AppState, pricing: &Pricing) -> Result<Quote, ApiError> {
    let now = uow.context().at;
    match pricing {
        Pricing::Fixed { unit_price, .. } => {
            Ok(Quote { unit_price: unit_price.value(), source: "listing".to_string(), observed_at: now })
        }
        Pricing::Market { index, currency, premium_bps } => {
            let latest = crate::routes::prices::latest_price(
                &state.store,
                uow.reader().await?,
                PRICED_ASSET,
                *currency,
                Some(index),
            )
            .await?
            .ok_or_else(|| {
                ApiError::unprocessable("price_unavailable", format!("no {index} price in {currency} yet"))
            })?;
            let age = (now - latest.observed_at).to_std().unwrap_or_default();
            if age > state.config.price_age_max {
                return Err(ApiError::unprocessable(
                    "price_stale",
                    format!("the latest {index} price was observed at {}", latest.observed_at),
                ));
            }
            let premium = Decimal::from(10_000 + premium_bps) / Decimal::from(10_000);
            Ok(Quote {
                unit_price: round_to(*currency, latest.price * premium),
                source: latest.source,
                observed_at: latest.observed_at,
            })
        }
    }
}

async fn initiate(
    mut uow: UnitOfWork,
    state: &AppState,
    buyer: Uuid,
    request: &PurchaseRequest,
    quantity: Amount,
) -> Result<event_store::Committed, ApiError> {
    let listing_id = request.announcement_id;
    let listing = state.store.load::<Listing>(uow.reader().await?, &listing_id.to_string(), true).await?.aggregate;
    let listing_terms = listing.terms.clone().ok_or_else(listing_not_found)?;
    if listing_terms.seller_id == buyer {
        return Err(ApiError::unprocessable("own_listing", "you cannot buy your own listing"));
    }
    let currency = listing_terms.pricing.currency();
    let max_total = Amount::parse(&request.max_total, currency)
        .map_err(|error| ApiError::field_rule("max_total", error.code(), error.to_string()))?;
    let quote = quote(&mut uow, state, &listing_terms.pricing).await?;
    let fee_bps = state.config.fee_bps;
    let (subtotal, fee, total) = price_purchase(currency, quantity.value(), quote.unit_price, fee_bps)
        .ok_or_else(|| ApiError::unprocessable("amount_overflow", "the purchase is larger than the ledger accepts"))?;
    let too_small = || ApiError::unprocessable("purchase_too_small", "the purchase rounds to nothing");
    let (subtotal, total) = (
        Amount::new(subtotal, currency).map_err(|_| too_small())?,
        Amount::new(total, currency).map_err(|_| too_small())?,
    );
    if total > max_total {
        return Err(ApiError::unprocessable(
            "max_total_exceeded",
            format!(
                "the total is {}, above max_total {}",
                currency.format(total.value()),
                currency.format(max_total.value())
            ),
        ));
    }
    let purchase_id = domain::new_id();
    let reserve = ListingCommand::Reserve { purchase_id, quantity, now: uow.context().at };
    uow.execute::<Listing>(&listing_id.to_string(), reserve, &()).await??;
    let buyer_cash = wallet_id(buyer, currency);
    let hold = WalletCommand::PlaceHold { hold_id: purchase_id, amount: total, expires_at: None };
    uow.execute::<Wallet>(&buyer_cash.to_string(), hold, &()).await??;
    let terms = PurchaseTerms {
        purchase_id,
        listing_id,
        buyer_id: buyer,
        buyer_cash_wallet_id: buyer_cash,
        buyer_carbon_wallet_id: wallet_id(buyer, Currency::Carbon),
        seller_id: listing_terms.seller_id,
        seller_cash_wallet_id: listing_terms.seller_cash_wallet_id,
        seller_carbon_wallet_id: listing_terms.seller_carbon_wallet_id,
        quantity,
        currency,
        unit_price: quote.unit_price,
        price_source: quote.source,
        price_observed_at: quote.observed_at,
        subtotal,
        fee_bps,
        fee,
        total,
    };
    uow.execute_new::<Purchase>(&purchase_id.to_string(), PurchaseCommand::Initiate(Box::new(terms.clone())), &())
        .await??;
    let saga = serde_json::to_value(sagas::PurchaseSaga { terms: terms.clone() }).map_err(|_| ApiError::internal())?;
    uow.stage_saga_statement(
        "INSERT INTO sagas (saga_id, kind, status, payload) VALUES ($1, $2, 'pending', $3)",
        arguments(|a| {
            a.add(purchase_id)?;
            a.add(sagas::PURCHASE_SAGA)?;
            a.add(saga)
        })?,
    );
    let body = json!({
        "id": purchase_id,
        "status": "pending",
        "announcement_id": listing_id,
        "quantity": Currency::Carbon.format(quantity.value()),
        "currency": currency.code(),
        "unit_price": currency.format(terms.unit_price),
        "price_source": terms.price_source,
        "price_observed_at": terms.price_observed_at,
        "subtotal": currency.format(subtotal.value()),
        "fee": currency.format(fee),
        "total": currency.format(total.value()),
    });
    commit_accepted(uow, body, format!("/api/v1/purchases/{purchase_id}")).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseView {
    pub id: Uuid,
    /// `pending`, `completed` or `failed` (compensated, with a `reason`).
    pub status: String,
    pub reason: Option<String>,
    pub announcement_id: Uuid,
    pub buyer_id: Uuid,
    pub seller_id: Uuid,
    pub quantity: String,
    pub currency: String,
    pub unit_price: String,
    pub price_source: String,
    pub price_observed_at: DateTime<Utc>,
    pub subtotal: String,
    pub fee_bps: i32,
    pub fee: String,
    pub total: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub position: i64,
}

/// A purchase you made or sold (any, for staff).
#[utoipa::path(get, path = "/api/v1/purchases/{id}", tag = "purchases", security(("bearer" = [])),
    responses((status = 200, body = PurchaseView), (status = 404, body = crate::error::Problem)))]
pub async fn purchases_get(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["purchases"], consistency.0).await?;
    let not_found = || ApiError::not_found("purchase_not_found", "no such purchase");
    let row = sqlx::query("SELECT * FROM rm_purchases WHERE purchase_id = $1")
        .bind(id)
        .fetch_optional(state.store.pool())
        .await?
        .ok_or_else(not_found)?;
    let (buyer, seller): (Uuid, Uuid) = (row.get("buyer_id"), row.get("seller_id"));
    if !(caller.user_id == buyer || caller.user_id == seller || caller.is_staff()) {
        return Err(not_found());
    }
    let currency: String = row.get("currency");
    let money = |column: &str| format_amount(&currency, row.get(column));
    let view = PurchaseView {
        id,
        status: row.get("status"),
        reason: row.get("reason"),
        announcement_id: row.get("listing_id"),
        buyer_id: buyer,
        seller_id: seller,
        quantity: Currency::Carbon.format(row.get("quantity")),
        unit_price: money("unit_price"),
        price_source: row.get("price_source"),
        price_observed_at: row.get("price_observed_at"),
        subtotal: money("subtotal"),
        fee_bps: row.get("fee_bps"),
        fee: money("fee"),
        total: money("total"),
        currency: currency.clone(),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        position: row.get("position"),
    };
    Ok(with_position(position, axum::Json(view)))
}
