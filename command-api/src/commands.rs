//! Running a command: idempotency keys, bounded retries of optimistic conflicts, stored
//! outcomes for repeats, and the security log for rejections (DESIGN.md section 4).

use std::future::Future;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use event_store::{
    Begun, CommandContext, Committed, Idempotency, Outcome, StoreError, UnitOfWork, IDEMPOTENCY_WAIT_MAX,
};
use rand::Rng;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::RequestInfo;
use crate::error::ApiError;
use crate::security::{self, SecurityEvent};
use crate::state::AppState;

/// Attempts of a command that keeps meeting optimistic conflicts before `503`.
const COMMAND_ATTEMPTS_MAX: u32 = 8;
/// Namespace of command ids derived from idempotency keys.
const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6ec0_1ed9_e500_4c1d_9a3b_6f0d_2c4e_8a11);

/// Who sends a command, and the request it came in.
pub struct CommandInput {
    /// The caller's user id, or `anonymous` for registration.
    pub actor: String,
    pub idempotency_key: Option<String>,
    pub body_hash: Vec<u8>,
    pub info: RequestInfo,
}

impl CommandInput {
    /// The command id: derived from (user, method, path, key) when a key was sent, so a
    /// repeat maps to the same command; random otherwise.
    fn command_id(&self) -> Uuid {
        match &self.idempotency_key {
            Some(key) => {
                let name = format!("{}\n{}\n{}\n{key}", self.actor, self.info.method, self.info.path);
                Uuid::new_v5(&COMMAND_ID_NAMESPACE, name.as_bytes())
            }
            None => Uuid::new_v4(),
        }
    }
}

/// Runs `body` in a unit of work until it commits, is rejected, or conflicts too often.
/// `body` is called again from a fresh load after each conflict.
pub async fn run<F, Fut>(state: &AppState, input: CommandInput, mut body: F) -> Result<Response, ApiError>
where
    F: FnMut(UnitOfWork) -> Fut,
    Fut: Future<Output = Result<Committed, ApiError>>,
{
    let command_id = input.command_id();
    let idempotency =
        input.idempotency_key.as_ref().map(|_| Idempotency { command_id, request_hash: input.body_hash.clone() });
    // A repeat of the key in this process waits for this attempt, rejection outcome included.
    let _running = match &idempotency {
        Some(key) => Some(state.store.hold_command(key.command_id, IDEMPOTENCY_WAIT_MAX).await?),
        None => None,
    };
    for attempt in 0..COMMAND_ATTEMPTS_MAX {
        let context = CommandContext {
            actor: input.actor.clone(),
            request_id: input.info.request_id.unwrap_or_else(Uuid::new_v4),
            correlation_id: input.info.request_id.unwrap_or(command_id),
            causation_id: None,
            command_id,
            at: event_store::metadata::now_micros(),
        };
        let uow = match state.store.begin(context, idempotency.clone()).await? {
            Begun::Fresh(uow) => *uow,
            Begun::Replayed(outcome) => return Ok(respond(&outcome, true)),
        };
        let refusal_basis = uow.refusal_basis();
        match body(uow).await {
            Ok(committed) => return Ok(respond(&committed.outcome, false)),
            Err(error) if error.code == "conflict_retry_exhausted" && attempt + 1 < COMMAND_ATTEMPTS_MAX => {
                back_off(attempt).await;
            }
            Err(error) if error.is_rejection() => {
                // Refused on a state whose commit then failed: that state never was, so neither
                // answer nor store the refusal; decide again from what is stored.
                if !refusal_basis.stands().await {
                    back_off(attempt).await;
                    continue;
                }
                reject(state, &input, idempotency.as_ref(), &error).await;
                return Err(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(StoreError::Conflict.into())
}

/// Stores a rejection as the command's outcome (a repeat answers the same) and logs it.
async fn reject(state: &AppState, input: &CommandInput, idempotency: Option<&Idempotency>, error: &ApiError) {
    let keeps_outcome = !matches!(error.code, "idempotency_key_reused" | "idempotency_key_in_progress");
    if let (Some(key), true) = (idempotency, keeps_outcome) {
        let outcome = Outcome::new(error.status.as_u16(), error.body());
        if let Err(store_error) = state.store.record_outcome(key, &outcome).await {
            tracing::warn!(%store_error, "rejection outcome not stored");
        }
    }
    let event = SecurityEvent::new("command_rejected", &input.info).actor(input.actor.clone()).code(error.code);
    security::record(state, event).await;
}

async fn back_off(attempt: u32) {
    let base_ms = 2_u64.pow(attempt.min(6));
    let jitter_ms = rand::rng().random_range(0..=base_ms);
    tokio::time::sleep(Duration::from_millis(base_ms + jitter_ms)).await;
}

/// Commits and answers 200 with `body` plus the position of the last event written.
pub async fn commit_ok(uow: UnitOfWork, body: Value) -> Result<Committed, ApiError> {
    Ok(uow.commit(move |position| Outcome::new(200, with_position(body.clone(), position))).await?)
}

/// Commits and answers 201 with `body` plus the position, and the created resource's `Location`.
pub async fn commit_created(uow: UnitOfWork, body: Value, location: String) -> Result<Committed, ApiError> {
    let created = move |position| Outcome {
        location: Some(location.clone()),
        ..Outcome::new(201, with_position(body.clone(), position))
    };
    Ok(uow.commit(created).await?)
}

/// Commits and answers 202 (long-running work started) with `body`, the position, and the
/// `Location` where its status shows.
pub async fn commit_accepted(uow: UnitOfWork, body: Value, location: String) -> Result<Committed, ApiError> {
    let accepted = move |position| Outcome {
        location: Some(location.clone()),
        ..Outcome::new(202, with_position(body.clone(), position))
    };
    Ok(uow.commit(accepted).await?)
}

fn with_position(mut body: Value, position: Option<i64>) -> Value {
    body["position"] = serde_json::json!(position);
    body
}

/// The HTTP response of an outcome; a replayed one says so in `Idempotent-Replayed`.
pub fn respond(outcome: &Outcome, replayed: bool) -> Response {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(outcome.body.clone())).into_response();
    let headers = response.headers_mut();
    if status.is_client_error() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    }
    if let Some(location) = outcome.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if let Some(position) = outcome.position {
        headers.insert(crate::read::LEDGER_POSITION_HEADER, HeaderValue::from(position));
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
