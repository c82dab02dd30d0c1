//! `/api/v1/transfers`: money from one of your wallets to another user's, in one currency.
//!
//! Both steps run in the request's transaction: the source → `transit` (a refusal answers at
//! once and moves nothing), then `transit` → the destination, or back to the source when the
//! destination refuses (DESIGN.md section 3).

use axum::extract::State;
use axum::response::Response;
use cqrs_es::Aggregate;
use domain::transfer::{Transfer, TransferCommand, TransferParties};
use domain::wallet::{wallet_id, Wallet, WalletCommand};
use domain::Currency;
use event_store::UnitOfWork;
use sagas::Settlement;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Arguments, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_created, run, CommandInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::registration::arguments;
use crate::routes::wallets::{parse_amount, validate_text, wallet_not_found};
use crate::state::AppState;
use crate::views::format_amount;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub from_wallet_id: Uuid,
    #[schema(example = "25.00")]
    pub amount: String,
    /// Free text for the recipient; kept out of events.
    pub memo: Option<String>,
    /// The destination wallet, or else `to_username` with `currency`.
    pub to_wallet_id: Option<Uuid>,
    #[schema(example = "bob")]
    pub to_username: Option<String>,
    #[schema(example = "EUR")]
    pub currency: Option<String>,
}

/// Send money: 201 with the transfer settled in one transaction (`completed`, or `failed` with
/// the destination's refusal as `reason` and the money back), or 422 at once, moving nothing
/// (`insufficient_funds`, `currency_mismatch`, `same_wallet`, `wallet_frozen`,
/// `recipient_not_found`).
#[utoipa::path(post, path = "/api/v1/transfers", request_body = TransferRequest, tag = "transfers", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "Settled: {id, status: completed|failed, reason, currency, amount, position}"),
              (status = 404, description = "wallet_not_found", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn transfers_create(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    body: ApiJson<TransferRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    if let Some(memo) = &request.memo {
        validate_text("memo", memo)?;
    }
    let recipient = Recipient::from_request(&request)?;
    let sender = caller.user_id;
    let input = CommandInput { actor: sender.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |uow| {
        let (request, recipient) = (request.clone(), recipient.clone());
        async move { initiate(uow, sender, &request, &recipient).await }
    })
    .await
}

/// Who receives: a wallet, or a user's wallet of a currency.
#[derive(Debug, Clone)]
enum Recipient {
    Wallet(Uuid),
    User { username: String, currency: Currency },
}

impl Recipient {
    fn from_request(request: &TransferRequest) -> Result<Recipient, ApiError> {
        match (&request.to_wallet_id, &request.to_username, &request.currency) {
            (Some(wallet), None, None) => Ok(Recipient::Wallet(*wallet)),
            (None, Some(username), Some(currency)) => {
                let currency = currency
                    .parse()
                    .map_err(|_| ApiError::invalid_field("currency", "unknown_currency", "EUR, USD, ETH or CARBON"))?;
                Ok(Recipient::User { username: username.to_lowercase(), currency })
            }
            _ => Err(ApiError::invalid_field(
                "to_wallet_id",
                "recipient_required",
                "give either to_wallet_id, or to_username with currency",
            )),
        }
    }

    /// The destination wallet's id (whether it exists shows once it is loaded).
    async fn wallet_id(&self, uow: &mut UnitOfWork) -> Result<Uuid, ApiError> {
        match self {
            Recipient::Wallet(wallet) => Ok(*wallet),
            Recipient::User { username, currency } => {
                let user: Option<Uuid> = sqlx::query("SELECT user_id FROM credentials WHERE username_lower = $1")
                    .bind(username)
                    .fetch_optional(uow.reader().await?)
                    .await?
                    .map(|row| row.get(0));
                Ok(wallet_id(user.ok_or_else(recipient_not_found)?, *currency))
            }
        }
    }
}

fn recipient_not_found() -> ApiError {
    ApiError::unprocessable("recipient_not_found", "no such recipient")
}

/// The whole transfer in one transaction: checks and debits the source into `transit`,
/// records the transfer, then credits the destination from `transit` and completes it, or,
/// when the destination refuses the credit, returns the money and fails it. Both postings
/// and the transfer's events commit together or not at all (DESIGN.md section 3).
async fn initiate(
    mut uow: UnitOfWork,
    sender: Uuid,
    request: &TransferRequest,
    recipient: &Recipient,
) -> Result<event_store::Committed, ApiError> {
    let to_wallet = recipient.wallet_id(&mut uow).await?;
    let transfer_id = domain::new_id();
    let from_wallet = request.from_wallet_id;
    let (from_stream, to_stream, transfer_stream) =
        (from_wallet.to_string(), to_wallet.to_string(), transfer_id.to_string());
    uow.hold_streams(&[(Wallet::TYPE, &from_stream), (Wallet::TYPE, &to_stream), (Transfer::TYPE, &transfer_stream)])
        .await?;
    let destination = uow.state::<Wallet>(&to_stream).await?.identity.ok_or_else(recipient_not_found)?;
    let mut parties = None;
    let debit = |wallet: &Wallet| {
        let identity = wallet.identity.filter(|identity| identity.owner_id == sender).ok_or_else(wallet_not_found)?;
        if from_wallet == to_wallet {
            return Err(ApiError::unprocessable("same_wallet", "a wallet cannot send to itself"));
        }
        if identity.currency != destination.currency {
            return Err(ApiError::unprocessable("currency_mismatch", "both wallets must hold the same currency"));
        }
        let amount = parse_amount(&request.amount, identity.currency)?;
        let currency = identity.currency;
        parties = Some(TransferParties {
            transfer_id,
            from_wallet_id: from_wallet,
            from_user_id: sender,
            to_wallet_id: to_wallet,
            to_user_id: destination.owner_id,
            currency,
            amount,
        });
        Ok(WalletCommand::DebitForTransfer { transfer_id, to_wallet_id: to_wallet, amount, currency })
    };
    uow.execute_with::<Wallet, ApiError>(&from_stream, debit, &()).await??;
    let parties = parties.expect("set by a successful debit");
    uow.execute_new::<Transfer>(&transfer_stream, TransferCommand::Initiate(parties.clone()), &()).await??;
    let (status, reason) = match sagas::settle_transfer_in(&mut uow, &parties).await? {
        Settlement::Completed => ("completed", None),
        Settlement::Failed { reason } => ("failed", Some(reason)),
        Settlement::AlreadySettled => unreachable!("a transfer initiated in this unit of work is not settled yet"),
    };
    if let Some(memo) = request.memo.clone() {
        uow.stage_statement(
            "INSERT INTO transfer_memos (transfer_id, memo) VALUES ($1, $2)",
            arguments(|a| {
                a.add(transfer_id)?;
                a.add(memo)
            })?,
        );
    }
    let body = json!({
        "id": transfer_id,
        "status": status,
        "reason": reason,
        "currency": parties.currency.code(),
        "amount": parties.currency.format(parties.amount.value()),
    });
    commit_created(uow, body, format!("/api/v1/transfers/{transfer_id}")).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub id: Uuid,
    /// `pending`, `completed` or `failed` (the destination refused and the source was credited back).
    pub status: String,
    pub reason: Option<String>,
    pub currency: String,
    pub amount: String,
    pub from_username: Option<String>,
    pub to_username: Option<String>,
    /// The sender's wallet; shown to the sender (and staff) only.
    pub from_wallet_id: Option<Uuid>,
    /// The recipient's wallet; shown to the recipient (and staff) only.
    pub to_wallet_id: Option<Uuid>,
    pub memo: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub position: i64,
}

/// A transfer you sent or received (any, for staff).
#[utoipa::path(get, path = "/api/v1/transfers/{id}", tag = "transfers", security(("bearer" = [])),
    responses((status = 200, body = TransferView), (status = 404, body = crate::error::Problem)))]
pub async fn transfers_get(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["transfers", "users"], consistency.0).await?;
    let row = sqlx::query(
        "SELECT t.*, f.username AS from_username, r.username AS to_username, m.memo \
         FROM rm_transfers t LEFT JOIN rm_users f ON f.user_id = t.from_user_id \
         LEFT JOIN rm_users r ON r.user_id = t.to_user_id LEFT JOIN transfer_memos m ON m.transfer_id = t.transfer_id \
         WHERE t.transfer_id = $1",
    )
    .bind(id)
    .fetch_optional(state.store.pool())
    .await?
    .ok_or_else(transfer_not_found)?;
    let (from_user, to_user): (Uuid, Uuid) = (row.get("from_user_id"), row.get("to_user_id"));
    let (is_sender, is_recipient) = (caller.user_id == from_user, caller.user_id == to_user);
    if !(is_sender || is_recipient || caller.is_staff()) {
        return Err(transfer_not_found());
    }
    let currency: String = row.get("currency");
    let view = TransferView {
        id,
        status: row.get("status"),
        reason: row.get("reason"),
        amount: format_amount(&currency, row.get("amount")),
        currency,
        from_username: row.get("from_username"),
        to_username: row.get("to_username"),
        from_wallet_id: (is_sender || caller.is_staff()).then(|| row.get("from_wallet_id")),
        to_wallet_id: (is_recipient || caller.is_staff()).then(|| row.get("to_wallet_id")),
        memo: row.get("memo"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        position: row.get("position"),
    };
    Ok(with_position(position, axum::Json(view)))
}

fn transfer_not_found() -> ApiError {
    ApiError::not_found("transfer_not_found", "no such transfer")
}
