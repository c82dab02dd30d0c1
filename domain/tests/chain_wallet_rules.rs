//! The wallet's chain rules as given / when / then scenarios, one table line per case:
//! withdrawals to the chain, their mint and return, deposits from the chain, retirements.

use cqrs_es::test::TestFramework;
use domain::accounts::{Account, Posting};
use domain::money::{Amount, Currency};
use domain::wallet::{Wallet, WalletCommand, WalletError, WalletEvent};
use domain::SystemAccount;
use rust_decimal::Decimal;
use uuid::Uuid;

use WalletError::*;

type WalletTest = TestFramework<Wallet>;

const WALLET: Uuid = Uuid::from_u128(0x1000);
const OWNER: Uuid = Uuid::from_u128(0x2000);
const W1: Uuid = Uuid::from_u128(0x4001);
const D1: Uuid = Uuid::from_u128(0x5001);
const R1: Uuid = Uuid::from_u128(0x6001);
const ADDRESS: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";

fn carbon(text: &str) -> Amount {
    Amount::parse(text, Currency::Carbon).expect("test amount")
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("test decimal")
}

fn opened(currency: Currency) -> WalletEvent {
    WalletEvent::WalletOpened { wallet_id: WALLET, owner_id: OWNER, currency }
}

/// An open CARBON wallet holding `balance`.
fn funded(balance: &str) -> Vec<WalletEvent> {
    vec![
        opened(Currency::Carbon),
        WalletEvent::Deposited {
            currency: Currency::Carbon,
            transaction_id: Uuid::from_u128(0x3001),
            amount: carbon(balance),
            reference: "psp-1".into(),
            counter_account: SystemAccount::External,
            balance_after: dec(balance),
        },
    ]
}

fn with(balance: &str, more: Vec<WalletEvent>) -> Vec<WalletEvent> {
    let mut events = funded(balance);
    events.extend(more);
    events
}

fn withdraw(amount: &str) -> WalletCommand {
    WalletCommand::WithdrawToChain { withdrawal_id: W1, amount: carbon(amount), address: ADDRESS.into() }
}

fn requested(amount: &str, balance_after: &str) -> WalletEvent {
    WalletEvent::ChainWithdrawalRequested {
        currency: Currency::Carbon,
        withdrawal_id: W1,
        amount: carbon(amount),
        address: ADDRESS.into(),
        counter_account: SystemAccount::Chain,
        balance_after: dec(balance_after),
    }
}

fn complete() -> WalletCommand {
    WalletCommand::CompleteChainWithdrawal { withdrawal_id: W1, tx_hash: "0xaa".into(), block_number: 7 }
}

fn minted(amount: &str) -> WalletEvent {
    WalletEvent::ChainWithdrawalMinted {
        currency: Currency::Carbon,
        withdrawal_id: W1,
        amount: carbon(amount),
        tx_hash: "0xaa".into(),
        block_number: 7,
    }
}

fn give_back() -> WalletCommand {
    WalletCommand::ReturnChainWithdrawal { withdrawal_id: W1, reason: "never minted".into() }
}

fn returned(amount: &str, balance_after: &str) -> WalletEvent {
    WalletEvent::ChainWithdrawalReturned {
        currency: Currency::Carbon,
        withdrawal_id: W1,
        amount: carbon(amount),
        reason: "never minted".into(),
        counter_account: SystemAccount::Chain,
        balance_after: dec(balance_after),
    }
}

fn credit(amount: &str, from: SystemAccount) -> WalletCommand {
    WalletCommand::CreditFromChain {
        deposit_id: D1,
        amount: carbon(amount),
        from,
        tx_hash: "0xbb".into(),
        log_index: 2,
    }
}

fn deposited(amount: &str, from: SystemAccount, balance_after: &str) -> WalletEvent {
    WalletEvent::ChainDeposited {
        currency: Currency::Carbon,
        deposit_id: D1,
        amount: carbon(amount),
        tx_hash: "0xbb".into(),
        log_index: 2,
        counter_account: from,
        balance_after: dec(balance_after),
    }
}

fn retire(amount: &str) -> WalletCommand {
    WalletCommand::Retire { retirement_id: R1, amount: carbon(amount) }
}

fn retired(amount: &str, balance_after: &str) -> WalletEvent {
    WalletEvent::CreditsRetired {
        currency: Currency::Carbon,
        retirement_id: R1,
        amount: carbon(amount),
        counter_account: SystemAccount::Retired,
        balance_after: dec(balance_after),
    }
}

fn frozen() -> WalletEvent {
    WalletEvent::WalletFrozen { reason: "review".into() }
}

type Case = (&'static str, Vec<WalletEvent>, WalletCommand, Result<Vec<WalletEvent>, WalletError>);

fn run_table(cases: Vec<Case>) {
    for (name, given, when, expected) in cases {
        let result = WalletTest::with(()).given(given).when(when).inspect_result();
        assert_eq!(result, expected, "case: {name}");
    }
}

#[test]
fn withdrawal_to_the_chain_rules() {
    let eur_wallet = vec![opened(Currency::Eur)];
    run_table(vec![
        ("debits the wallet into chain", funded("5"), withdraw("2"), Ok(vec![requested("2", "3")])),
        ("the whole balance", funded("5"), withdraw("5"), Ok(vec![requested("5", "0")])),
        ("more than the balance", funded("5"), withdraw("5.001"), Err(InsufficientFunds)),
        ("a frozen wallet", with("5", vec![frozen()]), withdraw("1"), Err(Frozen)),
        ("a wallet of another currency", eur_wallet, withdraw("1"), Err(NotCarbon)),
        ("an unopened wallet", vec![], withdraw("1"), Err(NotFound)),
        ("the same id twice", with("5", vec![requested("1", "4")]), withdraw("1"), Err(WithdrawalExists)),
    ]);
}

#[test]
fn a_withdrawal_to_the_chain_settles_once_by_mint_or_by_return() {
    let pending = with("5", vec![requested("2", "3")]);
    run_table(vec![
        ("minted: no balance change", pending.clone(), complete(), Ok(vec![minted("2")])),
        ("returned: chain back to the wallet", pending.clone(), give_back(), Ok(vec![returned("2", "5")])),
        (
            "minted then returned",
            with("5", vec![requested("2", "3"), minted("2")]),
            give_back(),
            Err(WithdrawalNotFound),
        ),
        (
            "returned then minted",
            with("5", vec![requested("2", "3"), returned("2", "5")]),
            complete(),
            Err(WithdrawalNotFound),
        ),
        ("never requested", funded("5"), complete(), Err(WithdrawalNotFound)),
    ]);
}

#[test]
fn deposit_from_the_chain_rules() {
    run_table(vec![
        (
            "from chain",
            funded("1"),
            credit("2", SystemAccount::Chain),
            Ok(vec![deposited("2", SystemAccount::Chain, "3")]),
        ),
        (
            "from chain suspense",
            funded("1"),
            credit("2", SystemAccount::ChainSuspense),
            Ok(vec![deposited("2", SystemAccount::ChainSuspense, "3")]),
        ),
        ("from external", funded("1"), credit("2", SystemAccount::External), Err(InvalidChainSource)),
        (
            "into a frozen wallet still credits",
            with("1", vec![frozen()]),
            credit("2", SystemAccount::Chain),
            Ok(vec![deposited("2", SystemAccount::Chain, "3")]),
        ),
        (
            "into a wallet of another currency",
            vec![opened(Currency::Eur)],
            credit("2", SystemAccount::Chain),
            Err(NotCarbon),
        ),
    ]);
}

#[test]
fn retirement_rules() {
    run_table(vec![
        ("debits the wallet into retired", funded("5"), retire("1.5"), Ok(vec![retired("1.5", "3.5")])),
        ("more than the balance", funded("1"), retire("1.001"), Err(InsufficientFunds)),
        ("a frozen wallet", with("5", vec![frozen()]), retire("1"), Err(Frozen)),
        ("a wallet of another currency", vec![opened(Currency::Usd)], retire("1"), Err(NotCarbon)),
    ]);
}

#[test]
fn chain_events_post_between_the_wallet_and_the_chain_accounts() {
    let wallet = Account::Wallet { wallet_id: WALLET };
    let system = |account| Account::System { account };
    let posting =
        |debit, credit, amount: &str| Posting { debit, credit, currency: Currency::Carbon, amount: dec(amount) };
    let cases = [
        (requested("2", "3"), vec![posting(wallet, system(SystemAccount::Chain), "2")]),
        (minted("2"), vec![]),
        (returned("2", "5"), vec![posting(system(SystemAccount::Chain), wallet, "2")]),
        (
            deposited("1", SystemAccount::ChainSuspense, "6"),
            vec![posting(system(SystemAccount::ChainSuspense), wallet, "1")],
        ),
        (retired("1", "5"), vec![posting(wallet, system(SystemAccount::Retired), "1")]),
    ];
    for (event, expected) in cases {
        assert_eq!(event.postings(WALLET), expected, "{event:?}");
    }
}
