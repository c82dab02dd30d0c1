use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::accounts::{Account, Posting, SystemAccount};
use crate::money::{Amount, Currency};

/// Which way a reversal moves money: a deposit is undone by a debit of the wallet, a completed
/// withdrawal by a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReversalDirection {
    DebitWallet,
    CreditWallet,
}

/// Wallet events. Money-moving events name their currency and system counter-account and carry
/// the wallet's balance after them, so a posting or a statement line needs nothing but the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum WalletEvent {
    WalletOpened {
        wallet_id: Uuid,
        owner_id: Uuid,
        currency: Currency,
    },
    Deposited {
        currency: Currency,
        transaction_id: Uuid,
        amount: Amount,
        reference: String,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    WithdrawalRequested {
        currency: Currency,
        withdrawal_id: Uuid,
        amount: Amount,
        reference: String,
        destination: String,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    /// Settles the payout between system accounts; the wallet's balance does not change.
    WithdrawalCompleted {
        withdrawal_id: Uuid,
        currency: Currency,
        amount: Amount,
    },
    WithdrawalFailed {
        currency: Currency,
        withdrawal_id: Uuid,
        amount: Amount,
        reason: String,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    TransactionReversed {
        currency: Currency,
        reversal_id: Uuid,
        original_transaction_id: Uuid,
        amount: Amount,
        direction: ReversalDirection,
        reason: String,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    TransferDebited {
        currency: Currency,
        transfer_id: Uuid,
        to_wallet_id: Uuid,
        amount: Amount,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    TransferCredited {
        currency: Currency,
        transfer_id: Uuid,
        from_wallet_id: Uuid,
        amount: Amount,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    TransferReturned {
        currency: Currency,
        transfer_id: Uuid,
        amount: Amount,
        reason: String,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    /// A purchase settled into this wallet from `transit`.
    PurchaseCredited {
        currency: Currency,
        purchase_id: Uuid,
        amount: Amount,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    HoldResized {
        hold_id: Uuid,
        remaining: Decimal,
        /// Change of the wallet's `held`.
        held_delta: Decimal,
    },
    WalletFrozen {
        reason: String,
    },
    WalletUnfrozen {},
    HoldPlaced {
        hold_id: Uuid,
        amount: Amount,
        expires_at: Option<DateTime<Utc>>,
    },
    HoldCaptured {
        currency: Currency,
        hold_id: Uuid,
        capture_id: Uuid,
        amount: Amount,
        /// A fee captured with it into `fees` (purchases).
        fee: Option<Amount>,
        counter_account: SystemAccount,
        balance_after: Decimal,
        hold_remaining: Decimal,
    },
    HoldReleased {
        hold_id: Uuid,
        amount: Decimal,
    },
    HoldExpired {
        hold_id: Uuid,
        amount: Decimal,
    },
    /// CARBON left for the chain (wallet → `chain`); the bridge mints it to `address`.
    ChainWithdrawalRequested {
        currency: Currency,
        withdrawal_id: Uuid,
        amount: Amount,
        address: String,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    /// The mint is final on the chain: the transaction and block that made it.
    ChainWithdrawalMinted {
        currency: Currency,
        withdrawal_id: Uuid,
        amount: Amount,
        tx_hash: String,
        block_number: u64,
    },
    /// The mint provably never happened: `chain` → wallet.
    ChainWithdrawalReturned {
        currency: Currency,
        withdrawal_id: Uuid,
        amount: Amount,
        reason: String,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    /// Tokens bridged in on the chain (`BridgedIn`, transaction and log index): `chain` or
    /// `chain_suspense` → wallet.
    ChainDeposited {
        currency: Currency,
        deposit_id: Uuid,
        amount: Amount,
        tx_hash: String,
        log_index: u64,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
    /// Credits retired for good: wallet → `retired`.
    CreditsRetired {
        currency: Currency,
        retirement_id: Uuid,
        amount: Amount,
        counter_account: SystemAccount,
        balance_after: Decimal,
    },
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> String {
        let name = match self {
            WalletEvent::WalletOpened { .. } => "WalletOpened",
            WalletEvent::Deposited { .. } => "Deposited",
            WalletEvent::WithdrawalRequested { .. } => "WithdrawalRequested",
            WalletEvent::WithdrawalCompleted { .. } => "WithdrawalCompleted",
            WalletEvent::WithdrawalFailed { .. } => "WithdrawalFailed",
            WalletEvent::TransactionReversed { .. } => "TransactionReversed",
            WalletEvent::TransferDebited { .. } => "TransferDebited",
            WalletEvent::TransferCredited { .. } => "TransferCredited",
            WalletEvent::TransferReturned { .. } => "TransferReturned",
            WalletEvent::PurchaseCredited { .. } => "PurchaseCredited",
            WalletEvent::HoldResized { .. } => "HoldResized",
            WalletEvent::WalletFrozen { .. } => "WalletFrozen",
            WalletEvent::WalletUnfrozen { .. } => "WalletUnfrozen",
            WalletEvent::HoldPlaced { .. } => "HoldPlaced",
            WalletEvent::HoldCaptured { .. } => "HoldCaptured",
            WalletEvent::HoldReleased { .. } => "HoldReleased",
            WalletEvent::HoldExpired { .. } => "HoldExpired",
            WalletEvent::ChainWithdrawalRequested { .. } => "ChainWithdrawalRequested",
            WalletEvent::ChainWithdrawalMinted { .. } => "ChainWithdrawalMinted",
            WalletEvent::ChainWithdrawalReturned { .. } => "ChainWithdrawalReturned",
            WalletEvent::ChainDeposited { .. } => "ChainDeposited",
            WalletEvent::CreditsRetired { .. } => "CreditsRetired",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

impl WalletEvent {
    /// The currency this event moves, if it moves money.
    pub fn currency(&self) -> Option<Currency> {
        match self {
            WalletEvent::Deposited { currency, .. }
            | WalletEvent::WithdrawalRequested { currency, .. }
            | WalletEvent::WithdrawalCompleted { currency, .. }
            | WalletEvent::WithdrawalFailed { currency, .. }
            | WalletEvent::TransactionReversed { currency, .. }
            | WalletEvent::TransferDebited { currency, .. }
            | WalletEvent::TransferCredited { currency, .. }
            | WalletEvent::TransferReturned { currency, .. }
            | WalletEvent::PurchaseCredited { currency, .. }
            | WalletEvent::HoldCaptured { currency, .. }
            | WalletEvent::ChainWithdrawalRequested { currency, .. }
            | WalletEvent::ChainWithdrawalMinted { currency, .. }
            | WalletEvent::ChainWithdrawalReturned { currency, .. }
            | WalletEvent::ChainDeposited { currency, .. }
            | WalletEvent::CreditsRetired { currency, .. } => Some(*currency),
            _ => None,
        }
    }

    /// The postings this event records for the wallet `wallet_id` (its stream's id).
    pub fn postings(&self, wallet_id: Uuid) -> Vec<Posting> {
        let Some(currency) = self.currency() else { return vec![] };
        let wallet = Account::Wallet { wallet_id };
        let system = |account: SystemAccount| Account::System { account };
        let posting = |debit, credit, amount: Decimal| Posting { debit, credit, currency, amount };
        match self {
            WalletEvent::Deposited { amount, counter_account, .. }
            | WalletEvent::TransferCredited { amount, counter_account, .. }
            | WalletEvent::TransferReturned { amount, counter_account, .. }
            | WalletEvent::PurchaseCredited { amount, counter_account, .. }
            | WalletEvent::ChainWithdrawalReturned { amount, counter_account, .. }
            | WalletEvent::ChainDeposited { amount, counter_account, .. } => {
                vec![posting(system(*counter_account), wallet, amount.value())]
            }
            WalletEvent::WithdrawalRequested { amount, counter_account, .. }
            | WalletEvent::TransferDebited { amount, counter_account, .. }
            | WalletEvent::ChainWithdrawalRequested { amount, counter_account, .. }
            | WalletEvent::CreditsRetired { amount, counter_account, .. } => {
                vec![posting(wallet, system(*counter_account), amount.value())]
            }
            WalletEvent::HoldCaptured { amount, fee, counter_account, .. } => {
                let mut postings = vec![posting(wallet, system(*counter_account), amount.value())];
                if let Some(fee) = fee {
                    postings.push(posting(wallet, system(SystemAccount::Fees), fee.value()));
                }
                postings
            }
            WalletEvent::WithdrawalCompleted { amount, .. } => {
                vec![posting(system(SystemAccount::Transit), system(SystemAccount::External), amount.value())]
            }
            WalletEvent::WithdrawalFailed { amount, counter_account, .. } => {
                vec![posting(system(*counter_account), wallet, amount.value())]
            }
            WalletEvent::TransactionReversed { amount, direction, counter_account, .. } => match direction {
                ReversalDirection::DebitWallet => {
                    vec![posting(wallet, system(*counter_account), amount.value())]
                }
                ReversalDirection::CreditWallet => {
                    vec![posting(system(*counter_account), wallet, amount.value())]
                }
            },
            WalletEvent::WalletOpened { .. }
            | WalletEvent::WalletFrozen { .. }
            | WalletEvent::WalletUnfrozen { .. }
            | WalletEvent::HoldPlaced { .. }
            | WalletEvent::HoldResized { .. }
            | WalletEvent::HoldReleased { .. }
            | WalletEvent::HoldExpired { .. }
            | WalletEvent::ChainWithdrawalMinted { .. } => vec![],
        }
    }

    /// Change of the wallet's balance this event makes (credits positive).
    pub fn balance_delta(&self, wallet_id: Uuid) -> Decimal {
        let wallet = Account::Wallet { wallet_id };
        self.postings(wallet_id).iter().fold(Decimal::ZERO, |sum, p| {
            if p.credit == wallet {
                sum + p.amount
            } else if p.debit == wallet {
                sum - p.amount
            } else {
                sum
            }
        })
    }
}
