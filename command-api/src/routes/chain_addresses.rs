//! `/api/v1/chain/challenge` and `/api/v1/chain/addresses`: a user proves they hold an
//! Ethereum address by signing a one-time challenge (EIP-4361 style message, EIP-191
//! `personal_sign`), and the address is linked to them and nobody else.

use std::str::FromStr;

use alloy_primitives::{Address, Signature};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::user::{User, UserCommand};
use event_store::UnitOfWork;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Arguments, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Caller, RequestInfo};
use crate::commands::{commit_created, run, CommandInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::registration::arguments;
use crate::state::AppState;

/// How long a challenge may be signed and sent back.
const CHALLENGE_TTL_SECS: i64 = 300;
/// Open (unexpired, unused) challenges one user may hold: enough for a few tabs, bounded so a
/// client in a loop cannot fill the table.
const CHALLENGES_OPEN_PER_USER_MAX: i64 = 20;
/// A link without a nonce looks for the signed challenge among this many of the user's latest
/// (as many as may be open at once).
const RECENT_CHALLENGES_MAX: i64 = CHALLENGES_OPEN_PER_USER_MAX;
/// Cooldown of a newly linked address on a real network when none is configured: a stolen
/// session cannot link an address and withdraw to it at once.
const ADDRESS_COOLDOWN_DEFAULT_SECS: i64 = 86_400;
/// Longest domain shown in a challenge (from the `Host` header).
const CHALLENGE_DOMAIN_LEN_MAX: usize = 253;
/// Addresses one user may link.
const ADDRESSES_PER_USER_MAX: i64 = 100;

/// The chain the ledger bridges to, as stored by the bridge at its first use.
pub struct ChainIdentity {
    pub chain_id: i64,
    pub is_dev_chain: bool,
}

/// The stored chain identity, or 503 `chain_not_configured`.
pub async fn chain_identity(conn: &mut sqlx::PgConnection) -> Result<ChainIdentity, ApiError> {
    let row = sqlx::query("SELECT chain_id, is_dev_chain FROM chain_identity")
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(chain_not_configured)?;
    Ok(ChainIdentity { chain_id: row.get("chain_id"), is_dev_chain: row.get("is_dev_chain") })
}

pub fn chain_not_configured() -> ApiError {
    ApiError::unavailable(
        "chain_not_configured",
        "no chain is configured yet: the bridge records the chain at its first start",
        5,
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeView {
    /// The exact text to sign with `personal_sign` (EIP-191).
    pub message: String,
    pub nonce: String,
    pub chain_id: i64,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A one-time message to sign with the address you want to link (EIP-4361 style: domain,
/// chain id, your user id, a nonce, issue and expiry time). It expires after 5 minutes and
/// links one address once.
#[utoipa::path(get, path = "/api/v1/chain/challenge", tag = "chain", security(("bearer" = [])),
    responses((status = 200, body = ChallengeView), (status = 401, body = crate::error::Problem),
              (status = 429, description = "too_many_challenges", body = crate::error::Problem),
              (status = 503, description = "chain_not_configured", body = crate::error::Problem)))]
pub async fn chain_challenge(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<axum::Json<ChallengeView>, ApiError> {
    let mut conn = state.store.pool().acquire().await?;
    let chain = chain_identity(&mut conn).await?;
    // Expired challenges can link nothing: each user's are dropped as they ask for new ones,
    // so the table stays about as small as the open ones.
    sqlx::query("DELETE FROM chain_link_challenges WHERE user_id = $1 AND expires_at <= now()")
        .bind(caller.user_id)
        .execute(&mut *conn)
        .await?;
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM chain_link_challenges WHERE user_id = $1 AND consumed_at IS NULL AND expires_at > now()",
    )
    .bind(caller.user_id)
    .fetch_one(&mut *conn)
    .await?;
    if open >= CHALLENGES_OPEN_PER_USER_MAX {
        return Err(ApiError {
            retry_after: Some(CHALLENGE_TTL_SECS as u64),
            ..ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_challenges",
                "too many open challenges",
            )
        });
    }
    let issued_at = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now is a valid time");
    let expires_at = issued_at + chrono::Duration::seconds(CHALLENGE_TTL_SECS);
    let nonce = new_nonce();
    let message =
        challenge_message(&domain_of(&headers), chain.chain_id, caller.user_id, &nonce, issued_at, expires_at);
    sqlx::query(
        "INSERT INTO chain_link_challenges (nonce, user_id, message, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&nonce)
    .bind(caller.user_id)
    .bind(&message)
    .bind(issued_at)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(axum::Json(ChallengeView { message, nonce, chain_id: chain.chain_id, issued_at, expires_at }))
}

/// 128 random bits, hex: unguessable, and alphanumeric as EIP-4361 wants.
fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The host the client called, as EIP-4361's `domain`; only shown to the signer, so a bogus
/// `Host` header harms nobody but the caller.
fn domain_of(headers: &HeaderMap) -> String {
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("ecoledger");
    let printable = host.chars().all(|c| c.is_ascii_graphic()) && host.len() <= CHALLENGE_DOMAIN_LEN_MAX;
    if printable {
        host.to_string()
    } else {
        "ecoledger".to_string()
    }
}

fn challenge_message(
    domain: &str,
    chain_id: i64,
    user_id: Uuid,
    nonce: &str,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> String {
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    format!(
        "{domain} asks you to link an Ethereum account to your EcoLedger user.\n\n\
         Only sign this if you want withdrawals of CARBON to go to the account that signs it.\n\n\
         Version: 1\nChain ID: {chain_id}\nUser ID: {user_id}\nNonce: {nonce}\n\
         Issued At: {}\nExpiration Time: {}",
        time(issued_at),
        time(expires_at)
    )
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The address that signed the challenge (0x + 40 hex digits, any case).
    #[schema(example = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")]
    pub address: String,
    /// The 65-byte `personal_sign` signature of the challenge's message, 0x-prefixed hex.
    pub signature: String,
    /// The challenge's nonce; without it, your latest challenge.
    pub nonce: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkedAddressView {
    /// Lower-case hex.
    pub address: String,
    /// Withdrawals may go to the address from this time on.
    pub usable_from: DateTime<Utc>,
    pub linked_at: DateTime<Utc>,
    pub position: i64,
}

/// Link the address that signed your challenge. Refusals: `challenge_not_found`,
/// `challenge_expired`, `challenge_used` (409: a challenge links once),
/// `challenge_not_yours`, `signature_invalid` (malformed), `signature_mismatch` (signed by
/// another key or another message), `address_already_linked` (409: to you or someone else).
#[utoipa::path(post, path = "/api/v1/chain/addresses", request_body = LinkRequest, tag = "chain", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, description = "Linked: {address, usable_from, position}"),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
              (status = 503, description = "chain_not_configured", body = crate::error::Problem)))]
pub async fn chain_addresses_link(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    body: ApiJson<LinkRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    let address = parse_address(&request.address)?;
    let signature = parse_signature(&request.signature)?;
    let user_id = caller.user_id;
    let input = CommandInput { actor: user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |uow| {
        let (state, nonce) = (state.clone(), request.nonce.clone());
        async move { link(uow, &state, user_id, address, signature, nonce.as_deref()).await }
    })
    .await
}

/// An address: `0x` and 40 hex digits. The checksum of mixed case is not required: the
/// signature proves the address.
pub fn parse_address(text: &str) -> Result<Address, ApiError> {
    let hex_part = text.strip_prefix("0x").unwrap_or("");
    if hex_part.len() != 40 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_field("address", "invalid_address", "0x followed by 40 hex digits"));
    }
    Address::from_str(&text.to_ascii_lowercase())
        .map_err(|_| ApiError::invalid_field("address", "invalid_address", "0x followed by 40 hex digits"))
}

/// The lower-case hex the ledger stores and compares addresses as.
pub fn address_text(address: &Address) -> String {
    format!("{address:#x}")
}

fn parse_signature(text: &str) -> Result<Signature, ApiError> {
    let invalid = || ApiError::invalid_field("signature", "signature_invalid", "65 bytes of 0x-prefixed hex");
    let bytes = hex::decode(text.strip_prefix("0x").ok_or_else(invalid)?).map_err(|_| invalid())?;
    if bytes.len() != 65 {
        return Err(invalid());
    }
    Signature::try_from(bytes.as_slice()).map_err(|_| invalid())
}

/// The challenge, checked under the user's link lock (a concurrent link of the same challenge
/// waits and then finds it used); the signature must recover to `address`.
async fn link(
    mut uow: UnitOfWork,
    state: &AppState,
    user_id: Uuid,
    address: Address,
    signature: Signature,
    nonce: Option<&str>,
) -> Result<event_store::Committed, ApiError> {
    let now = uow.context().at;
    let chain = chain_identity(uow.connection().await?).await?;
    let signed_by_address =
        |message: &str| signature.recover_address_from_msg(message.as_bytes()).ok() == Some(address);
    let challenge = locked_challenge(&mut uow, user_id, nonce, signed_by_address).await?;
    challenge.check(user_id, now)?;
    let signer = signature
        .recover_address_from_msg(challenge.message.as_bytes())
        .map_err(|_| ApiError::unprocessable("signature_mismatch", "the signature does not recover to any address"))?;
    if signer != address {
        return Err(ApiError::unprocessable("signature_mismatch", "the challenge was not signed by this address"));
    }
    check_address_count(&mut uow, user_id).await?;
    let usable_from = now + address_cooldown(state, &chain);
    let address = address_text(&address);
    uow.stage_statement(
        "UPDATE chain_link_challenges SET consumed_at = $2 WHERE nonce = $1",
        arguments(|a| {
            a.add(challenge.nonce.clone())?;
            a.add(now)
        })?,
    );
    uow.stage_statement(
        "INSERT INTO chain_links (address, user_id, usable_from, linked_at) VALUES ($1, $2, $3, $4)",
        arguments(|a| {
            a.add(address.clone())?;
            a.add(user_id)?;
            a.add(usable_from)?;
            a.add(now)
        })?,
    );
    uow.claim(crate::claims::CHAIN_ADDRESS, &address, &user_id.to_string());
    let command = UserCommand::LinkChainAddress { address: address.clone(), usable_from };
    uow.execute::<User>(&user_id.to_string(), command, &()).await??;
    let body = json!({"address": address, "usable_from": usable_from, "linked_at": now});
    commit_created(uow, body, "/api/v1/chain/addresses".to_string()).await
}

fn address_cooldown(state: &AppState, chain: &ChainIdentity) -> chrono::Duration {
    match state.config.chain.address_cooldown {
        Some(cooldown) => chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX),
        None if chain.is_dev_chain => chrono::Duration::zero(),
        None => chrono::Duration::seconds(ADDRESS_COOLDOWN_DEFAULT_SECS),
    }
}

async fn check_address_count(uow: &mut UnitOfWork, user_id: Uuid) -> Result<(), ApiError> {
    let linked: i64 = sqlx::query_scalar("SELECT count(*) FROM claims WHERE kind = $1 AND owner = $2")
        .bind(crate::claims::CHAIN_ADDRESS)
        .bind(user_id.to_string())
        .fetch_one(uow.connection().await?)
        .await?;
    if linked >= ADDRESSES_PER_USER_MAX {
        return Err(ApiError::unprocessable("too_many_addresses", "this user has linked the most addresses allowed"));
    }
    Ok(())
}

struct Challenge {
    nonce: String,
    user_id: Uuid,
    message: String,
    expires_at: DateTime<Utc>,
    consumed: bool,
}

impl Challenge {
    /// Named after the rule each refusal enforces; a used challenge is a conflict.
    fn check(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<(), ApiError> {
        if self.user_id != user_id {
            return Err(ApiError::unprocessable("challenge_not_yours", "this challenge was issued to another user"));
        }
        if self.consumed {
            return Err(ApiError::conflict("challenge_used", "this challenge already linked an address"));
        }
        if self.expires_at <= now {
            return Err(ApiError::unprocessable("challenge_expired", "this challenge expired: ask for a new one"));
        }
        Ok(())
    }
}

/// Links of one user run one at a time (a transaction-scoped advisory lock: a row lock would
/// be a write before the events, which the event store refuses), so a challenge read here
/// cannot be consumed by a concurrent link before this one commits. Without a nonce: the most
/// recent of the user's last challenges that `signed` accepts (the one the signature is for,
/// even when two were issued in the same second), else the most recent one, whose checks
/// then name what is wrong.
async fn locked_challenge(
    uow: &mut UnitOfWork,
    user_id: Uuid,
    nonce: Option<&str>,
    signed: impl Fn(&str) -> bool,
) -> Result<Challenge, ApiError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('chain_link:' || $1::text, 0))")
        .bind(user_id)
        .execute(uow.connection().await?)
        .await?;
    let row = match nonce {
        Some(nonce) => {
            sqlx::query("SELECT * FROM chain_link_challenges WHERE nonce = $1")
                .bind(nonce)
                .fetch_optional(uow.connection().await?)
                .await?
        }
        None => {
            let recent = sqlx::query(
                "SELECT * FROM chain_link_challenges WHERE user_id = $1 ORDER BY issued_at DESC, nonce LIMIT $2",
            )
            .bind(user_id)
            .bind(RECENT_CHALLENGES_MAX)
            .fetch_all(uow.connection().await?)
            .await?;
            let signed_one = recent.iter().position(|row| signed(row.get::<&str, _>("message")));
            recent.into_iter().nth(signed_one.unwrap_or(0))
        }
    };
    let row = row.ok_or_else(|| ApiError::unprocessable("challenge_not_found", "no such challenge: ask for one"))?;
    let consumed_at: Option<DateTime<Utc>> = row.get("consumed_at");
    Ok(Challenge {
        nonce: row.get("nonce"),
        user_id: row.get("user_id"),
        message: row.get("message"),
        expires_at: row.get("expires_at"),
        consumed: consumed_at.is_some(),
    })
}

/// Your linked addresses, oldest first.
#[utoipa::path(get, path = "/api/v1/chain/addresses", tag = "chain", security(("bearer" = [])),
    responses((status = 200, body = [LinkedAddressView]), (status = 401, body = crate::error::Problem)))]
pub async fn chain_addresses_list(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["chain"], consistency.0).await?;
    let rows = sqlx::query(
        "SELECT address, usable_from, linked_at, position FROM rm_chain_addresses WHERE user_id = $1 \
         ORDER BY position LIMIT $2",
    )
    .bind(caller.user_id)
    .bind(ADDRESSES_PER_USER_MAX)
    .fetch_all(state.store.pool())
    .await?;
    let items: Vec<LinkedAddressView> = rows
        .iter()
        .map(|row| LinkedAddressView {
            address: row.get("address"),
            usable_from: row.get("usable_from"),
            linked_at: row.get("linked_at"),
            position: row.get("position"),
        })
        .collect();
    Ok(with_position(position, axum::Json(items)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_any_case_and_print_as_lower_case_hex() {
        let address = parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8").unwrap();
        assert_eq!(address_text(&address), "0x70997970c51812dc3a010c7d01b50e0d17dc79c8");
        for bad in ["70997970c51812dc3a010c7d01b50e0d17dc79c8", "0x1234", "0xzz997970c51812dc3a010c7d01b50e0d17dc79c8"]
        {
            assert_eq!(parse_address(bad).unwrap_err().code, "validation_failed", "{bad}");
        }
    }

    #[test]
    fn malformed_signatures_are_invalid_not_mismatched() {
        for bad in ["", "0x", "0x1234", "1234", &format!("0x{}", "ab".repeat(64))] {
            assert_eq!(parse_signature(bad).unwrap_err().errors[0].code, "signature_invalid", "{bad}");
        }
    }
}
