//! `/api/v1/transactions`: deposits, withdrawals and reversals as their owner sees them.

use axum::extract::State;
use axum::response::Response;
use domain::wallet::{ReversalDirection, Wallet, WalletCommand};
use domain::Amount;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_created, run, CommandInput};
use crate::error::{wallet_rejection, ApiError};
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::routes::wallets::{index_transaction, indexed_transaction, may_see, validate_text};
use crate::state::AppState;
use crate::views::{cursor, format_amount, page_limit};

const READ_MODELS: &[&str] = &["transactions", "wallets"];

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionView {
    pub id: Uuid,
    /// `deposit`, `withdrawal` or `reversal`.
    pub kind: String,
    pub wallet_id: Uuid,
    pub currency: String,
    pub amount: String,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    pub reference: Option<String>,
    pub destination: Option<String>,
    pub reversal_of: Option<Uuid>,
    pub reversed_by: Option<Uuid>,
    pub reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub position: i64,
}

const SELECT_TRANSACTION: &str =
    "SELECT t.transaction_id, t.kind, t.wallet_id, t.currency, t.amount, t.status, t.reference, \
     t.destination, t.reversal_of, t.reversed_by, t.reason, t.created_at, t.updated_at, t.position, w.owner_id \
     FROM rm_transactions t JOIN rm_wallets w ON w.wallet_id = t.wallet_id";

fn view(row: &sqlx::postgres::PgRow) -> TransactionView {
    let currency: String = row.get("currency");
    TransactionView {
        id: row.get("transaction_id"),
        kind: row.get("kind"),
        wallet_id: row.get("wallet_id"),
        amount: format_amount(&currency, row.get("amount")),
        currency,
        status: row.get("status"),
        reference: row.get("reference"),
        destination: row.get("destination"),
        reversal_of: row.get("reversal_of"),
        reversed_by: row.get("reversed_by"),
        reason: row.get("reason"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        position: row.get("position"),
    }
}

/// One transaction of yours (any, for admins and auditors).
#[utoipa::path(get, path = "/api/v1/transactions/{id}", tag = "transactions", security(("bearer" = [])),
    responses((status = 200, body = TransactionView), (status = 404, body = crate::error::Problem)))]
pub async fn transactions_get(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let position = position_of(&state, READ_MODELS, consistency.0).await?;
    // A transfer or purchase has a line per party: the caller's own comes first.
    let row = sqlx::query(&format!(
        "{SELECT_TRANSACTION} WHERE t.transaction_id = $1 ORDER BY (w.owner_id = $2) DESC, t.kind LIMIT 1"
    ))
    .bind(id)
    .bind(caller.user_id)
    .fetch_optional(state.store.pool())
    .await?
    .filter(|row| may_see(&caller, row.get("owner_id")))
    .ok_or_else(|| ApiError::not_found("transaction_not_found", "no such transaction"))?;
    Ok(with_position(position, axum::Json(view(&row))))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    pub wallet_id: Option<Uuid>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionsPage {
    pub items: Vec<TransactionView>,
    pub next_cursor: Option<String>,
}

/// Your transactions, oldest first, optionally of one wallet; staff see everyone's.
#[utoipa::path(get, path = "/api/v1/transactions", tag = "transactions", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = TransactionsPage)))]
pub async fn transactions_list(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let after = cursor::decode(query.cursor.as_deref())?;
    let limit = page_limit(query.limit)?;
    let position = position_of(&state, READ_MODELS, consistency.0).await?;
    let owner_filter = (!caller.is_staff()).then_some(caller.user_id);
    let rows = sqlx::query(&format!(
        "{SELECT_TRANSACTION} WHERE t.position > $1 AND ($2::uuid IS NULL OR t.wallet_id = $2) \
         AND ($3::uuid IS NULL OR w.owner_id = $3) ORDER BY t.position LIMIT $4"
    ))
    .bind(after)
    .bind(query.wallet_id)
    .bind(owner_filter)
    .bind(limit + 1)
    .fetch_all(state.store.pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<TransactionView> = rows.iter().take(limit as usize).map(view).collect();
    let next_cursor = more.then(|| items.last().map(|t| cursor::encode(t.position))).flatten();
    Ok(with_position(position, axum::Json(TransactionsPage { items, next_cursor })))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReversalRequest {
    pub reason: String,
}

/// Reverse a completed deposit or withdrawal (admin): a new posting against `external` that
/// names the original and the reason. Nothing is edited; each transaction reverses once.
#[utoipa::path(post, path = "/api/v1/transactions/{id}/reversal", request_body = ReversalRequest, tag = "transactions", security(("bearer" = [])),
    responses((status = 201, description = "Reversed"),
              (status = 409, description = "already_reversed, transaction_not_reversible", body = crate::error::Problem),
              (status = 422, description = "insufficient_funds", body = crate::error::Problem)))]
pub async fn transactions_reverse(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(original_id): ApiPath<Uuid>,
    body: ApiJson<ReversalRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let reason = body.value.reason;
    validate_text("reason", &reason)?;
    let input =
        CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |mut uow| {
        let reason = reason.clone();
        async move {
            let original = indexed_transaction(&mut uow, original_id)
                .await?
                .ok_or_else(|| ApiError::not_found("transaction_not_found", "no such transaction"))?;
            // Answer a repeat by its rule before the wallet's balance is even looked at; the
            // claim taken at commit stays the guard against a concurrent reversal.
            let reversed: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM claims WHERE kind = $1 AND value = $2)")
                    .bind(crate::claims::REVERSAL)
                    .bind(original_id.to_string())
                    .fetch_one(uow.reader().await?)
                    .await?;
            if reversed {
                return Err(ApiError::conflict("already_reversed", "this transaction was already reversed"));
            }
            let direction = match (original.kind.as_str(), original.status.as_str()) {
                ("deposit", "completed") => ReversalDirection::DebitWallet,
                ("withdrawal", "completed") => ReversalDirection::CreditWallet,
                (kind, status) => {
                    return Err(ApiError::conflict(
                        "transaction_not_reversible",
                        format!("a {status} {kind} cannot be reversed"),
                    ))
                }
            };
            let amount = Amount::new(original.amount, original.currency).map_err(|_| ApiError::internal())?;
            let reversal_id = domain::new_id();
            let command = WalletCommand::Reverse {
                reversal_id,
                original_transaction_id: original_id,
                amount,
                direction,
                reason: reason.clone(),
            };
            let wallet_id = original.wallet_id;
            let executed =
                uow.execute::<Wallet>(&wallet_id.to_string(), command, &()).await?.map_err(wallet_rejection)?;
            uow.claim(crate::claims::REVERSAL, &original_id.to_string(), &reversal_id.to_string());
            index_transaction(&mut uow, reversal_id, wallet_id, "reversal", original.currency, amount, "completed");
            let currency = original.currency;
            let body = json!({
                "transaction_id": reversal_id,
                "reversal_of": original_id,
                "wallet_id": wallet_id,
                "kind": "reversal",
                "status": "completed",
                "currency": currency.code(),
                "amount": currency.format(amount.value()),
                "reason": reason,
                "balance": currency.format(executed.aggregate.balance),
            });
            let location = format!("/api/v1/transactions/{reversal_id}");
            commit_created(uow, body, location).await
        }
    })
    .await
}
