//! `/api/v1/chain/withdrawals`: CARBON leaving the ledger as tokens minted on the chain. The
//! wallet is debited into `chain` and the mint queued for the bridge in one transaction; the
//! chain or the bridge being down never refuses a withdrawal, it waits in the queue.
//! Also the bridge's admin controls: cancel, pause, and the suspense of unknown bridge-ins.

use alloy_primitives::Address;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::accounts::SystemAccount;
use domain::chain::{ChainMovement, ChainMovementCommand};
use domain::user::Role;
use domain::wallet::{Wallet, WalletCommand};
use domain::{Amount, Currency};
use event_store::UnitOfWork;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Arguments, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_accepted, commit_ok, run, CommandInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::registration::arguments;
use crate::routes::chain_addresses::{address_text, chain_identity, parse_address};
use crate::routes::wallets::{parse_amount, wallet_not_found};
use crate::security::{self, SecurityEvent};
use crate::state::AppState;
use crate::views::{cursor, page_limit};

/// Key of the transaction-scoped advisory lock under which the daily limits are checked and
/// the withdrawal queued: two requests cannot both pass a limit that only one fits.
const WITHDRAWAL_LIMITS_LOCK: i64 = 0x6368_6169_6e5f_7764; // "chain_wd"
/// The window the daily limits count over.
const DAILY_LIMIT_WINDOW_HOURS: i64 = 24;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainWithdrawalRequest {
    pub wallet_id: Uuid,
    #[schema(example = "2.500")]
    pub amount: String,
    /// One of your linked addresses, past its cooldown.
    #[schema(example = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8")]
    pub address: String,
}

/// Withdraw CARBON to the chain: 202 with the withdrawal pending; the wallet is debited into
/// `chain` at once and the mint queued. Refusals: `address_not_linked`, `address_cooling_down`,
/// `user_daily_limit_exceeded`, `global_daily_limit_exceeded`, `currency_not_carbon`,
/// `insufficient_funds`, `wallet_frozen` (422), `bridge_paused` (409),
/// `chain_not_configured` (503).
#[utoipa::path(post, path = "/api/v1/chain/withdrawals", request_body = ChainWithdrawalRequest, tag = "chain", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 202, description = "Accepted: {id, status: pending, wallet_id, amount, address, position}"),
              (status = 404, description = "wallet_not_found", body = crate::error::Problem),
              (status = 409, description = "bridge_paused", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem),
              (status = 503, description = "chain_not_configured", body = crate::error::Problem)))]
pub async fn chain_withdrawals_create(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    body: ApiJson<ChainWithdrawalRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    let address = parse_address(&request.address)?;
    let amount = parse_amount(&request.amount, Currency::Carbon)?;
    let user_id = caller.user_id;
    let input = CommandInput { actor: user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |uow| {
        let (state, wallet_id) = (state.clone(), request.wallet_id);
        async move { withdraw(uow, &state, user_id, wallet_id, amount, address).await }
    })
    .await
}

async fn withdraw(
    mut uow: UnitOfWork,
    state: &AppState,
    user_id: Uuid,
    wallet_id: Uuid,
    amount: Amount,
    address: Address,
) -> Result<event_store::Committed, ApiError> {
    chain_identity(uow.connection().await?).await?;
    check_not_paused(&mut uow).await?;
    let address = address_text(&address);
    check_linked_address(&mut uow, user_id, &address).await?;
    check_daily_limits(&mut uow, state, user_id, amount.value()).await?;
    let withdrawal_id = domain::new_id();
    let command = WalletCommand::WithdrawToChain { withdrawal_id, amount, address: address.clone() };
    let decide = |wallet: &Wallet| match wallet.identity {
        Some(identity) if identity.owner_id == user_id => Ok(command.clone()),
        _ => Err(wallet_not_found()),
    };
    uow.execute_with::<Wallet, ApiError>(&wallet_id.to_string(), decide, &()).await??;
    let now = uow.context().at;
    let address_bytes = hex::decode(&address[2..]).expect("a parsed address is hex");
    uow.stage_statement(
        "INSERT INTO chain_withdrawals (withdrawal_id, wallet_id, user_id, amount, address, requested_at, state) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued')",
        arguments(|a| {
            a.add(withdrawal_id)?;
            a.add(wallet_id)?;
            a.add(user_id)?;
            a.add(amount.value())?;
            a.add(address_bytes)?;
            a.add(now)
        })?,
    );
    let body = json!({
        "id": withdrawal_id,
        "status": "pending",
        "transaction_id": withdrawal_id,
        "wallet_id": wallet_id,
        "amount": Currency::Carbon.format(amount.value()),
        "address": address,
    });
    commit_accepted(uow, body, format!("/api/v1/chain/withdrawals/{withdrawal_id}")).await
}

async fn check_not_paused(uow: &mut UnitOfWork) -> Result<(), ApiError> {
    let paused: bool =
        sqlx::query_scalar("SELECT paused FROM chain_controls").fetch_one(uow.connection().await?).await?;
    if paused {
        return Err(ApiError::conflict("bridge_paused", "withdrawals to the chain are paused by an admin"));
    }
    Ok(())
}

/// The address must be linked to the caller (the command-side `chain_links`, never a lagging
/// read model) and past its cooldown.
async fn check_linked_address(uow: &mut UnitOfWork, user_id: Uuid, address: &str) -> Result<(), ApiError> {
    let usable_from: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT usable_from FROM chain_links WHERE address = $1 AND user_id = $2")
            .bind(address)
            .bind(user_id)
            .fetch_optional(uow.connection().await?)
            .await?;
    let Some(usable_from) = usable_from else {
        return Err(ApiError::unprocessable("address_not_linked", "link this address to your user first"));
    };
    if usable_from > uow.context().at {
        return Err(ApiError::unprocessable(
            "address_cooling_down",
            format!("this address may receive withdrawals from {usable_from} on"),
        ));
    }
    Ok(())
}

/// Sums what was queued in the last 24 hours (withdrawals credited back do not count), under a
/// lock held until commit, so the sums cannot change between the check and the insert.
async fn check_daily_limits(
    uow: &mut UnitOfWork,
    state: &AppState,
    user_id: Uuid,
    amount: Decimal,
) -> Result<(), ApiError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WITHDRAWAL_LIMITS_LOCK)
        .execute(uow.connection().await?)
        .await?;
    let since = uow.context().at - chrono::Duration::hours(DAILY_LIMIT_WINDOW_HOURS);
    let (user_total, global_total): (Decimal, Decimal) = sqlx::query_as(
        "SELECT COALESCE(sum(amount) FILTER (WHERE user_id = $1), 0), COALESCE(sum(amount), 0) \
         FROM chain_withdrawals WHERE requested_at > $2 AND state <> 'returned'",
    )
    .bind(user_id)
    .bind(since)
    .fetch_one(uow.connection().await?)
    .await?;
    let limits = &state.config.chain;
    if user_total + amount > limits.withdrawal_user_daily_limit {
        let left = (limits.withdrawal_user_daily_limit - user_total).max(Decimal::ZERO);
        let detail = format!("you may withdraw {} more CARBON in the next 24 hours", Currency::Carbon.format(left));
        return Err(ApiError::unprocessable("user_daily_limit_exceeded", detail));
    }
    if global_total + amount > limits.withdrawal_global_daily_limit {
        return Err(ApiError::unprocessable(
            "global_daily_limit_exceeded",
            "the platform's daily withdrawals to the chain are used up; try again later",
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainWithdrawalView {
    pub id: Uuid,
    pub wallet_id: Uuid,
    pub amount: String,
    pub address: String,
    /// `pending` until the mint is final (`completed`) or the wallet is credited back
    /// (`failed`, with a `reason`).
    pub status: String,
    pub reason: Option<String>,
    /// The withdrawal's line in the wallet's history (same id).
    pub transaction_id: Uuid,
    pub position: i64,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub chain: ChainMintView,
}

/// Where the mint stands, from the bridge's queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainMintView {
    /// `queued` (no transaction yet), `submitted`, `mined`, `final`, or `returned`.
    pub state: Option<String>,
    pub tx_hash: Option<String>,
    pub nonce: Option<i64>,
    pub block_number: Option<i64>,
    /// Blocks from the mint's block to the chain's head, both counted, as the chain answers
    /// now; `null` before the mint is mined, or when this server reaches no chain node (the
    /// bridge's `final` state says the mint counts).
    pub confirmations: Option<i64>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
}

/// A withdrawal to the chain: yours, or any for auditors and admins; others get 404.
#[utoipa::path(get, path = "/api/v1/chain/withdrawals/{id}", tag = "chain", security(("bearer" = [])),
    params(("min_position" = Option<i64>, Query, description = "Wait (bounded) for the read model to reach this position")),
    responses((status = 200, body = ChainWithdrawalView), (status = 404, description = "chain_withdrawal_not_found", body = crate::error::Problem)))]
pub async fn chain_withdrawals_get(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["chain"], consistency.0).await?;
    let row = sqlx::query(
        "SELECT r.*, COALESCE(r.user_id, q.user_id) AS owner_id, q.state AS chain_state, q.tx_hash AS chain_tx_hash, \
                q.nonce, q.block_number AS chain_block_number, q.cancel_requested_at \
         FROM rm_chain_withdrawals r LEFT JOIN chain_withdrawals q USING (withdrawal_id) WHERE r.withdrawal_id = $1",
    )
    .bind(id)
    .fetch_optional(state.store.pool())
    .await?
    .ok_or_else(withdrawal_not_found)?;
    let owner: Option<Uuid> = row.get("owner_id");
    if owner != Some(caller.user_id) && !caller.is_staff() {
        return Err(withdrawal_not_found());
    }
    let hex_of = |column: &str| row.get::<Option<Vec<u8>>, _>(column).map(|bytes| format!("0x{}", hex::encode(bytes)));
    let block_number = row.get::<Option<i64>, _>("chain_block_number").or_else(|| row.get("block_number"));
    let view = ChainWithdrawalView {
        id,
        wallet_id: row.get("wallet_id"),
        amount: Currency::Carbon.format(row.get("amount")),
        address: row.get("address"),
        status: row.get("status"),
        reason: row.get("reason"),
        transaction_id: id,
        position: row.get("position"),
        requested_at: row.get("requested_at"),
        updated_at: row.get("updated_at"),
        chain: ChainMintView {
            state: row.get("chain_state"),
            tx_hash: hex_of("chain_tx_hash").or_else(|| row.get("tx_hash")),
            nonce: row.get("nonce"),
            block_number,
            confirmations: confirmations(&state, block_number).await,
            cancel_requested_at: row.get("cancel_requested_at"),
        },
    };
    Ok(with_position(position, axum::Json(view)))
}

/// Blocks from `block_number` to the chain's head, both counted, if this server reaches a node.
async fn confirmations(state: &AppState, block_number: Option<i64>) -> Option<i64> {
    let (source, block) = (state.chain.as_ref()?, block_number?);
    match source.head_block().await {
        Ok(head) => Some((head as i64 - block + 1).max(0)),
        Err(error) => {
            tracing::debug!(%error, "no chain head for a withdrawal's confirmations");
            None
        }
    }
}

fn withdrawal_not_found() -> ApiError {
    ApiError::not_found("chain_withdrawal_not_found", "no such withdrawal to the chain")
}

/// Ask the bridge to give up a withdrawal (admin): it credits the wallet back only once the
/// mint provably never happened (a final block without it, the signer's nonce past it).
/// `withdrawal_not_cancellable` (409) once it is final or returned.
#[utoipa::path(post, path = "/api/v1/chain/withdrawals/{id}/cancel", tag = "chain", security(("bearer" = [])),
    responses((status = 202, description = "Cancel requested: {id, cancel_requested_at}"),
              (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
              (status = 409, description = "withdrawal_not_cancellable", body = crate::error::Problem)))]
pub async fn chain_withdrawals_cancel(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let row: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "UPDATE chain_withdrawals SET cancel_requested_at = COALESCE(cancel_requested_at, now()), updated_at = now() \
         WHERE withdrawal_id = $1 RETURNING state, cancel_requested_at",
    )
    .bind(id)
    .fetch_optional(state.store.pool())
    .await?;
    let Some((chain_state, requested_at)) = row else { return Err(withdrawal_not_found()) };
    if matches!(chain_state.as_str(), "final" | "returned") {
        return Err(ApiError::conflict("withdrawal_not_cancellable", format!("the withdrawal is {chain_state}")));
    }
    let event = SecurityEvent::new("chain_withdrawal_cancel_requested", &info)
        .actor(caller.user_id.to_string())
        .subject(id.to_string());
    security::record(&state, event).await;
    let body = json!({"id": id, "cancel_requested_at": requested_at});
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// Pause withdrawals to the chain (admin): new ones answer `bridge_paused`; the bridge pauses
/// the token contract.
#[utoipa::path(post, path = "/api/v1/chain/pause", tag = "chain", security(("bearer" = [])),
    responses((status = 200, description = "{paused: true}"), (status = 403, body = crate::error::Problem)))]
pub async fn chain_pause(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
) -> Result<Response, ApiError> {
    set_paused(state, caller, info, true).await
}

/// Resume withdrawals to the chain (admin).
#[utoipa::path(post, path = "/api/v1/chain/unpause", tag = "chain", security(("bearer" = [])),
    responses((status = 200, description = "{paused: false}"), (status = 403, body = crate::error::Problem)))]
pub async fn chain_unpause(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
) -> Result<Response, ApiError> {
    set_paused(state, caller, info, false).await
}

async fn set_paused(state: AppState, caller: Caller, info: RequestInfo, paused: bool) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    sqlx::query("UPDATE chain_controls SET paused = $1, changed_by = $2, changed_at = now()")
        .bind(paused)
        .bind(caller.user_id.to_string())
        .execute(state.store.pool())
        .await?;
    let kind = if paused { "chain_paused" } else { "chain_unpaused" };
    security::record(&state, SecurityEvent::new(kind, &info).actor(caller.user_id.to_string())).await;
    Ok(axum::Json(json!({"paused": paused})).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SuspenseQuery {
    /// `suspended` (default) or `resolved`.
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
    pub min_position: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuspenseView {
    pub id: Uuid,
    pub amount: String,
    /// What the `BridgedIn` log named as the platform account.
    pub account_ref: Option<String>,
    pub tx_hash: Option<String>,
    pub log_index: Option<i64>,
    pub status: String,
    /// The wallet it was resolved to.
    pub wallet_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub position: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuspensePage {
    pub items: Vec<SuspenseView>,
    pub next_cursor: Option<String>,
}

/// Tokens bridged in for accounts the ledger does not know (admin, auditor).
#[utoipa::path(get, path = "/api/v1/chain/suspense", tag = "chain", security(("bearer" = [])), params(SuspenseQuery),
    responses((status = 200, body = SuspensePage), (status = 403, body = crate::error::Problem)))]
pub async fn chain_suspense_list(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    consistency: Consistency,
    ApiQuery(query): ApiQuery<SuspenseQuery>,
) -> Result<Response, ApiError> {
    caller.require_any(&state, &info, &[Role::Admin, Role::Auditor]).await?;
    let status = query.status.unwrap_or_else(|| "suspended".into());
    if !matches!(status.as_str(), "suspended" | "resolved") {
        return Err(ApiError::invalid_field("status", "invalid", "suspended or resolved"));
    }
    let (after, limit) = (cursor::decode(query.cursor.as_deref())?, page_limit(query.limit)?);
    let position = position_of(&state, &["chain"], consistency.0).await?;
    let rows = sqlx::query(
        "SELECT * FROM rm_chain_movements WHERE kind = 'suspense' AND status = $1 AND position > $2 \
         ORDER BY position LIMIT $3",
    )
    .bind(&status)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(state.store.pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<SuspenseView> = rows
        .iter()
        .take(limit as usize)
        .map(|row| SuspenseView {
            id: row.get("movement_id"),
            amount: Currency::Carbon.format(row.get("amount")),
            account_ref: row.get("account_ref"),
            tx_hash: row.get("tx_hash"),
            log_index: row.get("log_index"),
            status: row.get("status"),
            wallet_id: row.get("wallet_id"),
            occurred_at: row.get("occurred_at"),
            position: row.get("position"),
        })
        .collect();
    let next_cursor = more.then(|| items.last().map(|item| cursor::encode(item.position))).flatten();
    Ok(with_position(position, axum::Json(SuspensePage { items, next_cursor })))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The CARBON wallet the suspended tokens belong to.
    pub wallet_id: Uuid,
}

/// Resolve a suspended bridge-in to a wallet (admin): the suspense is marked resolved and the
/// wallet credited from `chain_suspense` in one transaction. `suspense_already_resolved` (409)
/// the second time.
#[utoipa::path(post, path = "/api/v1/chain/suspense/{id}/resolve", request_body = ResolveRequest, tag = "chain", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 200, description = "Resolved: {id, wallet_id, amount, position}"),
              (status = 404, description = "suspense_not_found, wallet_not_found", body = crate::error::Problem),
              (status = 409, description = "suspense_already_resolved", body = crate::error::Problem),
              (status = 422, description = "currency_not_carbon", body = crate::error::Problem)))]
pub async fn chain_suspense_resolve(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiJson<ResolveRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let wallet_id = body.value.wallet_id;
    let input =
        CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |uow| resolve(uow, id, wallet_id)).await
}

async fn resolve(mut uow: UnitOfWork, id: Uuid, wallet_id: Uuid) -> Result<event_store::Committed, ApiError> {
    // The on-chain origin from the suspense's own event, not from a read model that may lag.
    let origin: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT p ->> 'tx_hash', (p ->> 'log_index')::bigint FROM ( \
           SELECT canonical::jsonb -> 'payload' -> 'BridgeInSuspended' AS p FROM events \
           WHERE aggregate_type = $1 AND aggregate_id = $2 AND event_type = 'BridgeInSuspended') e",
    )
    .bind(<ChainMovement as cqrs_es::Aggregate>::TYPE)
    .bind(id.to_string())
    .fetch_optional(uow.connection().await?)
    .await?;
    let (tx_hash, log_index) = origin.unwrap_or_default();
    let command = ChainMovementCommand::ResolveSuspense { wallet_id };
    let resolved = uow.execute::<ChainMovement>(&id.to_string(), command, &()).await??;
    let amount = resolved.aggregate.suspended.ok_or_else(ApiError::internal)?;
    let amount = Amount::new(amount, Currency::Carbon).map_err(|_| ApiError::internal())?;
    let credit = WalletCommand::CreditFromChain {
        deposit_id: id,
        amount,
        from: SystemAccount::ChainSuspense,
        tx_hash: tx_hash.unwrap_or_default(),
        log_index: log_index.and_then(|i| u64::try_from(i).ok()).unwrap_or_default(),
    };
    uow.execute::<Wallet>(&wallet_id.to_string(), credit, &()).await?.map_err(|error| match error {
        domain::wallet::WalletError::NotFound => wallet_not_found(),
        other => other.into(),
    })?;
    let body = json!({"id": id, "wallet_id": wallet_id, "amount": Currency::Carbon.format(amount.value())});
    commit_ok(uow, body).await
}
