use async_trait::async_trait;
use domain::user::{Role, UserEvent};
use event_store::{RecordedEvent, StoreError};
use sqlx::PgConnection;

use crate::{occurred_at, stream_uuid, user_event, Projection};

/// `rm_users`: who is registered, their marketplace profile and roles.
pub struct Users;

#[async_trait]
impl Projection for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_users"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
        let Some(user_event) = user_event(event)? else { return Ok(()) };
        let user_id = stream_uuid(event)?;
        let at = occurred_at(event)?;
        let query = match user_event {
            // Linked addresses have their own read model (the chain's).
            UserEvent::ChainAddressLinked { .. } => return Ok(()),
            UserEvent::UserRegistered { username, roles, .. } => sqlx::query(
                "INSERT INTO rm_users (user_id, username, roles, registered_at, updated_at, position) \
                 VALUES ($1, $2, $3, $4, $4, $5)",
            )
            .bind(user_id)
            .bind(username)
            .bind(role_names(roles.iter().copied()))
            .bind(at)
            .bind(event.position),
            UserEvent::ProfileUpdated { is_seller, is_buyer } => sqlx::query(
                "UPDATE rm_users SET is_seller = $2, is_buyer = $3, updated_at = $4, position = $5 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(is_seller)
            .bind(is_buyer)
            .bind(at)
            .bind(event.position),
            UserEvent::RoleGranted { role } => sqlx::query(
                "UPDATE rm_users SET roles = (SELECT array_agg(DISTINCT r ORDER BY r) FROM unnest(roles || $2::text) r), \
                 updated_at = $3, position = $4 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(role.name())
            .bind(at)
            .bind(event.position),
            UserEvent::RoleRevoked { role } => sqlx::query(
                "UPDATE rm_users SET roles = array_remove(roles, $2::text), updated_at = $3, position = $4 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(role.name())
            .bind(at)
            .bind(event.position),
            UserEvent::PersonalDataErased {} => sqlx::query(
                "UPDATE rm_users SET erased = true, updated_at = $2, position = $3 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(at)
            .bind(event.position),
        };
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

fn role_names(roles: impl Iterator<Item = Role>) -> Vec<String> {
    let mut names: Vec<String> = roles.map(|role| role.name().to_string()).collect();
    names.sort();
    names
}
