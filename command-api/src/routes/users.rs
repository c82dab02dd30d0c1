//! `/api/v1/users`: registration, profiles, roles, personal data.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::response::Response;
use domain::user::{Role, User, UserCommand};
use serde::Deserialize;
use serde_json::json;
use sqlx::{Arguments, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{hash_password, Caller, RequestInfo};
use crate::commands::{commit_ok, run, CommandInput};
use crate::error::{user_rejection, ApiError};
use crate::extract::{ApiJson, ApiPath, IdempotencyKey};
use crate::read::{position_of, with_position, Consistency};
use crate::registration::{self, arguments, NewUser};
use crate::security::{self, SecurityEvent};
use crate::state::AppState;
use crate::views::{UserView, WalletView};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "alice@example.org")]
    pub email: String,
    #[schema(example = "correct horse battery staple")]
    pub password: String,
    pub display_name: Option<String>,
}

/// Register a user; opens their EUR, USD, ETH and CARBON wallets.
#[utoipa::path(post, path = "/api/v1/users", request_body = RegisterRequest, tag = "users",
    responses((status = 201, description = "Registered: the user and its four wallets"),
              (status = 409, description = "username_taken or email_taken", body = crate::error::Problem),
              (status = 422, description = "validation_failed", body = crate::error::Problem)))]
pub async fn users_create(
    State(state): State<AppState>,
    info: RequestInfo,
    body: ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    registration::validate_username(&request.username)?;
    registration::validate_email(&request.email)?;
    registration::validate_password(&request.password)?;
    registration::validate_display_name(request.display_name.as_deref())?;
    let password_hash = hash_password(request.password.clone()).await?;
    let user = NewUser {
        user_id: domain::new_id(),
        username: request.username,
        email: request.email,
        display_name: request.display_name,
        password_hash,
        roles: BTreeSet::from([Role::User]),
    };
    let input =
        CommandInput { actor: user.user_id.to_string(), idempotency_key: None, body_hash: body.body_hash, info };
    run(&state, input, |uow| registration::register(uow, user.clone())).await
}

/// The caller's own user.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    params(("min_position" = Option<i64>, Query, description = "Wait (bounded) until the read model reached this position")),
    responses((status = 200, body = UserView)))]
pub async fn users_me(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
) -> Result<Response, ApiError> {
    let position = position_of(&state, &["users"], consistency.0).await?;
    let user = load_user_view(&state, caller.user_id, true).await?;
    Ok(with_position(position, axum::Json(user)))
}

/// A user: yourself, or anyone for admins and auditors (others answer 404).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::Problem)))]
pub async fn users_get(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    ensure_self_or_staff(&caller, id)?;
    let position = position_of(&state, &["users"], consistency.0).await?;
    let user = load_user_view(&state, id, true).await?;
    Ok(with_position(position, axum::Json(user)))
}

/// The user's wallets with balance, held and available.
#[utoipa::path(get, path = "/api/v1/users/{id}/wallets", tag = "wallets", security(("bearer" = [])),
    responses((status = 200, body = Vec<WalletView>)))]
pub async fn users_wallets(
    State(state): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    ensure_self_or_staff(&caller, id)?;
    let position = position_of(&state, &["wallets"], consistency.0).await?;
    let rows = sqlx::query(
        "SELECT wallet_id, owner_id, currency, balance, held, frozen FROM rm_wallets WHERE owner_id = $1 \
         ORDER BY array_position(ARRAY['EUR','USD','ETH','CARBON'], currency)",
    )
    .bind(id)
    .fetch_all(state.store.pool())
    .await?;
    let wallets: Vec<WalletView> = rows.iter().map(WalletView::from_row).collect();
    Ok(with_position(position, axum::Json(wallets)))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    pub display_name: Option<String>,
    pub is_seller: bool,
    pub is_buyer: bool,
}

/// Update a profile (yourself, or any user as admin).
#[utoipa::path(put, path = "/api/v1/users/{id}/profile", request_body = ProfileRequest, tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "Updated"), (status = 404, body = crate::error::Problem)))]
pub async fn users_update_profile(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiJson<ProfileRequest>,
) -> Result<Response, ApiError> {
    if caller.user_id != id && !caller.has(Role::Admin) {
        return Err(user_not_found());
    }
    let request = body.value;
    registration::validate_display_name(request.display_name.as_deref())?;
    let input =
        CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash: body.body_hash, info };
    run(&state, input, |mut uow| {
        let request = request.clone();
        async move {
            let command = UserCommand::UpdateProfile { is_seller: request.is_seller, is_buyer: request.is_buyer };
            uow.execute::<User>(&id.to_string(), command, &()).await?.map_err(user_rejection)?;
            if let Some(name) = request.display_name.clone() {
                uow.stage_statement(
                    "UPDATE personal_data SET display_name = $2 WHERE user_id = $1 AND erased_at IS NULL",
                    arguments(|a| {
                        a.add(id)?;
                        a.add(name)
                    })?,
                );
            }
            let body = json!({"id": id, "display_name": request.display_name, "is_seller": request.is_seller, "is_buyer": request.is_buyer});
            commit_ok(uow, body).await
        }
    })
    .await
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    #[schema(example = "auditor")]
    pub role: String,
}

/// Grant a role (admin).
#[utoipa::path(post, path = "/api/v1/users/{id}/roles", request_body = RoleRequest, tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "Granted"), (status = 403, body = crate::error::Problem)))]
pub async fn users_grant_role(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
    body: ApiJson<RoleRequest>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let role: Role = body
        .value
        .role
        .parse()
        .map_err(|_| ApiError::invalid_field("role", "unknown_role", "user, admin or auditor"))?;
    change_role(state, caller, info, key, id, body.body_hash, UserCommand::GrantRole { role }).await
}

/// Revoke a role (admin).
#[utoipa::path(delete, path = "/api/v1/users/{id}/roles/{role}", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "Revoked"), (status = 403, body = crate::error::Problem)))]
pub async fn users_revoke_role(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath((id, role)): ApiPath<(Uuid, String)>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let role: Role =
        role.parse().map_err(|_| ApiError::invalid_field("role", "unknown_role", "user, admin or auditor"))?;
    change_role(state, caller, info, key, id, Vec::new(), UserCommand::RevokeRole { role }).await
}

async fn change_role(
    state: AppState,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    id: Uuid,
    body_hash: Vec<u8>,
    command: UserCommand,
) -> Result<Response, ApiError> {
    let input =
        CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash, info: info.clone() };
    let response = run(&state, input, |mut uow| {
        let command = command.clone();
        async move {
            let executed = uow.execute::<User>(&id.to_string(), command, &()).await?.map_err(user_rejection)?;
            let roles = crate::views::role_names(&executed.aggregate.roles);
            let body = json!({"id": id, "roles": roles});
            commit_ok(uow, body).await
        }
    })
    .await?;
    let event = SecurityEvent::new("role_changed", &info)
        .actor(caller.user_id.to_string())
        .subject(id.to_string())
        .details(json!({"change": format!("{command:?}")}));
    security::record(&state, event).await;
    Ok(response)
}

/// Erase a user's personal data (admin): email and display name are removed; events keep
/// only ids, so every chain still verifies.
#[utoipa::path(delete, path = "/api/v1/users/{id}/personal-data", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "Erased"), (status = 403, body = crate::error::Problem)))]
pub async fn users_erase_personal_data(
    State(state): State<AppState>,
    caller: Caller,
    info: RequestInfo,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    caller.require_admin(&state, &info).await?;
    let input = CommandInput { actor: caller.user_id.to_string(), idempotency_key: key.0, body_hash: Vec::new(), info };
    run(&state, input, |mut uow| async move {
        uow.execute::<User>(&id.to_string(), UserCommand::ErasePersonalData, &()).await?.map_err(user_rejection)?;
        uow.stage_statement(
            "UPDATE personal_data SET email = NULL, display_name = NULL, erased_at = now() WHERE user_id = $1",
            arguments(|a| a.add(id))?,
        );
        // The email's uniqueness claim holds the address too; an erased account no longer
        // needs it kept unique.
        uow.stage_statement(
            "DELETE FROM claims WHERE kind = $1 AND owner = $2",
            arguments(|a| {
                a.add(crate::claims::EMAIL)?;
                a.add(id.to_string())
            })?,
        );
        let body = json!({"id": id, "erased": true});
        commit_ok(uow, body).await
    })
    .await
}

fn ensure_self_or_staff(caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    match caller.user_id == id || caller.is_staff() {
        true => Ok(()),
        false => Err(user_not_found()),
    }
}

fn user_not_found() -> ApiError {
    ApiError::not_found("user_not_found", "no such user")
}

async fn load_user_view(state: &AppState, id: Uuid, with_personal: bool) -> Result<UserView, ApiError> {
    let row = sqlx::query(
        "SELECT u.user_id, u.username, u.roles, u.is_seller, u.is_buyer, u.registered_at, p.email, p.display_name \
         FROM rm_users u LEFT JOIN personal_data p ON p.user_id = u.user_id WHERE u.user_id = $1",
    )
    .bind(id)
    .fetch_optional(state.store.pool())
    .await?
    .ok_or_else(user_not_found)?;
    Ok(UserView {
        id: row.get("user_id"),
        username: row.get("username"),
        email: if with_personal { row.get("email") } else { None },
        display_name: row.get("display_name"),
        roles: row.get("roles"),
        is_seller: row.get("is_seller"),
        is_buyer: row.get("is_buyer"),
        registered_at: row.get("registered_at"),
    })
}
