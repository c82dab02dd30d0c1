//! `/api/v1/wallets`: balances, statements, deposits, withdrawals, freezes.

use axum::extract::State;
use axum::response::Response;
use domain::user::Role;
use domain::wallet::{Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::{SideInsert, UnitOfWork};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Arguments, Row};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_created, commit_ok, run, CommandInput};
use crate::error::{wallet_rejection, ApiError};
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};
use crate::read::{parse_as_of, position_of, with_position, Consistency};
use crate::registration::arguments;
use crate::state::AppState;
use crate::views::{cursor, format_amount, page_limit, WalletView};

/// Longest reference, destination or reason accepted.
pub const TEXT_FIELD_LEN_MAX: usize = 200;

/// A wallet: yours, or any for admins and auditors; another user's is a 404.
#[utoipa::path(get, path = "/api/v1/wallets/{id}", tag = "wallets", security(("bearer" = [])),
    responses((status = 200, body = WalletView), (status = 404, body = crate::error::Problem)))]
pub async fn wallets_get(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["wallets"], consistency.0).await?;
    let wallet = visible_wallet(&state, &caller, id).await?;
    Ok(with_position(position, axum::Json(wallet)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
    /// RFC 3339: only entries that occurred at or before it (a statement at a point in time).
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryView {
    pub position: i64,
    pub transaction_id: Uuid,
    pub kind: String,
    /// Signed: credits positive.
    pub amount: String,
    pub balance_after: String,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntriesPage {
    pub items: Vec<EntryView>,
    pub next_cursor: Option<String>,
}

/// The wallet's statement: entries in position order with the running balance.
#[utoipa::path(get, path = "/api/v1/wallets/{id}/entries", tag = "wallets", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = EntriesPage), (status = 404, body = crate::error::Problem)))]
pub async fn wallets_entries(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    let after = cursor::decode(page.cursor.as_deref())?;
    let limit = page_limit(page.limit)?;
    let as_of = parse_as_of(page.as_of.as_deref())?;
    let position = position_of(&state, &["wallets", "wallet_entries"], consistency.0).await?;
    let wallet = visible_wallet(&state, &caller, id).await?;
    let rows = sqlx::query(
        "SELECT position, transaction_id, kind, amount, balance_after, occurred_at FROM rm_wallet_entries \
         WHERE wallet_id = $1 AND position > $2 AND ($4::timestamptz IS NULL OR occurred_at <= $4) \
         ORDER BY position LIMIT $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit + 1)
    .bind(as_of)
    .fetch_all(state.store.pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<EntryView> = rows
        .iter()
        .take(limit as usize)
        .map(|row| EntryView {
            position: row.get("position"),
            transaction_id: row.get("transaction_id"),
            kind: row.get("kind"),
            amount: format_amount(&wallet.currency, row.get("amount")),
            balance_after: format_amount(&wallet.currency, row.get("balance_after")),
            occurred_at: row.get("occurred_at"),
        })
        .collect();
    let next_cursor = more.then(|| items.last().map(|e| cursor::encode(e.position))).flatten();
    Ok(with_position(position, axum::Json(EntriesPage { items, next_cursor })))
}

/// The wallet as its owner or staff sees it; anyone else gets the same 404 as for a wallet
/// that does not exist.
pub async fn visible_wallet(state: &AppState, caller: &Caller, id: Uuid) -> Result<WalletView, ApiError> {
    let row =
        sqlx::query("SELECT wallet_id, owner_id, currency, balance, held, frozen FROM rm_wallets WHERE wallet_id = $1")
            .bind(id)
            .fetch_optional(state.store.pool())
            .await?;
    match row.map(|row| WalletView::from_row(&row)) {
        Some(wallet) if wallet.owner_id == caller.user_id || caller.is_staff() => Ok(wallet),
        _ => Err(wallet_not_found()),
    }
}

pub fn wallet_not_found() -> ApiError {
    ApiError::not_found("wallet_not_found", "no such wallet")
}

/// Validates a free-text field: present, bounded, printable.
pub fn validate_text(field: &str, value: &str) -> Result<(), ApiError> {
    let valid =
        !value.trim().is_empty() && value.chars().count() <= TEXT_FIELD_LEN_MAX && !value.chars().any(char::is_control);
    match valid {
        true => Ok(()),
        false => Err(ApiError::invalid_field(
            field,
            "invalid_text",
            format!("1 to {TEXT_FIELD_LEN_MAX} printable characters"),
        )),
    }
}

/// Parses an amount for a currency, answering the amount rule's code.
pub fn parse_amount(text: &str, currency: Currency) -> Result<Amount, ApiError> {
    Amount::parse(text, currency).map_err(|error| ApiError::field_rule("amount", error.code(), error.to_string()))
}

/// The currency of an open wallet; 404 unless it exists and, when `owner` is given, belongs
/// to them (another user's wallet answers exactly like a missing one).
fn wallet_currency(wallet: &Wallet, owner: Option<Uuid>) -> Result<Currency, ApiError> {
    match wallet.identity {
        Some(identity) if owner.is_none_or(|owner| owner == identity.owner_id) => Ok(identity.currency),
        _ => Err(wallet_not_found()),
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    #[schema(example = "100.00")]
    pub amount: String,
    /// The payment provider's reference; unique.
    #[schema(example = "SEPA-2026-000123")]
    pub reference: String,
}

/// Record money arriving from a payment provider (admin). Postings: `external` → wallet.
#[utoipa::path(post, path = "/api/v1/wallets/{id}/deposits", request_body = DepositRequest, tag = "wallets", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "Deposited: transaction_id, balance, position"),
              (status = 409, description = "duplicate_reference", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn deposits_create(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiJson<DepositRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let request = body.value;
    validate_text("reference", &request.reference)?;
    let input =
        CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |mut uow| {
        let request = request.clone();
        async move {
            let transaction_id = domain::new_id();
            let deposit = |wallet: &Wallet| {
                let currency = wallet_currency(wallet, None)?;
                let amount = parse_amount(&request.amount, currency)?;
                let reference = request.reference.clone();
                Ok::<_, ApiError>(WalletCommand::Deposit { transaction_id, amount, currency, reference })
            };
            let executed = uow.execute_with::<Wallet, ApiError>(&id.to_string(), deposit, &()).await??;
            let (currency, amount) = money_moved(&executed.events);
            uow.claim(crate::claims::DEPOSIT_REFERENCE, &request.reference, &transaction_id.to_string());
            index_transaction(&mut uow, transaction_id, id, "deposit", currency, amount, "completed");
            let body = movement_body(transaction_id, id, "deposit", "completed", currency, amount, &executed.aggregate);
            let location = format!("/api/v1/transactions/{transaction_id}");
            commit_created(uow, body, location).await
        }
    })
    .await
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    #[schema(example = "25.00")]
    pub amount: String,
    #[schema(example = "payout-0001")]
    pub reference: String,
    /// The bank account or address paid out to.
    #[schema(example = "IBAN DE89 3704 0044 0532 0130 00")]
    pub destination: String,
}

/// Withdraw from your wallet: the funds leave into `transit` at once; an admin (standing in for
/// the payout provider) completes or fails it.
#[utoipa::path(post, path = "/api/v1/wallets/{id}/withdrawals", request_body = WithdrawalRequest, tag = "wallets", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "Pending withdrawal"), (status = 422, description = "insufficient_funds, wallet_frozen, ...", body = crate::error::Problem)))]
pub async fn withdrawals_create(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiJson<WithdrawalRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    validate_text("reference", &request.reference)?;
    validate_text("destination", &request.destination)?;
    let owner = caller.user_id;
    let input = CommandInput { actor: owner.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |mut uow| {
        let request = request.clone();
        async move {
            let withdrawal_id = domain::new_id();
            let withdraw = |wallet: &Wallet| {
                let currency = wallet_currency(wallet, Some(owner))?;
                Ok::<_, ApiError>(WalletCommand::RequestWithdrawal {
                    withdrawal_id,
                    amount: parse_amount(&request.amount, currency)?,
                    currency,
                    reference: request.reference.clone(),
                    destination: request.destination.clone(),
                })
            };
            let executed = uow.execute_with::<Wallet, ApiError>(&id.to_string(), withdraw, &()).await??;
            let (currency, amount) = money_moved(&executed.events);
            uow.claim(
                crate::claims::WITHDRAWAL_REFERENCE,
                &format!("{id}/{}", request.reference),
                &withdrawal_id.to_string(),
            );
            index_transaction(&mut uow, withdrawal_id, id, "withdrawal", currency, amount, "pending");
            let body = movement_body(withdrawal_id, id, "withdrawal", "pending", currency, amount, &executed.aggregate);
            let location = format!("/api/v1/transactions/{withdrawal_id}");
            commit_created(uow, body, location).await
        }
    })
    .await
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    pub reason: Option<String>,
}

/// The payout went out (admin): `transit` → `external`.
#[utoipa::path(post, path = "/api/v1/withdrawals/{id}/complete", tag = "wallets", security(("bearer" = [])),
    responses((status = 200, description = "Completed"), (status = 404, body = crate::error::Problem), (status = 409, description = "withdrawal_not_pending", body = crate::error::Problem)))]
pub async fn withdrawals_complete(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    settle_withdrawal(state, caller, info, key, id, None, Vec::new()).await
}

/// The payout failed (admin): `transit` → the wallet.
#[utoipa::path(post, path = "/api/v1/withdrawals/{id}/fail", request_body = ReasonRequest, tag = "wallets", security(("bearer" = [])),
    responses((status = 200, description = "Failed and returned"), (status = 404, body = crate::error::Problem)))]
pub async fn withdrawals_fail(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiJson<ReasonRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let reason = body.value.reason.unwrap_or_else(|| "payout failed".to_string());
    validate_text("reason", &reason)?;
    settle_withdrawal(state, caller, info, key, id, Some(reason), body.body_hash).await
}

async fn settle_withdrawal(
    state: AppState,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    withdrawal_id: Uuid,
    failure: Option<String>,
    body_hash: Vec<u8>,
) -> Result<Response, ApiError> {
    let input = CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash, info };
    run(&state, input, |mut uow| {
        let failure = failure.clone();
        async move {
            let indexed = indexed_transaction(&mut uow, withdrawal_id).await?;
            let Some(IndexedTransaction { wallet_id, kind, status, .. }) = indexed.filter(|t| t.kind == "withdrawal") else {
                return Err(ApiError::not_found("withdrawal_not_found", "no such withdrawal"));
            };
            debug_assert_eq!(kind, "withdrawal");
            if status != "pending" {
                return Err(ApiError::conflict("withdrawal_not_pending", format!("the withdrawal is already {status}")));
            }
            let (command, new_status) = match failure.clone() {
                None => (WalletCommand::CompleteWithdrawal { withdrawal_id }, "completed"),
                Some(reason) => (WalletCommand::FailWithdrawal { withdrawal_id, reason }, "failed"),
            };
            uow.execute::<Wallet>(&wallet_id.to_string(), command, &()).await?.map_err(wallet_rejection)?;
            uow.stage_statement(
                "UPDATE transaction_index SET status = $2 WHERE transaction_id = $1",
                arguments(|a| {
                    a.add(withdrawal_id)?;
                    a.add(new_status)
                })?,
            );
            let body = json!({"transaction_id": withdrawal_id, "wallet_id": wallet_id, "status": new_status, "reason": failure});
            commit_ok(uow, body).await
        }
    })
    .await
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    pub reason: String,
}

/// Freeze a wallet (admin): it refuses every debit until unfrozen.
#[utoipa::path(post, path = "/api/v1/wallets/{id}/freeze", request_body = FreezeRequest, tag = "wallets", security(("bearer" = [])),
    responses((status = 200, description = "Frozen"), (status = 409, description = "wallet_already_frozen", body = crate::error::Problem)))]
pub async fn wallets_freeze(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiJson<FreezeRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    validate_text("reason", &body.value.reason)?;
    let command = WalletCommand::Freeze { reason: body.value.reason };
    set_frozen(state, caller, info, key, id, command, body.body_hash).await
}

/// Unfreeze a wallet (admin).
#[utoipa::path(post, path = "/api/v1/wallets/{id}/unfreeze", tag = "wallets", security(("bearer" = [])),
    responses((status = 200, description = "Unfrozen"), (status = 409, description = "wallet_not_frozen", body = crate::error::Problem)))]
pub async fn wallets_unfreeze(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    set_frozen(state, caller, info, key, id, WalletCommand::Unfreeze, Vec::new()).await
}

async fn set_frozen(
    state: AppState,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    id: Uuid,
    command: WalletCommand,
    body_hash: Vec<u8>,
) -> Result<Response, ApiError> {
    let input = CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash, info };
    run(&state, input, |mut uow| {
        let command = command.clone();
        async move {
            let executed = uow.execute::<Wallet>(&id.to_string(), command, &()).await?.map_err(wallet_rejection)?;
            let body = json!({"wallet_id": id, "frozen": executed.aggregate.frozen});
            commit_ok(uow, body).await
        }
    })
    .await
}

/// Currency and amount of the money-moving event a command produced.
fn money_moved(events: &[domain::wallet::WalletEvent]) -> (Currency, Amount) {
    use domain::wallet::WalletEvent::*;
    match events.first() {
        Some(Deposited { currency, amount, .. } | WithdrawalRequested { currency, amount, .. }) => (*currency, *amount),
        other => unreachable!("a deposit or withdrawal produces its event first, not {other:?}"),
    }
}

/// The command-side index row of a transaction.
pub struct IndexedTransaction {
    pub wallet_id: Uuid,
    pub kind: String,
    pub currency: Currency,
    pub amount: rust_decimal::Decimal,
    pub status: String,
}

pub async fn indexed_transaction(uow: &mut UnitOfWork, id: Uuid) -> Result<Option<IndexedTransaction>, ApiError> {
    let row = sqlx::query(
        "SELECT wallet_id, kind, currency, amount, status FROM transaction_index WHERE transaction_id = $1",
    )
    .bind(id)
    .fetch_optional(uow.reader().await?)
    .await?;
    Ok(row.map(|row| IndexedTransaction {
        wallet_id: row.get("wallet_id"),
        kind: row.get("kind"),
        currency: row.get::<String, _>("currency").parse().unwrap_or(Currency::Eur),
        amount: row.get("amount"),
        status: row.get("status"),
    }))
}

/// Stages the command-side index row of a new transaction.
pub fn index_transaction(
    uow: &mut UnitOfWork,
    transaction_id: Uuid,
    wallet_id: Uuid,
    kind: &'static str,
    currency: Currency,
    amount: Amount,
    status: &'static str,
) {
    const TRANSACTION_INDEX: SideInsert = SideInsert {
        table: "transaction_index",
        columns: &[
            ("transaction_id", "uuid"),
            ("wallet_id", "uuid"),
            ("kind", "text"),
            ("currency", "text"),
            ("amount", "numeric"),
            ("status", "text"),
        ],
    };
    let row = serde_json::json!({
        "transaction_id": transaction_id,
        "wallet_id": wallet_id,
        "kind": kind,
        "currency": currency.code(),
        "amount": amount.value().to_string(),
        "status": status,
    });
    let serde_json::Value::Object(row) = row else { unreachable!("json! of an object literal is an object") };
    uow.stage_insert(&TRANSACTION_INDEX, row);
}

/// The answer to a money movement: the transaction and the wallet's balances after it.
pub fn movement_body(
    transaction_id: Uuid,
    wallet_id: Uuid,
    kind: &str,
    status: &str,
    currency: Currency,
    amount: Amount,
    wallet: &Wallet,
) -> serde_json::Value {
    json!({
        "transaction_id": transaction_id,
        "wallet_id": wallet_id,
        "kind": kind,
        "status": status,
        "currency": currency.code(),
        "amount": currency.format(amount.value()),
        "balance": currency.format(wallet.balance),
        "available": currency.format(wallet.available()),
    })
}

/// Whether a caller may see wallets of `owner` (used by transaction queries).
pub fn may_see(caller: &Caller, owner: Uuid) -> bool {
    caller.user_id == owner || caller.has(Role::Admin) || caller.has(Role::Auditor)
}
