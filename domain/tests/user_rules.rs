//! User rules as given / when / then scenarios, one table line per case.
//!
//! The table runner uses `inspect_result` rather than `then_expect_*` so that a failing line
//! names its case; single scenarios use the `then_expect_*` form directly.

use std::collections::BTreeSet;

use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use domain::user::{Role, User, UserCommand, UserError, UserEvent};
use uuid::Uuid;

use UserError::*;

type UserTest = TestFramework<User>;

const USER: Uuid = Uuid::from_u128(0x2000);
const OTHER: Uuid = Uuid::from_u128(0x2001);

fn roles(list: &[Role]) -> BTreeSet<Role> {
    list.iter().copied().collect()
}

fn register(user_id: Uuid) -> UserCommand {
    UserCommand::Register { user_id, username: "greta".into(), roles: roles(&[Role::User]) }
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered { user_id: USER, username: "greta".into(), roles: roles(&[Role::User]) }
}

fn update_profile(is_seller: bool, is_buyer: bool) -> UserCommand {
    UserCommand::UpdateProfile { is_seller, is_buyer }
}

fn profile_updated(is_seller: bool, is_buyer: bool) -> UserEvent {
    UserEvent::ProfileUpdated { is_seller, is_buyer }
}

fn grant(role: Role) -> UserCommand {
    UserCommand::GrantRole { role }
}

fn revoke(role: Role) -> UserCommand {
    UserCommand::RevokeRole { role }
}

fn granted(role: Role) -> UserEvent {
    UserEvent::RoleGranted { role }
}

fn revoked(role: Role) -> UserEvent {
    UserEvent::RoleRevoked { role }
}

fn erase() -> UserCommand {
    UserCommand::ErasePersonalData
}

fn erased() -> UserEvent {
    UserEvent::PersonalDataErased {}
}

/// A registered user followed by `more`.
fn after(more: Vec<UserEvent>) -> Vec<UserEvent> {
    let mut events = vec![registered()];
    events.extend(more);
    events
}

fn state(events: Vec<UserEvent>) -> User {
    let mut user = User::default();
    for event in events {
        user.apply(event);
    }
    user
}

type Case = (&'static str, Vec<UserEvent>, UserCommand, Result<Vec<UserEvent>, UserError>);

fn run_table(cases: Vec<Case>) {
    for (name, given, when, expected) in cases {
        let result = UserTest::with(()).given(given).when(when).inspect_result();
        assert_eq!(result, expected, "case: {name}");
    }
}

#[test]
fn registering_a_new_user_records_id_name_and_roles() {
    UserTest::with(()).given_no_previous_events().when(register(USER)).then_expect_events(vec![registered()]);
}

#[test]
fn registering_twice_is_rejected_even_under_another_id() {
    UserTest::with(()).given(vec![registered()]).when(register(USER)).then_expect_error(AlreadyRegistered);
    UserTest::with(()).given(vec![registered()]).when(register(OTHER)).then_expect_error(AlreadyRegistered);
}

#[test]
fn commands_before_registration_are_rejected_as_not_found() {
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("update profile",  vec![], update_profile(true, false), Err(NotFound)),
        ("grant role",      vec![], grant(Role::Admin),          Err(NotFound)),
        ("revoke role",     vec![], revoke(Role::User),          Err(NotFound)),
        ("erase",           vec![], erase(),                     Err(NotFound)),
    ];
    run_table(cases);
}

#[test]
fn user_rules() {
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("become a seller",              after(vec![]),                           update_profile(true, false),  Ok(vec![profile_updated(true, false)])),
        ("same profile again",           after(vec![profile_updated(true, true)]), update_profile(true, true),  Ok(vec![profile_updated(true, true)])),
        ("profile after erasure",        after(vec![erased()]),                   update_profile(false, true),  Ok(vec![profile_updated(false, true)])),
        ("grant a new role",             after(vec![]),                           grant(Role::Admin),           Ok(vec![granted(Role::Admin)])),
        ("grant a registered role",      after(vec![]),                           grant(Role::User),            Err(RoleAlreadyGranted)),
        ("grant a granted role",         after(vec![granted(Role::Auditor)]),     grant(Role::Auditor),         Err(RoleAlreadyGranted)),
        ("grant again after revoking",   after(vec![granted(Role::Admin), revoked(Role::Admin)]), grant(Role::Admin), Ok(vec![granted(Role::Admin)])),
        ("revoke a granted role",        after(vec![granted(Role::Admin)]),       revoke(Role::Admin),          Ok(vec![revoked(Role::Admin)])),
        ("revoke a registered role",     after(vec![]),                           revoke(Role::User),           Ok(vec![revoked(Role::User)])),
        ("revoke a role never held",     after(vec![]),                           revoke(Role::Auditor),        Err(RoleNotGranted)),
        ("revoke twice",                 after(vec![granted(Role::Admin), revoked(Role::Admin)]), revoke(Role::Admin), Err(RoleNotGranted)),
        ("erase",                        after(vec![]),                           erase(),                      Ok(vec![erased()])),
        ("erase twice",                  after(vec![erased()]),                   erase(),                      Err(AlreadyErased)),
    ];
    run_table(cases);
}

#[test]
fn state_follows_the_events() {
    let user = state(after(vec![
        profile_updated(true, true),
        granted(Role::Admin),
        granted(Role::Auditor),
        revoked(Role::User),
        erased(),
    ]));
    assert_eq!(user.user_id, Some(USER));
    assert_eq!(user.username, "greta");
    assert_eq!(user.roles, roles(&[Role::Admin, Role::Auditor]));
    assert!(user.is_seller && user.is_buyer && user.erased);
    let json = serde_json::to_string(&user).unwrap();
    assert_eq!(serde_json::from_str::<User>(&json).unwrap(), user);
}

#[test]
fn roles_parse_from_their_names_only() {
    for role in [Role::User, Role::Admin, Role::Auditor] {
        assert_eq!(role.name().parse::<Role>(), Ok(role));
        assert_eq!(role.to_string(), role.name());
    }
    for text in ["", "Admin", "root", " user"] {
        assert_eq!(text.parse::<Role>(), Err(UnknownRole), "{text:?}");
    }
}

#[test]
fn events_have_distinct_types_and_survive_a_json_round_trip() {
    let events = [registered(), profile_updated(true, false), granted(Role::Admin), revoked(Role::Admin), erased()];
    let mut types: Vec<String> = events.iter().map(DomainEvent::event_type).collect();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), events.len());
    for event in events {
        assert_eq!(event.event_version(), domain::EVENT_VERSION);
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<UserEvent>(&json).unwrap(), event, "{json}");
    }
}

#[test]
fn error_codes_are_distinct() {
    let errors = [NotFound, AlreadyRegistered, UnknownRole, RoleAlreadyGranted, RoleNotGranted, AlreadyErased];
    let mut codes: Vec<&str> = errors.iter().map(UserError::code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}
