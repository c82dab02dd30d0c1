//! One error type for the API: every refusal is `application/problem+json` (RFC 9457) with a
//! stable `code` named after the rule. Internals are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use event_store::StoreError;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
    /// Field-level problems of a `validation_failed`.
    pub errors: Vec<FieldError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

/// The problem document, as the OpenAPI spec describes it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), retry_after: None, errors: Vec::new() }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this operation needs a role you do not have")
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, detail) }
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an unexpected error occurred; it was logged",
        )
    }

    /// A `validation_failed` naming one field.
    pub fn invalid_field(field: &str, code: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            errors: vec![FieldError { field: field.to_string(), code: code.to_string(), message: message.clone() }],
            ..ApiError::unprocessable("validation_failed", format!("{field}: {message}"))
        }
    }

    /// A field that breaks a named rule (`amount_precision_exceeded`, ...): the rule is the
    /// top-level code, so clients match on one field whatever was wrong.
    pub fn field_rule(field: &str, code: &'static str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            errors: vec![FieldError { field: field.to_string(), code: code.to_string(), message: message.clone() }],
            ..ApiError::unprocessable(code, format!("{field}: {message}"))
        }
    }

    /// A rejection the client caused (4xx): stored as the outcome of an idempotent command.
    pub fn is_rejection(&self) -> bool {
        self.status.is_client_error()
    }

    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("urn:ecoledger:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// The code of an error response, for metrics and the security log.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Conflict => ApiError::unavailable(
                "conflict_retry_exhausted",
                "the resource is busy with concurrent updates; retry shortly",
                1,
            ),
            StoreError::IdempotencyKeyReused => {
                ApiError::conflict("idempotency_key_reused", "this Idempotency-Key was used with a different request")
            }
            StoreError::IdempotencyKeyInProgress => ApiError {
                retry_after: Some(1),
                ..ApiError::conflict(
                    "idempotency_key_in_progress",
                    "a request with this Idempotency-Key is still running",
                )
            },
            StoreError::ClaimTaken { kind } => claim_taken(&kind),
            StoreError::Database(error) => database_error(error),
            StoreError::Nats(_) | StoreError::Corrupt(_) => {
                tracing::error!(%error, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        database_error(error)
    }
}

/// Postgres unreachable or saturated answers 503 at once; anything else is a bug, logged.
fn database_error(error: sqlx::Error) -> ApiError {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            tracing::warn!(%error, "database unavailable");
            ApiError::unavailable("database_unavailable", "the ledger's database is unavailable; retry shortly", 2)
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57") || c.starts_with("08")) => {
            tracing::warn!(error = %db, "database unavailable");
            ApiError::unavailable("database_unavailable", "the ledger's database is unavailable; retry shortly", 2)
        }
        other => {
            tracing::error!(error = %other, "database error");
            ApiError::internal()
        }
    }
}

/// Claims are named after what they make unique; the error after the rule.
fn claim_taken(kind: &str) -> ApiError {
    match kind {
        crate::claims::USERNAME => ApiError::conflict("username_taken", "this username is taken"),
        crate::claims::EMAIL => ApiError::conflict("email_taken", "this email is already registered"),
        crate::claims::DEPOSIT_REFERENCE | crate::claims::WITHDRAWAL_REFERENCE => {
            ApiError::conflict("duplicate_reference", "a transaction with this reference exists")
        }
        crate::claims::REVERSAL => ApiError::conflict("already_reversed", "this transaction was already reversed"),
        crate::claims::CHAIN_ADDRESS => {
            ApiError::conflict("address_already_linked", "this address is already linked to a user")
        }
        domain::price::OBSERVATION_CLAIM_KIND => {
            let exists = domain::price::PriceError::Exists;
            ApiError::conflict(exists.code(), exists.to_string())
        }
        other => {
            tracing::error!(kind = other, "unmapped claim");
            ApiError::conflict("already_exists", "this resource already exists")
        }
    }
}

impl From<domain::wallet::WalletError> for ApiError {
    fn from(error: domain::wallet::WalletError) -> ApiError {
        wallet_rejection(error)
    }
}

impl From<domain::transfer::TransferError> for ApiError {
    fn from(error: domain::transfer::TransferError) -> ApiError {
        let status = match error {
            domain::transfer::TransferError::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<domain::listing::ListingError> for ApiError {
    fn from(error: domain::listing::ListingError) -> ApiError {
        use domain::listing::ListingError::*;
        let status = match error {
            NotFound | ReservationNotFound => StatusCode::NOT_FOUND,
            AlreadyExists | ReservationExists => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<domain::purchase::PurchaseError> for ApiError {
    fn from(error: domain::purchase::PurchaseError) -> ApiError {
        let status = match error {
            domain::purchase::PurchaseError::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<domain::chain::ChainMovementError> for ApiError {
    fn from(error: domain::chain::ChainMovementError) -> ApiError {
        use domain::chain::ChainMovementError::*;
        let status = match error {
            SuspenseNotFound => StatusCode::NOT_FOUND,
            AlreadyRecorded | SuspenseAlreadyResolved => StatusCode::CONFLICT,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<domain::user::UserError> for ApiError {
    fn from(error: domain::user::UserError) -> ApiError {
        user_rejection(error)
    }
}

/// Maps a wallet's rejection to its HTTP status; the code is the domain's.
pub fn wallet_rejection(error: domain::wallet::WalletError) -> ApiError {
    use domain::wallet::WalletError::*;
    let status = match error {
        NotFound | HoldNotFound => StatusCode::NOT_FOUND,
        AlreadyOpen | AlreadyFrozen | NotFrozen | HoldExists | WithdrawalExists | CaptureExistsWithDifferentAmount => {
            StatusCode::CONFLICT
        }
        WithdrawalNotFound => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, error.code(), error.to_string())
}

pub fn user_rejection(error: domain::user::UserError) -> ApiError {
    use domain::user::UserError::*;
    let status = match error {
        NotFound => StatusCode::NOT_FOUND,
        UnknownRole => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::CONFLICT,
    };
    ApiError::new(status, error.code(), error.to_string())
}
