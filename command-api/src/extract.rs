//! Extractors that answer bad input in the API's own error format.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Largest request body accepted, in bytes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// A JSON body: malformed JSON is 400 `malformed_json`, a body that does not fit the schema
/// (unknown fields included) is 422 `validation_failed`. Also keeps a hash of the body for
/// idempotency checks.
pub struct ApiJson<T> {
    pub value: T,
    pub body_hash: Vec<u8>,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = axum::Json::<Value>::from_request(request, state).await.map_err(json_rejection)?.0;
        // Every body is an object; serde would otherwise read a struct from a JSON array.
        if !raw.is_object() {
            return Err(ApiError::unprocessable("validation_failed", "the body must be a JSON object"));
        }
        let body_hash = hash_json(&raw);
        let value = serde_json::from_value(raw).map_err(|error| {
            ApiError::unprocessable("validation_failed", format!("the body does not fit the schema: {error}"))
        })?;
        Ok(ApiJson { value, body_hash })
    }
}

/// The hash of a JSON value regardless of key order or whitespace.
pub fn hash_json(value: &Value) -> Vec<u8> {
    let canonical = event_store::canonical::to_canonical_string(value).unwrap_or_else(|_| value.to_string());
    Sha256::digest(canonical.as_bytes()).to_vec()
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonRejection::JsonSyntaxError(error) => ApiError::bad_request("malformed_json", error.body_text()),
        JsonRejection::JsonDataError(error) => ApiError::unprocessable("validation_failed", error.body_text()),
        JsonRejection::BytesRejection(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("bodies are limited to {BODY_BYTES_MAX} bytes"),
        ),
        other => ApiError::bad_request("malformed_body", other.body_text()),
    }
}

/// Query parameters, refused with `validation_failed` when they do not parse.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|query| ApiQuery(query.0))
            .map_err(|rejection: QueryRejection| ApiError::unprocessable("validation_failed", rejection.body_text()))
    }
}

/// The optional `Idempotency-Key` header.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else { return Ok(IdempotencyKey(None)) };
        let key = value.to_str().ok().filter(|key| {
            !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LEN_MAX && key.bytes().all(|b| b.is_ascii_graphic())
        });
        match key {
            Some(key) => Ok(IdempotencyKey(Some(key.to_string()))),
            None => Err(ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} visible ASCII characters"),
            )),
        }
    }
}

/// Whether the request's body is a form (the OAuth2 password flow) rather than JSON.
pub fn is_form(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// Path parameters: an id that does not parse answers 404 like an id that names nothing.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|path| ApiPath(path.0))
            .map_err(|_| ApiError::not_found("not_found", "no resource at this path"))
    }
}
