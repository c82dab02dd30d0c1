//! Authentication: Argon2id password hashes, HS256 JWTs, the `Caller` extractor and the
//! failed-login limit.

use std::collections::BTreeSet;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use domain::user::Role;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::security::{self, SecurityEvent};
use crate::state::AppState;

/// Shortest and longest passwords accepted (the longest bounds Argon2's work per request).
pub const PASSWORD_LEN_MIN: usize = 10;
pub const PASSWORD_LEN_MAX: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub roles: Vec<String>,
    pub iat: i64,
    pub exp: i64,
}

/// HS256 keys from the configured secret.
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_secs: i64,
}

impl Jwt {
    pub fn new(secret: &[u8], ttl_secs: i64) -> Jwt {
        // Only HS256 is accepted, so `alg: none` and algorithm confusion fail validation.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        validation.leeway = 5;
        Jwt {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn issue(&self, user_id: Uuid, roles: &BTreeSet<Role>) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            roles: roles.iter().map(|r| r.name().to_string()).collect(),
            iat: now,
            exp: now + self.ttl_secs,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|error| {
            tracing::error!(%error, "cannot sign a token");
            ApiError::internal()
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub roles: BTreeSet<Role>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_staff(&self) -> bool {
        self.has(Role::Admin) || self.has(Role::Auditor)
    }

    /// Admits admins only; anyone else gets 403 and an entry in the security log.
    pub async fn require_admin(&self, state: &AppState, parts: &RequestInfo) -> Result<(), ApiError> {
        self.require_any(state, parts, &[Role::Admin]).await
    }

    /// Admits callers holding one of `roles`.
    pub async fn require_any(&self, state: &AppState, info: &RequestInfo, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|role| self.has(*role)) {
            return Ok(());
        }
        let event = SecurityEvent::new("forbidden", info)
            .actor(self.user_id.to_string())
            .code("forbidden")
            .details(serde_json::json!({"needs": roles.iter().map(|r| r.name()).collect::<Vec<_>>()}));
        security::record(state, event).await;
        Err(ApiError::forbidden())
    }
}

/// What the security log needs to know about a request.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub method: String,
    pub path: String,
    pub request_id: Option<Uuid>,
    pub ip: Option<String>,
}

impl RequestInfo {
    pub fn from_parts(parts: &Parts) -> RequestInfo {
        RequestInfo {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            request_id: crate::telemetry::request_id(&parts.headers),
            ip: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip().to_string()),
        }
    }
}

impl FromRequestParts<AppState> for RequestInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(RequestInfo::from_parts(parts))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let info = RequestInfo::from_parts(parts);
        let header_value = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header_value.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        else {
            security::record(state, SecurityEvent::new("unauthenticated", &info).code("unauthenticated")).await;
            return Err(ApiError::unauthorized("unauthenticated", "send a bearer token from POST /api/v1/auth/token"));
        };
        let claims = match state.jwt.verify(token.trim()) {
            Ok(claims) => claims,
            Err(error) => {
                let event = SecurityEvent::new("invalid_token", &info)
                    .code("invalid_token")
                    .details(serde_json::json!({"reason": format!("{:?}", error.kind())}));
                security::record(state, event).await;
                return Err(ApiError::unauthorized("invalid_token", "the token is invalid or expired"));
            }
        };
        let roles = claims.roles.iter().filter_map(|name| name.parse().ok()).collect();
        Ok(Caller { user_id: claims.sub, roles })
    }
}

/// Argon2 hashes computed at once, one per core: each takes 19 MiB, and without a bound a
/// burst of registrations or logins ran one per blocking thread (up to 512), leaving the
/// server at 3 GiB resident after 200 registrations. Beyond the cores they only queue.
static PASSWORD_WORK: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |cores| cores.get()))
});

/// Hashes a password with Argon2id off the async runtime (35-55 ms of CPU here).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let _turn = PASSWORD_WORK.acquire().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || {
        Argon2::default().hash_password(password.as_bytes()).map(|hash| hash.to_string())
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|error| {
        tracing::error!(%error, "cannot hash a password");
        ApiError::internal()
    })
}

/// Checks a password against a stored hash off the async runtime. Without a stored hash
/// (unknown user) it still does the work, so timing does not tell which usernames exist.
pub async fn verify_password(password: String, stored: Option<String>) -> bool {
    const DECOY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| DECOY.to_string());
    let Ok(_turn) = PASSWORD_WORK.acquire().await else { return false };
    let verified = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false);
    known && verified
}
