//! `POST /api/v1/auth/token`: the OAuth2 password flow (form) or the same fields as JSON.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::user::User;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{verify_password, RequestInfo, PASSWORD_LEN_MAX};
use crate::error::ApiError;
use crate::extract::{is_form, ApiJson};
use crate::security::{self, SecurityEvent};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub username: String,
    pub password: String,
    /// Accepted for OAuth2 clients; only `password` is supported.
    pub grant_type: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    pub expires_in: i64,
    pub user_id: Uuid,
}

/// Exchange a username and password for a JWT.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse),
              (status = 401, description = "invalid_credentials", body = crate::error::Problem),
              (status = 429, description = "too_many_login_attempts", body = crate::error::Problem)))]
pub async fn auth_token(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let info = RequestInfo::from_parts(&parts);
    let credentials: TokenRequest = if is_form(&parts) {
        let bytes = Bytes::from_request(Request::from_parts(parts, body), &state)
            .await
            .map_err(|_| ApiError::bad_request("malformed_body", "cannot read the body"))?;
        serde_urlencoded::from_bytes(&bytes)
            .map_err(|error| ApiError::unprocessable("validation_failed", format!("form fields: {error}")))?
    } else {
        ApiJson::<TokenRequest>::from_request(Request::from_parts(parts, body), &state).await?.value
    };
    if credentials.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(ApiError::bad_request("unsupported_grant_type", "only grant_type=password is supported"));
    }
    let username = credentials.username.to_lowercase();
    check_rate_limit(&state, &username, &info).await?;
    let stored: Option<(Uuid, String)> =
        sqlx::query_as("SELECT user_id, password_hash FROM credentials WHERE username_lower = $1")
            .bind(&username)
            .fetch_optional(state.store.pool())
            .await?;
    let password = credentials.password;
    let valid = password.chars().count() <= PASSWORD_LEN_MAX
        && verify_password(password, stored.as_ref().map(|(_, hash)| hash.clone())).await;
    let Some((user_id, _)) = stored.filter(|_| valid) else {
        record_failure(&state, &username, &info).await;
        return Err(ApiError::unauthorized("invalid_credentials", "wrong username or password"));
    };
    sqlx::query("DELETE FROM login_failures WHERE username_lower = $1")
        .bind(&username)
        .execute(state.store.pool())
        .await?;
    // Roles come from the event store itself, not a read model: a token right after a role
    // change already carries it.
    let user = state.store.load_current::<User>(&user_id.to_string()).await?.aggregate;
    let access_token = state.jwt.issue(user_id, &user.roles)?;
    let event = SecurityEvent::new("login_succeeded", &info).actor(user_id.to_string()).subject(username);
    security::record(&state, event).await;
    let response = TokenResponse { access_token, token_type: "bearer", expires_in: state.jwt.ttl_secs, user_id };
    Ok((StatusCode::OK, [("cache-control", "no-store")], axum::Json(response)).into_response())
}

/// Refuses logins for a username with too many recent failures (shared by every instance).
async fn check_rate_limit(state: &AppState, username: &str, info: &RequestInfo) -> Result<(), ApiError> {
    let window = state.config.login_failure_window;
    let failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM login_failures WHERE username_lower = $1 AND failed_at > now() - make_interval(secs => $2)",
    )
    .bind(username)
    .bind(window.as_secs_f64())
    .fetch_one(state.store.pool())
    .await?;
    if failures < state.config.login_failures_max {
        return Ok(());
    }
    let event = SecurityEvent::new("login_rate_limited", info).subject(username).code("too_many_login_attempts");
    security::record(state, event).await;
    Err(ApiError {
        retry_after: Some(window.as_secs()),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_login_attempts",
            "too many failed logins; try again later",
        )
    })
}

async fn record_failure(state: &AppState, username: &str, info: &RequestInfo) {
    let result = sqlx::query("INSERT INTO login_failures (username_lower) VALUES ($1)")
        .bind(username)
        .execute(state.store.pool())
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "login failure not recorded");
    }
    let event =
        SecurityEvent::new("login_failed", info).subject(username).code("invalid_credentials").details(json!({}));
    security::record(state, event).await;
}
