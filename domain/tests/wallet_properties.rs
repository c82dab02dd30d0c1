//! Property tests: random command sequences on an open EUR wallet keep the ledger's invariants.
//!
//! Commands run through `Wallet::handle` with a fresh `EventSink` each, as the framework does.
//! `EventSink::write` already applies each event to the aggregate, so the collected events are
//! only recorded, never applied again to the live state.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use domain::accounts::Account;
use domain::money::{Amount, Currency, AMOUNT_UNITS_MAX};
use domain::wallet::{ReversalDirection, Wallet, WalletCommand, WalletError, WalletEvent};
use domain::SystemAccount;
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::Decimal;
use uuid::Uuid;

const WALLET: Uuid = Uuid::from_u128(0x1000);
const OWNER: Uuid = Uuid::from_u128(0x2000);
/// Longest command sequence generated after opening the wallet.
const COMMANDS_MAX: usize = 60;
/// Ids come from small pools so that later commands often refer to earlier ones.
const IDS_PER_KIND: u8 = 4;

/// Kinds of id, kept apart in the high bits so a hold id never equals a withdrawal id.
#[derive(Clone, Copy)]
enum Kind {
    Transaction = 1,
    Withdrawal,
    Reversal,
    Hold,
    Capture,
}

fn id(kind: Kind, n: u8) -> Uuid {
    Uuid::from_u128(((kind as u128) << 64) | u128::from(n))
}

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

// ---- strategies ---------------------------------------------------------------------------

/// Cents: mostly a few round values (so repeated captures match), some arbitrary small ones,
/// and now and then one up to the per-command limit to reach the balance limit.
fn cents() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => prop::sample::select(vec![100_i64, 500, 1_000, 2_500, 10_000]),
        4 => 1_i64..=50_000,
        1 => 1_i64..=AMOUNT_UNITS_MAX * 100,
    ]
}

fn amount_in(currency: Currency) -> impl Strategy<Value = Amount> {
    cents().prop_map(move |c| Amount::new(Decimal::new(c, 2), currency).expect("valid cents"))
}

fn eur() -> impl Strategy<Value = Amount> {
    amount_in(Currency::Eur)
}

/// Captures use fewer distinct amounts, so that a repeated capture id often repeats its amount.
fn capture_amount() -> impl Strategy<Value = Amount> {
    let cents = prop_oneof![3 => prop::sample::select(vec![500_i64, 1_000]), 1 => cents()];
    cents.prop_map(|c| Amount::new(Decimal::new(c, 2), Currency::Eur).expect("valid cents"))
}

fn some_id(kind: Kind) -> impl Strategy<Value = Uuid> {
    (0..IDS_PER_KIND).prop_map(move |n| id(kind, n))
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0_i64..=20).prop_map(t)
}

fn money_commands() -> impl Strategy<Value = WalletCommand> {
    prop_oneof![
        4 => (any::<u8>(), eur()).prop_map(|(n, amount)| WalletCommand::Deposit {
            transaction_id: id(Kind::Transaction, n),
            amount,
            currency: Currency::Eur,
            reference: "psp".into(),
        }),
        1 => (any::<u8>(), amount_in(Currency::Usd)).prop_map(|(n, amount)| WalletCommand::Deposit {
            transaction_id: id(Kind::Transaction, n),
            amount,
            currency: Currency::Usd,
            reference: "psp".into(),
        }),
        3 => (some_id(Kind::Withdrawal), eur()).prop_map(|(withdrawal_id, amount)| {
            WalletCommand::RequestWithdrawal {
                withdrawal_id,
                amount,
                currency: Currency::Eur,
                reference: "payout".into(),
                destination: "iban".into(),
            }
        }),
        2 => some_id(Kind::Withdrawal)
            .prop_map(|withdrawal_id| WalletCommand::CompleteWithdrawal { withdrawal_id }),
        2 => some_id(Kind::Withdrawal).prop_map(|withdrawal_id| WalletCommand::FailWithdrawal {
            withdrawal_id,
            reason: "refused".into(),
        }),
        2 => (any::<u8>(), eur(), any::<bool>()).prop_map(|(n, amount, debit)| WalletCommand::Reverse {
            reversal_id: id(Kind::Reversal, n),
            original_transaction_id: id(Kind::Transaction, n),
            amount,
            direction: if debit {
                ReversalDirection::DebitWallet
            } else {
                ReversalDirection::CreditWallet
            },
            reason: "chargeback".into(),
        }),
    ]
}

fn hold_and_status_commands() -> impl Strategy<Value = WalletCommand> {
    prop_oneof![
        1 => Just(WalletCommand::Freeze { reason: "review".into() }),
        2 => Just(WalletCommand::Unfreeze),
        4 => (some_id(Kind::Hold), eur(), proptest::option::of(time())).prop_map(
            |(hold_id, amount, expires_at)| WalletCommand::PlaceHold { hold_id, amount, expires_at }
        ),
        4 => (some_id(Kind::Hold), some_id(Kind::Capture), capture_amount()).prop_map(
            |(hold_id, capture_id, amount)| WalletCommand::CaptureHold { hold_id, capture_id, amount, fee: None }
        ),
        1 => some_id(Kind::Hold).prop_map(|hold_id| WalletCommand::ReleaseHold { hold_id }),
        2 => (some_id(Kind::Hold), time())
            .prop_map(|(hold_id, now)| WalletCommand::ExpireHold { hold_id, now }),
    ]
}

/// Deposits of the largest amount one command may move: five of them fill the wallet to its
/// balance limit, so some sequences start near it and meet `balance_overflow`.
fn largest_deposits(count: u8) -> Vec<WalletCommand> {
    (0..count)
        .map(|n| WalletCommand::Deposit {
            transaction_id: id(Kind::Transaction, n),
            amount: Amount::new(Decimal::from(AMOUNT_UNITS_MAX), Currency::Eur).expect("limit"),
            currency: Currency::Eur,
            reference: "psp".into(),
        })
        .collect()
}

fn commands() -> impl Strategy<Value = Vec<WalletCommand>> {
    let command = prop_oneof![money_commands(), hold_and_status_commands()];
    let prefix = prop_oneof![3 => Just(0_u8), 1 => 4_u8..=5].prop_map(largest_deposits);
    (prefix, prop::collection::vec(command, 0..=COMMANDS_MAX)).prop_map(|(mut prefix, rest)| {
        prefix.extend(rest);
        prefix
    })
}

// ---- the model ----------------------------------------------------------------------------

/// Runs one command as the framework does; returns its result and the events it emitted.
fn execute(wallet: &mut Wallet, command: WalletCommand) -> (Result<(), WalletError>, Vec<WalletEvent>) {
    let sink = EventSink::default();
    let result = block_on(wallet.handle(command, &(), &sink));
    (result, block_on(sink.collect()))
}

/// Balances of every account, per currency, summed over all postings of `history`.
fn trial_balance(history: &[WalletEvent]) -> Result<BTreeMap<(Currency, Account), Decimal>, TestCaseError> {
    let mut balances = BTreeMap::new();
    for event in history {
        for posting in event.postings(WALLET) {
            prop_assert_ne!(posting.debit, posting.credit, "{:?}", event);
            prop_assert!(posting.amount > Decimal::ZERO, "{:?}", event);
            prop_assert_eq!(posting.currency, Currency::Eur);
            *balances.entry((posting.currency, posting.debit)).or_insert(Decimal::ZERO) -= posting.amount;
            *balances.entry((posting.currency, posting.credit)).or_insert(Decimal::ZERO) += posting.amount;
        }
    }
    Ok(balances)
}

fn replay(history: &[WalletEvent]) -> Wallet {
    let mut wallet = Wallet::default();
    for event in history {
        wallet.apply(event.clone());
    }
    wallet
}

/// Every invariant the wallet must keep after any step.
fn check_invariants(wallet: &Wallet, history: &[WalletEvent]) -> Result<(), TestCaseError> {
    prop_assert!(wallet.balance >= Decimal::ZERO, "balance {}", wallet.balance);
    prop_assert!(wallet.held >= Decimal::ZERO, "held {}", wallet.held);
    prop_assert!(wallet.available() >= Decimal::ZERO, "available {}", wallet.available());

    let held: Decimal = wallet.holds.values().map(|hold| hold.remaining).sum();
    prop_assert_eq!(wallet.held, held, "held differs from the holds' remaining amounts");
    prop_assert!(wallet.holds.values().all(|hold| hold.remaining >= Decimal::ZERO));
    prop_assert!(wallet.pending_withdrawals.values().all(|amount| *amount > Decimal::ZERO));

    let credits: Decimal = history.iter().map(|e| e.balance_delta(WALLET)).sum();
    prop_assert_eq!(wallet.balance, credits, "balance differs from credits less debits");

    let balances = trial_balance(history)?;
    for currency in Currency::ALL {
        let sum: Decimal = balances.iter().filter(|((c, _), _)| *c == currency).map(|(_, v)| *v).sum();
        prop_assert_eq!(sum, Decimal::ZERO, "{} does not balance: {:?}", currency, balances);
    }
    let wallet_account = Account::Wallet { wallet_id: WALLET };
    let account = |a| balances.get(&(Currency::Eur, a)).copied().unwrap_or_default();
    prop_assert_eq!(account(wallet_account), wallet.balance);
    // Transit holds exactly the unsettled payouts and every capture (sagas move those on).
    let captured: Decimal = history
        .iter()
        .filter_map(|e| match e {
            WalletEvent::HoldCaptured { currency: Currency::Eur, amount, .. } => Some(amount.value()),
            _ => None,
        })
        .sum();
    let pending: Decimal = wallet.pending_withdrawals.values().copied().sum();
    prop_assert_eq!(account(Account::System { account: SystemAccount::Transit }), pending + captured);

    prop_assert_eq!(&replay(history), wallet, "replay differs from the live state");
    let json = serde_json::to_string(wallet).expect("serialize wallet");
    let back: Wallet = serde_json::from_str(&json).expect("deserialize wallet");
    prop_assert_eq!(&back, wallet, "snapshot round trip: {}", json);
    Ok(())
}

/// True for the events that take money out of the wallet's control.
fn is_user_debit(event: &WalletEvent) -> bool {
    matches!(
        event,
        WalletEvent::WithdrawalRequested { currency: Currency::Eur, .. }
            | WalletEvent::HoldPlaced { .. }
            | WalletEvent::HoldCaptured { currency: Currency::Eur, .. }
    )
}

fn run(commands: Vec<WalletCommand>) -> Result<(), TestCaseError> {
    let mut wallet = Wallet::default();
    let open = WalletCommand::OpenWallet { wallet_id: WALLET, owner_id: OWNER, currency: Currency::Eur };
    let (result, mut history) = execute(&mut wallet, open);
    prop_assert_eq!(result, Ok(()));
    check_invariants(&wallet, &history)?;

    for command in commands {
        let before = wallet.clone();
        let (result, events) = execute(&mut wallet, command.clone());
        match result {
            Err(error) => {
                prop_assert!(events.is_empty(), "{:?} rejected ({:?}) but emitted {:?}", command, error, events);
                prop_assert_eq!(&wallet, &before, "{:?} rejected ({:?}) but changed state", command, error);
            }
            Ok(()) => {
                if before.frozen {
                    prop_assert!(!events.iter().any(is_user_debit), "frozen wallet emitted {:?}", events);
                }
                if events.is_empty() {
                    prop_assert_eq!(&wallet, &before, "{:?} emitted nothing but changed state", command);
                }
                // Serialized events must come back identical: that is what the store keeps.
                for event in &events {
                    let json = serde_json::to_string(event).expect("serialize event");
                    let back: WalletEvent = serde_json::from_str(&json).expect("deserialize event");
                    prop_assert_eq!(&back, event);
                }
                history.extend(events);
            }
        }
        check_invariants(&wallet, &history)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_command_sequences_keep_the_ledger_invariants(commands in commands()) {
        run(commands)?;
    }
}

/// Guards the generator: a sequence that exercises every kind of event must pass, so the
/// property above is not vacuous for any of them.
#[test]
fn a_sequence_touching_every_event_keeps_the_invariants() {
    let eur = |cents| Amount::new(Decimal::new(cents, 2), Currency::Eur).unwrap();
    let (h0, h1) = (id(Kind::Hold, 0), id(Kind::Hold, 1));
    let (w0, w1) = (id(Kind::Withdrawal, 0), id(Kind::Withdrawal, 1));
    let commands = vec![
        WalletCommand::Deposit {
            transaction_id: id(Kind::Transaction, 0),
            amount: eur(100_000),
            currency: Currency::Eur,
            reference: "psp".into(),
        },
        WalletCommand::RequestWithdrawal {
            withdrawal_id: w0,
            amount: eur(10_000),
            currency: Currency::Eur,
            reference: "payout".into(),
            destination: "iban".into(),
        },
        WalletCommand::RequestWithdrawal {
            withdrawal_id: w1,
            amount: eur(5_000),
            currency: Currency::Eur,
            reference: "payout".into(),
            destination: "iban".into(),
        },
        WalletCommand::CompleteWithdrawal { withdrawal_id: w0 },
        WalletCommand::FailWithdrawal { withdrawal_id: w1, reason: "refused".into() },
        WalletCommand::Reverse {
            reversal_id: id(Kind::Reversal, 0),
            original_transaction_id: id(Kind::Transaction, 0),
            amount: eur(1_000),
            direction: ReversalDirection::DebitWallet,
            reason: "chargeback".into(),
        },
        WalletCommand::PlaceHold { hold_id: h0, amount: eur(20_000), expires_at: Some(t(5)) },
        WalletCommand::PlaceHold { hold_id: h1, amount: eur(3_000), expires_at: Some(t(5)) },
        WalletCommand::CaptureHold { hold_id: h0, capture_id: id(Kind::Capture, 0), amount: eur(5_000), fee: None },
        WalletCommand::CaptureHold { hold_id: h0, capture_id: id(Kind::Capture, 0), amount: eur(5_000), fee: None },
        WalletCommand::Freeze { reason: "review".into() },
        WalletCommand::RequestWithdrawal {
            withdrawal_id: w0,
            amount: eur(1),
            currency: Currency::Eur,
            reference: "payout".into(),
            destination: "iban".into(),
        },
        WalletCommand::Unfreeze,
        WalletCommand::ExpireHold { hold_id: h1, now: t(6) },
        WalletCommand::CaptureHold { hold_id: h0, capture_id: id(Kind::Capture, 1), amount: eur(15_000), fee: None },
        WalletCommand::PlaceHold { hold_id: h0, amount: eur(1_000), expires_at: None },
        WalletCommand::ReleaseHold { hold_id: h0 },
    ];
    run(commands).unwrap();
}
