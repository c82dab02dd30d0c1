//! User: registration, marketplace profile and roles. Email, display name and the password
//! hash never enter events: they live in tables that can be erased without breaking a chain.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
    Auditor,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = UserError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            _ => Err(UserError::UnknownRole),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Register {
        user_id: Uuid,
        username: String,
        roles: BTreeSet<Role>,
    },
    UpdateProfile {
        is_seller: bool,
        is_buyer: bool,
    },
    GrantRole {
        role: Role,
    },
    RevokeRole {
        role: Role,
    },
    /// Records that the user's personal data (email, display name) was erased.
    ErasePersonalData,
    /// Links an Ethereum address the user proved to hold (a signed challenge); withdrawals
    /// may go to it from `usable_from` on. Uniqueness across users is a claim.
    LinkChainAddress {
        address: String,
        usable_from: chrono::DateTime<chrono::Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum UserEvent {
    UserRegistered { user_id: Uuid, username: String, roles: BTreeSet<Role> },
    ProfileUpdated { is_seller: bool, is_buyer: bool },
    RoleGranted { role: Role },
    RoleRevoked { role: Role },
    PersonalDataErased {},
    ChainAddressLinked { address: String, usable_from: chrono::DateTime<chrono::Utc> },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        let name = match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::ProfileUpdated { .. } => "ProfileUpdated",
            UserEvent::RoleGranted { .. } => "RoleGranted",
            UserEvent::RoleRevoked { .. } => "RoleRevoked",
            UserEvent::PersonalDataErased { .. } => "PersonalDataErased",
            UserEvent::ChainAddressLinked { .. } => "ChainAddressLinked",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("user already registered")]
    AlreadyRegistered,
    #[error("unknown role")]
    UnknownRole,
    #[error("the user already has this role")]
    RoleAlreadyGranted,
    #[error("the user does not have this role")]
    RoleNotGranted,
    #[error("personal data already erased")]
    AlreadyErased,
}

impl UserError {
    pub fn code(&self) -> &'static str {
        match self {
            UserError::NotFound => "user_not_found",
            UserError::AlreadyRegistered => "user_already_registered",
            UserError::UnknownRole => "unknown_role",
            UserError::RoleAlreadyGranted => "role_already_granted",
            UserError::RoleNotGranted => "role_not_granted",
            UserError::AlreadyErased => "personal_data_already_erased",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    pub user_id: Option<Uuid>,
    pub username: String,
    pub roles: BTreeSet<Role>,
    pub is_seller: bool,
    pub is_buyer: bool,
    pub erased: bool,
}

impl User {
    fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        if let UserCommand::Register { user_id, username, roles } = command {
            if self.user_id.is_some() {
                return Err(UserError::AlreadyRegistered);
            }
            return Ok(vec![UserEvent::UserRegistered { user_id, username, roles }]);
        }
        if self.user_id.is_none() {
            return Err(UserError::NotFound);
        }
        match command {
            UserCommand::Register { .. } => unreachable!("handled above"),
            UserCommand::UpdateProfile { is_seller, is_buyer } => {
                Ok(vec![UserEvent::ProfileUpdated { is_seller, is_buyer }])
            }
            UserCommand::GrantRole { role } if self.roles.contains(&role) => Err(UserError::RoleAlreadyGranted),
            UserCommand::GrantRole { role } => Ok(vec![UserEvent::RoleGranted { role }]),
            UserCommand::RevokeRole { role } if !self.roles.contains(&role) => Err(UserError::RoleNotGranted),
            UserCommand::RevokeRole { role } => Ok(vec![UserEvent::RoleRevoked { role }]),
            UserCommand::ErasePersonalData if self.erased => Err(UserError::AlreadyErased),
            UserCommand::ErasePersonalData => Ok(vec![UserEvent::PersonalDataErased {}]),
            UserCommand::LinkChainAddress { address, usable_from } => {
                Ok(vec![UserEvent::ChainAddressLinked { address, usable_from }])
            }
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered { user_id, username, roles } => {
                self.user_id = Some(user_id);
                self.username = username;
                self.roles = roles;
            }
            UserEvent::ProfileUpdated { is_seller, is_buyer } => {
                self.is_seller = is_seller;
                self.is_buyer = is_buyer;
            }
            UserEvent::RoleGranted { role } => {
                self.roles.insert(role);
            }
            UserEvent::RoleRevoked { role } => {
                self.roles.remove(&role);
            }
            UserEvent::PersonalDataErased {} => self.erased = true,
            // Links are read from the read model and the claims table; the user's state stays
            // as it was (its snapshots unchanged).
            UserEvent::ChainAddressLinked { .. } => {}
        }
    }
}
