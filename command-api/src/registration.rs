//! Registering a user: the user, its four wallets, the username and email claims, the
//! password hash and the personal data, all in one transaction.

use std::collections::BTreeSet;

use domain::user::{Role, User, UserCommand};
use domain::wallet::{wallet_id, Wallet, WalletCommand};
use domain::Currency;
use event_store::{Committed, UnitOfWork};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::postgres::PgArguments;
use sqlx::Arguments;
use uuid::Uuid;

use crate::error::{user_rejection, wallet_rejection, ApiError};
use crate::views::{UserView, WalletView};

/// Longest username, email and display name accepted.
pub const USERNAME_LEN_MAX: usize = 32;
pub const EMAIL_LEN_MAX: usize = 254;
pub const DISPLAY_NAME_LEN_MAX: usize = 100;

#[derive(Debug, Clone)]
pub struct NewUser {
    pub user_id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub roles: BTreeSet<Role>,
}

/// Checks a username: 3-32 letters, digits, `_`, `.` or `-`.
pub fn validate_username(username: &str) -> Result<(), ApiError> {
    let valid = (3..=USERNAME_LEN_MAX).contains(&username.len())
        && username.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    match valid {
        true => Ok(()),
        false => {
            Err(ApiError::invalid_field("username", "invalid_username", "3 to 32 letters, digits, '_', '.' or '-'"))
        }
    }
}

/// Checks an email's shape (delivery is the only real proof): one `@`, a dotted domain, no
/// spaces, at most 254 characters.
pub fn validate_email(email: &str) -> Result<(), ApiError> {
    let shape_ok = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    });
    let valid = shape_ok && email.len() <= EMAIL_LEN_MAX && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    match valid {
        true => Ok(()),
        false => Err(ApiError::invalid_field("email", "invalid_email", "not an email address")),
    }
}

pub fn validate_password(password: &str) -> Result<(), ApiError> {
    use crate::auth::{PASSWORD_LEN_MAX, PASSWORD_LEN_MIN};
    let length = password.chars().count();
    match (PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&length) {
        true => Ok(()),
        false => Err(ApiError::invalid_field(
            "password",
            "invalid_password",
            format!("{PASSWORD_LEN_MIN} to {PASSWORD_LEN_MAX} characters"),
        )),
    }
}

pub fn validate_display_name(display_name: Option<&str>) -> Result<(), ApiError> {
    let Some(name) = display_name else { return Ok(()) };
    let valid =
        !name.trim().is_empty() && name.chars().count() <= DISPLAY_NAME_LEN_MAX && !name.chars().any(char::is_control);
    match valid {
        true => Ok(()),
        false => Err(ApiError::invalid_field("display_name", "invalid_display_name", "1 to 100 printable characters")),
    }
}

/// Builds statement arguments; binding plain values cannot fail short of a bug.
pub fn arguments(
    bind: impl FnOnce(&mut PgArguments) -> Result<(), sqlx::error::BoxDynError>,
) -> Result<PgArguments, ApiError> {
    let mut arguments = PgArguments::default();
    bind(&mut arguments).map_err(|error| {
        tracing::error!(%error, "cannot bind statement arguments");
        ApiError::internal()
    })?;
    Ok(arguments)
}

/// Registers `user` inside `uow` and commits; answers 201 with the user and its wallets.
pub async fn register(mut uow: UnitOfWork, user: NewUser) -> Result<Committed, ApiError> {
    let id = user.user_id.to_string();
    let register =
        UserCommand::Register { user_id: user.user_id, username: user.username.clone(), roles: user.roles.clone() };
    uow.execute::<User>(&id, register, &()).await?.map_err(user_rejection)?;
    let mut wallets = Vec::new();
    for currency in Currency::ALL {
        let wallet = wallet_id(user.user_id, currency);
        let open = WalletCommand::OpenWallet { wallet_id: wallet, owner_id: user.user_id, currency };
        uow.execute::<Wallet>(&wallet.to_string(), open, &()).await?.map_err(wallet_rejection)?;
        wallets.push(WalletView::new(wallet, user.user_id, currency, Decimal::ZERO, Decimal::ZERO, false));
    }
    uow.claim(crate::claims::USERNAME, &user.username.to_lowercase(), &id);
    uow.claim(crate::claims::EMAIL, &user.email.to_lowercase(), &id);
    let (user_id, username, hash) = (user.user_id, user.username.to_lowercase(), user.password_hash.clone());
    uow.stage_statement(
        "INSERT INTO credentials (user_id, username_lower, password_hash) VALUES ($1, $2, $3)",
        arguments(|a| {
            a.add(user_id)?;
            a.add(username)?;
            a.add(hash)
        })?,
    );
    let (email, display_name) = (user.email.clone(), user.display_name.clone());
    uow.stage_statement(
        "INSERT INTO personal_data (user_id, email, display_name) VALUES ($1, $2, $3)",
        arguments(|a| {
            a.add(user_id)?;
            a.add(email)?;
            a.add(display_name)
        })?,
    );
    let view = UserView {
        id: user.user_id,
        username: user.username,
        email: Some(user.email),
        display_name: user.display_name,
        roles: crate::views::role_names(&user.roles),
        is_seller: false,
        is_buyer: false,
        registered_at: Some(uow.context().at),
    };
    let location = format!("/api/v1/users/{}", user.user_id);
    crate::commands::commit_created(uow, json!({"user": view, "wallets": wallets}), location).await
}
