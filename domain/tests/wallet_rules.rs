//! Wallet rules as given / when / then scenarios, one table line per case.
//!
//! Table runners use `inspect_result` rather than `then_expect_*` so that a failing line names
//! its case; single scenarios use the `then_expect_*` form directly.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use domain::accounts::{Account, Posting};
use domain::money::{Amount, Currency, AMOUNT_UNITS_MAX, BALANCE_UNITS_MAX};
use domain::wallet::{ReversalDirection, Wallet, WalletCommand, WalletError, WalletEvent};
use domain::SystemAccount;
use rust_decimal::Decimal;
use uuid::Uuid;

use ReversalDirection::{CreditWallet, DebitWallet};
use WalletError::*;

type WalletTest = TestFramework<Wallet>;

const WALLET: Uuid = Uuid::from_u128(0x1000);
const OWNER: Uuid = Uuid::from_u128(0x2000);
const TX1: Uuid = Uuid::from_u128(0x3001);
const TX2: Uuid = Uuid::from_u128(0x3002);
const W1: Uuid = Uuid::from_u128(0x4001);
const W2: Uuid = Uuid::from_u128(0x4002);
const R1: Uuid = Uuid::from_u128(0x5001);
const H1: Uuid = Uuid::from_u128(0x6001);
const H2: Uuid = Uuid::from_u128(0x6002);
const C1: Uuid = Uuid::from_u128(0x7001);
const C2: Uuid = Uuid::from_u128(0x7002);
const C3: Uuid = Uuid::from_u128(0x7003);

// ---- values -------------------------------------------------------------------------------

fn eur(text: &str) -> Amount {
    Amount::parse(text, Currency::Eur).expect("test amount")
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("test decimal")
}

/// A fixed instant plus `minutes`, so expiry cases read as small numbers.
fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

// ---- commands -----------------------------------------------------------------------------

fn open() -> WalletCommand {
    WalletCommand::OpenWallet { wallet_id: WALLET, owner_id: OWNER, currency: Currency::Eur }
}

fn deposit(transaction_id: Uuid, amount: &str) -> WalletCommand {
    deposit_in(transaction_id, amount, Currency::Eur)
}

fn deposit_in(transaction_id: Uuid, amount: &str, currency: Currency) -> WalletCommand {
    let amount = Amount::parse(amount, currency).expect("test amount");
    WalletCommand::Deposit { transaction_id, amount, currency, reference: "psp-1".into() }
}

fn withdraw(withdrawal_id: Uuid, amount: &str) -> WalletCommand {
    withdraw_in(withdrawal_id, amount, Currency::Eur)
}

fn withdraw_in(withdrawal_id: Uuid, amount: &str, currency: Currency) -> WalletCommand {
    WalletCommand::RequestWithdrawal {
        withdrawal_id,
        amount: Amount::parse(amount, currency).expect("test amount"),
        currency,
        reference: "payout-1".into(),
        destination: "DE89370400440532013000".into(),
    }
}

fn complete(withdrawal_id: Uuid) -> WalletCommand {
    WalletCommand::CompleteWithdrawal { withdrawal_id }
}

fn fail(withdrawal_id: Uuid) -> WalletCommand {
    WalletCommand::FailWithdrawal { withdrawal_id, reason: "bank refused".into() }
}

fn reverse(amount: &str, direction: ReversalDirection) -> WalletCommand {
    WalletCommand::Reverse {
        reversal_id: R1,
        original_transaction_id: TX1,
        amount: eur(amount),
        direction,
        reason: "chargeback".into(),
    }
}

fn freeze() -> WalletCommand {
    WalletCommand::Freeze { reason: "fraud review".into() }
}

fn unfreeze() -> WalletCommand {
    WalletCommand::Unfreeze
}

fn place(hold_id: Uuid, amount: &str, expires_at: Option<DateTime<Utc>>) -> WalletCommand {
    WalletCommand::PlaceHold { hold_id, amount: eur(amount), expires_at }
}

fn capture(hold_id: Uuid, capture_id: Uuid, amount: &str) -> WalletCommand {
    WalletCommand::CaptureHold { hold_id, capture_id, amount: eur(amount), fee: None }
}

fn release(hold_id: Uuid) -> WalletCommand {
    WalletCommand::ReleaseHold { hold_id }
}

fn expire(hold_id: Uuid, now: DateTime<Utc>) -> WalletCommand {
    WalletCommand::ExpireHold { hold_id, now }
}

// ---- events -------------------------------------------------------------------------------

fn opened() -> WalletEvent {
    WalletEvent::WalletOpened { wallet_id: WALLET, owner_id: OWNER, currency: Currency::Eur }
}

fn deposited(transaction_id: Uuid, amount: &str, balance_after: &str) -> WalletEvent {
    WalletEvent::Deposited {
        currency: Currency::Eur,
        transaction_id,
        amount: eur(amount),
        reference: "psp-1".into(),
        counter_account: SystemAccount::External,
        balance_after: dec(balance_after),
    }
}

fn withdrawal_requested(withdrawal_id: Uuid, amount: &str, balance_after: &str) -> WalletEvent {
    WalletEvent::WithdrawalRequested {
        currency: Currency::Eur,
        withdrawal_id,
        amount: eur(amount),
        reference: "payout-1".into(),
        destination: "DE89370400440532013000".into(),
        counter_account: SystemAccount::Transit,
        balance_after: dec(balance_after),
    }
}

fn withdrawal_completed(withdrawal_id: Uuid, amount: &str) -> WalletEvent {
    WalletEvent::WithdrawalCompleted { currency: Currency::Eur, withdrawal_id, amount: eur(amount) }
}

fn withdrawal_failed(withdrawal_id: Uuid, amount: &str, balance_after: &str) -> WalletEvent {
    WalletEvent::WithdrawalFailed {
        currency: Currency::Eur,
        withdrawal_id,
        amount: eur(amount),
        reason: "bank refused".into(),
        counter_account: SystemAccount::Transit,
        balance_after: dec(balance_after),
    }
}

fn reversed(amount: &str, direction: ReversalDirection, balance_after: &str) -> WalletEvent {
    WalletEvent::TransactionReversed {
        currency: Currency::Eur,
        reversal_id: R1,
        original_transaction_id: TX1,
        amount: eur(amount),
        direction,
        reason: "chargeback".into(),
        counter_account: SystemAccount::External,
        balance_after: dec(balance_after),
    }
}

fn frozen() -> WalletEvent {
    WalletEvent::WalletFrozen { reason: "fraud review".into() }
}

fn unfrozen() -> WalletEvent {
    WalletEvent::WalletUnfrozen {}
}

fn hold_placed(hold_id: Uuid, amount: &str, expires_at: Option<DateTime<Utc>>) -> WalletEvent {
    WalletEvent::HoldPlaced { hold_id, amount: eur(amount), expires_at }
}

fn hold_captured(
    hold_id: Uuid,
    capture_id: Uuid,
    amount: &str,
    balance_after: &str,
    hold_remaining: &str,
) -> WalletEvent {
    WalletEvent::HoldCaptured {
        currency: Currency::Eur,
        hold_id,
        capture_id,
        amount: eur(amount),
        fee: None,
        counter_account: SystemAccount::Transit,
        balance_after: dec(balance_after),
        hold_remaining: dec(hold_remaining),
    }
}

fn hold_released(hold_id: Uuid, amount: &str) -> WalletEvent {
    WalletEvent::HoldReleased { hold_id, amount: dec(amount) }
}

fn hold_expired(hold_id: Uuid, amount: &str) -> WalletEvent {
    WalletEvent::HoldExpired { hold_id, amount: dec(amount) }
}

// ---- histories ----------------------------------------------------------------------------

/// An open EUR wallet holding `balance`, deposited in parts no larger than one command may move.
fn funded(balance: &str) -> Vec<WalletEvent> {
    let target = dec(balance);
    let part_max = Decimal::from(AMOUNT_UNITS_MAX);
    let mut events = vec![opened()];
    let mut total = Decimal::ZERO;
    let mut transaction_id = TX1;
    while total < target {
        let part = (target - total).min(part_max);
        total += part;
        events.push(deposited(transaction_id, &part.to_string(), &total.to_string()));
        transaction_id = Uuid::from_u128(transaction_id.as_u128() + 0x100);
    }
    events
}

/// `funded(balance)` followed by `more`.
fn with(balance: &str, more: Vec<WalletEvent>) -> Vec<WalletEvent> {
    let mut events = funded(balance);
    events.extend(more);
    events
}

/// Folds events into a fresh wallet, as a load from the store does.
fn state(events: Vec<WalletEvent>) -> Wallet {
    let mut wallet = Wallet::default();
    for event in events {
        wallet.apply(event);
    }
    wallet
}

type Case = (&'static str, Vec<WalletEvent>, WalletCommand, Result<Vec<WalletEvent>, WalletError>);

fn run_table(cases: Vec<Case>) {
    for (name, given, when, expected) in cases {
        let result = WalletTest::with(()).given(given).when(when).inspect_result();
        assert_eq!(result, expected, "case: {name}");
    }
}

// ---- open ---------------------------------------------------------------------------------

#[test]
fn opening_a_new_wallet_records_its_identity() {
    WalletTest::with(()).given_no_previous_events().when(open()).then_expect_events(vec![opened()]);
}

#[test]
fn opening_an_open_wallet_is_rejected_as_already_open() {
    WalletTest::with(()).given(vec![opened()]).when(open()).then_expect_error(AlreadyOpen);
}

#[test]
fn commands_on_an_unopened_wallet_are_rejected_as_not_found() {
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("deposit",           vec![], deposit(TX1, "10"),           Err(NotFound)),
        ("deposit in USD",    vec![], deposit_in(TX1, "10", Currency::Usd), Err(NotFound)),
        ("withdraw",          vec![], withdraw(W1, "10"),           Err(NotFound)),
        ("complete",          vec![], complete(W1),                 Err(NotFound)),
        ("fail",              vec![], fail(W1),                     Err(NotFound)),
        ("reverse debit",     vec![], reverse("1", DebitWallet),    Err(NotFound)),
        ("reverse credit",    vec![], reverse("1", CreditWallet),   Err(NotFound)),
        ("freeze",            vec![], freeze(),                     Err(NotFound)),
        ("unfreeze",          vec![], unfreeze(),                   Err(NotFound)),
        ("place hold",        vec![], place(H1, "1", None),         Err(NotFound)),
    ];
    run_table(cases);
}

#[test]
fn hold_commands_on_an_unopened_wallet_are_rejected_as_not_found() {
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("capture hold",      vec![], capture(H1, C1, "1"),         Err(NotFound)),
        ("release hold",      vec![], release(H1),                  Err(NotFound)),
        ("expire hold",       vec![], expire(H1, t(0)),             Err(NotFound)),
    ];
    run_table(cases);
}

// ---- deposits -----------------------------------------------------------------------------

#[test]
fn deposit_rules() {
    let max = BALANCE_UNITS_MAX.to_string();
    let amount_max = AMOUNT_UNITS_MAX.to_string();
    let below_max = (BALANCE_UNITS_MAX - AMOUNT_UNITS_MAX).to_string();
    let near_max = (BALANCE_UNITS_MAX - 1).to_string();
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("first deposit",              vec![opened()],        deposit(TX1, "10.5"),         Ok(vec![deposited(TX1, "10.50", "10.50")])),
        ("balance_after accumulates",  funded("10.50"),       deposit(TX2, "0.01"),         Ok(vec![deposited(TX2, "0.01", "10.51")])),
        ("holds do not limit credits", with("10", vec![hold_placed(H1, "10", None)]), deposit(TX2, "5"), Ok(vec![deposited(TX2, "5", "15")])),
        ("frozen wallet accepts",      with("10", vec![frozen()]), deposit(TX2, "5"),       Ok(vec![deposited(TX2, "5", "15")])),
        ("USD into EUR wallet",        funded("10"),          deposit_in(TX2, "5", Currency::Usd),    Err(CurrencyMismatch)),
        ("CARBON into EUR wallet",     funded("10"),          deposit_in(TX2, "5", Currency::Carbon), Err(CurrencyMismatch)),
        ("reaching the limit exactly", funded(&below_max),    deposit(TX2, &amount_max),    Ok(vec![deposited(TX2, &amount_max, &max)])),
        ("one cent past the limit",    funded(&max),          deposit(TX2, "0.01"),         Err(BalanceOverflow)),
        ("past the limit",             funded(&near_max),     deposit(TX2, "1.01"),         Err(BalanceOverflow)),
    ];
    run_table(cases);
}

// ---- withdrawals --------------------------------------------------------------------------

#[test]
fn withdrawal_request_rules() {
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("within balance",          funded("100"),  withdraw(W1, "30"),   Ok(vec![withdrawal_requested(W1, "30", "70")])),
        ("whole balance",           funded("100"),  withdraw(W1, "100"),  Ok(vec![withdrawal_requested(W1, "100", "0")])),
        ("more than balance",       funded("100"),  withdraw(W1, "100.01"), Err(InsufficientFunds)),
        ("empty wallet",            vec![opened()], withdraw(W1, "0.01"), Err(InsufficientFunds)),
        ("holds count: fits",       with("100", vec![hold_placed(H1, "80", None)]), withdraw(W1, "20"), Ok(vec![withdrawal_requested(W1, "20", "80")])),
        ("holds count: short",      with("100", vec![hold_placed(H1, "80", None)]), withdraw(W1, "30"), Err(InsufficientFunds)),
        ("frozen",                  with("100", vec![frozen()]), withdraw(W1, "1"), Err(Frozen)),
        ("unfrozen again",          with("100", vec![frozen(), unfrozen()]), withdraw(W1, "1"), Ok(vec![withdrawal_requested(W1, "1", "99")])),
        ("currency mismatch",       funded("100"),  withdraw_in(W1, "1", Currency::Usd), Err(CurrencyMismatch)),
        ("id already pending",      with("100", vec![withdrawal_requested(W1, "10", "90")]), withdraw(W1, "10"), Err(WithdrawalExists)),
        ("second id",               with("100", vec![withdrawal_requested(W1, "10", "90")]), withdraw(W2, "10"), Ok(vec![withdrawal_requested(W2, "10", "80")])),
    ];
    run_table(cases);
}

#[test]
fn withdrawal_settlement_rules() {
    let pending = || with("100", vec![withdrawal_requested(W1, "30", "70")]);
    let completed = || with("100", vec![withdrawal_requested(W1, "30", "70"), withdrawal_completed(W1, "30")]);
    let failed = || with("100", vec![withdrawal_requested(W1, "30", "70"), withdrawal_failed(W1, "30", "100")]);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("complete",                 pending(),     complete(W1), Ok(vec![withdrawal_completed(W1, "30")])),
        ("fail credits back",        pending(),     fail(W1),     Ok(vec![withdrawal_failed(W1, "30", "100")])),
        ("complete while frozen",    { let mut e = pending(); e.push(frozen()); e }, complete(W1), Ok(vec![withdrawal_completed(W1, "30")])),
        ("fail while frozen",        { let mut e = pending(); e.push(frozen()); e }, fail(W1),     Ok(vec![withdrawal_failed(W1, "30", "100")])),
        ("complete unknown",         funded("100"), complete(W2), Err(WithdrawalNotFound)),
        ("fail unknown",             funded("100"), fail(W2),     Err(WithdrawalNotFound)),
        ("complete twice",           completed(),   complete(W1), Err(WithdrawalNotFound)),
        ("fail after complete",      completed(),   fail(W1),     Err(WithdrawalNotFound)),
        ("complete after fail",      failed(),      complete(W1), Err(WithdrawalNotFound)),
        ("fail twice",               failed(),      fail(W1),     Err(WithdrawalNotFound)),
    ];
    run_table(cases);
}

#[test]
fn a_failed_payout_is_credited_back_even_at_the_balance_limit() {
    let max = BALANCE_UNITS_MAX.to_string();
    let mut given = funded(&max);
    given.push(withdrawal_requested(W1, "30", &(BALANCE_UNITS_MAX - 30).to_string()));
    given.push(deposited(TX2, "30", &max));
    WalletTest::with(()).given(given).when(fail(W1)).then_expect_events(vec![withdrawal_failed(
        W1,
        "30",
        &(BALANCE_UNITS_MAX + 30).to_string(),
    )]);
}

// ---- reversals ----------------------------------------------------------------------------

#[test]
fn reversal_rules() {
    let max = BALANCE_UNITS_MAX.to_string();
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("credit",                       funded("100"), reverse("30", CreditWallet), Ok(vec![reversed("30", CreditWallet, "130")])),
        ("debit",                        funded("100"), reverse("30", DebitWallet),  Ok(vec![reversed("30", DebitWallet, "70")])),
        ("debit whole balance",          funded("100"), reverse("100", DebitWallet), Ok(vec![reversed("100", DebitWallet, "0")])),
        ("debit beyond balance",         funded("100"), reverse("100.01", DebitWallet), Err(InsufficientFunds)),
        ("debit beyond available",       with("100", vec![hold_placed(H1, "80", None)]), reverse("30", DebitWallet), Err(InsufficientFunds)),
        ("debit within available",       with("100", vec![hold_placed(H1, "80", None)]), reverse("20", DebitWallet), Ok(vec![reversed("20", DebitWallet, "80")])),
        ("debit of a frozen wallet",     with("100", vec![frozen()]), reverse("30", DebitWallet),  Ok(vec![reversed("30", DebitWallet, "70")])),
        ("credit of a frozen wallet",    with("100", vec![frozen()]), reverse("30", CreditWallet), Ok(vec![reversed("30", CreditWallet, "130")])),
        ("credit past the limit",        funded(&max), reverse("0.01", CreditWallet), Err(BalanceOverflow)),
    ];
    run_table(cases);
}

// ---- freezes ------------------------------------------------------------------------------

#[test]
fn freeze_rules() {
    let on_hold = || with("100", vec![frozen(), hold_placed(H1, "50", Some(t(10)))]);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("freeze",                     funded("100"),                         freeze(),   Ok(vec![frozen()])),
        ("freeze twice",               with("100", vec![frozen()]),           freeze(),   Err(AlreadyFrozen)),
        ("unfreeze",                   with("100", vec![frozen()]),           unfreeze(), Ok(vec![unfrozen()])),
        ("unfreeze when not frozen",   funded("100"),                         unfreeze(), Err(NotFrozen)),
        ("unfreeze twice",             with("100", vec![frozen(), unfrozen()]), unfreeze(), Err(NotFrozen)),
        ("refreeze",                   with("100", vec![frozen(), unfrozen()]), freeze(),   Ok(vec![frozen()])),
        ("frozen: no withdrawal",      with("100", vec![frozen()]),           withdraw(W1, "1"),       Err(Frozen)),
        ("frozen: no new hold",        with("100", vec![frozen()]),           place(H1, "1", None),    Err(Frozen)),
        ("frozen: no capture",         on_hold(),                             capture(H1, C1, "1"),    Err(Frozen)),
        ("frozen: deposits accepted",  with("100", vec![frozen()]),           deposit(TX2, "1"),       Ok(vec![deposited(TX2, "1", "101")])),
        ("frozen: release accepted",   on_hold(),                             release(H1),             Ok(vec![hold_released(H1, "50")])),
        ("frozen: expiry accepted",    on_hold(),                             expire(H1, t(10)),       Ok(vec![hold_expired(H1, "50")])),
    ];
    run_table(cases);
}

// ---- holds --------------------------------------------------------------------------------

#[test]
fn hold_placement_rules() {
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("place",                     funded("100"), place(H1, "60", Some(t(10))), Ok(vec![hold_placed(H1, "60", Some(t(10)))])),
        ("place without expiry",      funded("100"), place(H1, "100", None),       Ok(vec![hold_placed(H1, "100", None)])),
        ("more than balance",         funded("100"), place(H1, "100.01", None),    Err(InsufficientFunds)),
        ("more than available",       with("100", vec![hold_placed(H1, "60", None)]), place(H2, "40.01", None), Err(InsufficientFunds)),
        ("rest of available",         with("100", vec![hold_placed(H1, "60", None)]), place(H2, "40", None),    Ok(vec![hold_placed(H2, "40", None)])),
        ("duplicate id",              with("100", vec![hold_placed(H1, "10", None)]), place(H1, "10", None),    Err(HoldExists)),
        ("id free again on release",  with("100", vec![hold_placed(H1, "10", None), hold_released(H1, "10")]), place(H1, "10", None), Ok(vec![hold_placed(H1, "10", None)])),
    ];
    run_table(cases);
}

#[test]
fn hold_capture_rules() {
    let held = || with("100", vec![hold_placed(H1, "60", Some(t(10)))]);
    let part = || with("100", vec![hold_placed(H1, "60", Some(t(10))), hold_captured(H1, C1, "20", "80", "40")]);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("first part",                held(), capture(H1, C1, "20"),    Ok(vec![hold_captured(H1, C1, "20", "80", "40")])),
        ("second part",               part(), capture(H1, C2, "15"),    Ok(vec![hold_captured(H1, C2, "15", "65", "25")])),
        ("rest of the hold",          part(), capture(H1, C2, "40"),    Ok(vec![hold_captured(H1, C2, "40", "40", "0")])),
        ("whole hold at once",        held(), capture(H1, C1, "60"),    Ok(vec![hold_captured(H1, C1, "60", "40", "0")])),
        ("repeat, same amount",       part(), capture(H1, C1, "20"),    Ok(vec![])),
        ("repeat, same amount, other scale", part(), capture(H1, C1, "20.00"), Ok(vec![])),
        ("repeat, other amount",      part(), capture(H1, C1, "21"),    Err(CaptureExistsWithDifferentAmount)),
        ("exceeds remaining",         part(), capture(H1, C2, "40.01"), Err(CaptureExceedsHold)),
        ("exceeds the hold",          held(), capture(H1, C1, "60.01"), Err(CaptureExceedsHold)),
        ("unknown hold",              held(), capture(H2, C1, "1"),     Err(HoldNotFound)),
        ("released hold",             with("100", vec![hold_placed(H1, "60", None), hold_released(H1, "60")]), capture(H1, C1, "1"), Err(HoldNotFound)),
        ("repeat while frozen",       { let mut e = part(); e.push(frozen()); e }, capture(H1, C1, "20"), Ok(vec![])),
        ("new part while frozen",     { let mut e = part(); e.push(frozen()); e }, capture(H1, C2, "1"),  Err(Frozen)),
    ];
    run_table(cases);
}

#[test]
fn a_full_capture_keeps_an_empty_hold_until_it_is_released() {
    let history = with(
        "100",
        vec![
            hold_placed(H1, "60", Some(t(10))),
            hold_captured(H1, C1, "20", "80", "40"),
            hold_captured(H1, C2, "40", "40", "0"),
        ],
    );
    let wallet = state(history.clone());
    assert_eq!(wallet.holds[&H1].remaining, Decimal::ZERO, "{wallet:?}");
    assert_eq!(wallet.held, Decimal::ZERO);
    assert_eq!(wallet.balance, dec("40"));
    assert_eq!(wallet.available(), dec("40"));
    WalletTest::with(())
        .given(history)
        .when(release(H1))
        .then_expect_events(vec![WalletEvent::HoldReleased { hold_id: H1, amount: Decimal::ZERO }]);
}

#[test]
fn a_partial_capture_keeps_the_hold_and_records_the_capture() {
    let wallet = state(with("100", vec![hold_placed(H1, "60", Some(t(10))), hold_captured(H1, C1, "20", "80", "40")]));
    let hold = &wallet.holds[&H1];
    assert_eq!(hold.remaining, dec("40"));
    assert_eq!(hold.captures.get(&C1), Some(&dec("20")));
    assert_eq!(wallet.held, dec("40"));
    assert_eq!(wallet.available(), dec("40"));
}

#[test]
fn repeating_the_final_capture_is_a_no_op() {
    WalletTest::with(())
        .given(with(
            "100",
            vec![
                hold_placed(H1, "60", Some(t(10))),
                hold_captured(H1, C1, "20", "80", "40"),
                hold_captured(H1, C2, "40", "40", "0"),
            ],
        ))
        .when(capture(H1, C2, "40"))
        .then_expect_events(vec![]);
}

#[test]
fn hold_release_and_expiry_rules() {
    let held = || with("100", vec![hold_placed(H1, "60", Some(t(10)))]);
    let open_ended = || with("100", vec![hold_placed(H1, "60", None)]);
    let part = || with("100", vec![hold_placed(H1, "60", Some(t(10))), hold_captured(H1, C1, "20", "80", "40")]);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("release",                     held(),        release(H1),            Ok(vec![hold_released(H1, "60")])),
        ("release after a capture",     part(),        release(H1),            Ok(vec![hold_released(H1, "40")])),
        ("release unknown",             held(),        release(H2),            Err(HoldNotFound)),
        ("release twice",               with("100", vec![hold_placed(H1, "60", None), hold_released(H1, "60")]), release(H1), Err(HoldNotFound)),
        ("expire before expiry",        held(),        expire(H1, t(9)),       Err(HoldNotExpired)),
        ("expire at expiry",            held(),        expire(H1, t(10)),      Ok(vec![hold_expired(H1, "60")])),
        ("expire after expiry",         held(),        expire(H1, t(60)),      Ok(vec![hold_expired(H1, "60")])),
        ("expire without expiry",       open_ended(),  expire(H1, t(100_000)), Err(HoldNotExpired)),
        ("expire after a capture",      part(),        expire(H1, t(60)),      Err(HoldCaptureStarted)),
        ("expire before, after capture", part(),       expire(H1, t(0)),       Err(HoldCaptureStarted)),
        ("expire unknown",              held(),        expire(H2, t(60)),      Err(HoldNotFound)),
        ("expire an expired hold",      with("100", vec![hold_placed(H1, "60", Some(t(10))), hold_expired(H1, "60")]), expire(H1, t(60)), Err(HoldNotFound)),
        ("capture an expired hold",     with("100", vec![hold_placed(H1, "60", Some(t(10))), hold_expired(H1, "60")]), capture(H1, C3, "1"), Err(HoldNotFound)),
    ];
    run_table(cases);
}

#[test]
fn releasing_or_expiring_a_hold_frees_its_remaining_amount() {
    for end in [hold_released(H1, "40"), hold_expired(H1, "40")] {
        let wallet = state(with(
            "100",
            vec![
                hold_placed(H1, "60", Some(t(10))),
                hold_placed(H2, "10", None),
                hold_captured(H1, C1, "20", "80", "40"),
                end.clone(),
            ],
        ));
        assert!(!wallet.holds.contains_key(&H1), "{end:?}");
        assert_eq!(wallet.held, dec("10"), "{end:?}");
        assert_eq!(wallet.available(), dec("70"), "{end:?}");
    }
}

// ---- postings -----------------------------------------------------------------------------

fn wallet_account() -> Account {
    Account::Wallet { wallet_id: WALLET }
}

fn system(account: SystemAccount) -> Account {
    Account::System { account }
}

#[test]
fn money_moving_events_record_one_posting_each() {
    use SystemAccount::{External, Transit};
    let wallet = wallet_account();
    #[rustfmt::skip]
    let cases: Vec<(WalletEvent, Account, Account, &str, &str)> = vec![
        // event                                             debit             credit            amount  balance delta
        (deposited(TX1, "10", "10"),                         system(External), wallet,           "10",   "10"),
        (withdrawal_requested(W1, "3", "7"),                 wallet,           system(Transit),  "3",    "-3"),
        (withdrawal_completed(W1, "3"),                      system(Transit),  system(External), "3",    "0"),
        (withdrawal_failed(W1, "3", "10"),                   system(Transit),  wallet,           "3",    "3"),
        (reversed("4", DebitWallet, "6"),                    wallet,           system(External), "4",    "-4"),
        (reversed("4", CreditWallet, "14"),                  system(External), wallet,           "4",    "4"),
        (hold_captured(H1, C1, "2", "8", "1"),               wallet,           system(Transit),  "2",    "-2"),
    ];
    for (event, debit, credit, amount, delta) in cases {
        let postings = event.postings(WALLET);
        let expected = Posting { debit, credit, currency: Currency::Eur, amount: dec(amount) };
        assert_eq!(postings, vec![expected], "{event:?}");
        assert!(postings.iter().all(|p| p.debit != p.credit), "{event:?}");
        assert!(postings.iter().all(|p| p.amount > Decimal::ZERO), "{event:?}");
        assert_eq!(event.balance_delta(WALLET), dec(delta), "{event:?}");
    }
}

#[test]
fn events_that_move_no_money_record_no_postings() {
    let events = [
        opened(),
        frozen(),
        unfrozen(),
        hold_placed(H1, "5", Some(t(1))),
        hold_released(H1, "5"),
        hold_expired(H1, "5"),
    ];
    for event in events {
        assert!(event.postings(WALLET).is_empty(), "{event:?}");
        assert_eq!(event.balance_delta(WALLET), Decimal::ZERO, "{event:?}");
    }
}

#[test]
fn postings_are_in_the_event_currency() {
    let event = WalletEvent::Deposited {
        currency: Currency::Carbon,
        transaction_id: TX1,
        amount: Amount::parse("1.5", Currency::Carbon).unwrap(),
        reference: "mint".into(),
        counter_account: SystemAccount::External,
        balance_after: dec("1.5"),
    };
    let postings = event.postings(WALLET);
    assert_eq!(postings.len(), 1);
    assert_eq!(postings[0].currency, Currency::Carbon);
    assert_eq!(postings[0].amount, dec("1.500"));
}

// ---- events as stored ---------------------------------------------------------------------

fn every_event() -> Vec<WalletEvent> {
    vec![
        opened(),
        deposited(TX1, "10", "10"),
        withdrawal_requested(W1, "3", "7"),
        withdrawal_completed(W1, "3"),
        withdrawal_failed(W1, "3", "10"),
        reversed("4", DebitWallet, "6"),
        frozen(),
        unfrozen(),
        hold_placed(H1, "5", Some(t(1))),
        hold_captured(H1, C1, "2", "8", "3"),
        hold_released(H1, "3"),
        hold_expired(H1, "3"),
    ]
}

#[test]
fn events_have_distinct_types_and_the_current_version() {
    let events = every_event();
    let mut types: Vec<String> = events.iter().map(DomainEvent::event_type).collect();
    for event in &events {
        assert_eq!(event.event_version(), domain::EVENT_VERSION);
    }
    types.sort();
    types.dedup();
    assert_eq!(types.len(), events.len());
}

#[test]
fn events_survive_a_json_round_trip() {
    for event in every_event() {
        let json = serde_json::to_string(&event).unwrap();
        let back: WalletEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event, "{json}");
    }
}

#[test]
fn error_codes_are_distinct() {
    let errors = [
        NotFound,
        AlreadyOpen,
        CurrencyMismatch,
        InsufficientFunds,
        Frozen,
        AlreadyFrozen,
        NotFrozen,
        BalanceOverflow,
        HoldNotFound,
        HoldExists,
        HoldNotExpired,
        HoldCaptureStarted,
        CaptureExceedsHold,
        CaptureExistsWithDifferentAmount,
        WithdrawalNotFound,
        WithdrawalExists,
    ];
    let mut codes: Vec<&str> = errors.iter().map(WalletError::code).collect();
    assert_eq!(InsufficientFunds.code(), "insufficient_funds");
    assert_eq!(CaptureExistsWithDifferentAmount.code(), "capture_exists_with_different_amount");
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}
