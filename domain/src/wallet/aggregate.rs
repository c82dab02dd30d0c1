use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::WalletCommand;
use super::errors::WalletError;
use super::events::{ReversalDirection, WalletEvent};
use crate::accounts::SystemAccount;
use crate::money::{balance_max, Amount, Currency};

/// Identity of an opened wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletIdentity {
    pub wallet_id: Uuid,
    pub owner_id: Uuid,
    pub currency: Currency,
}

/// An active hold: funds reserved for a purchase, captured in parts keyed by capture id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hold {
    pub remaining: Decimal,
    pub expires_at: Option<DateTime<Utc>>,
    /// Captures made so far (capture id → amount); non-empty means the saga started capturing.
    pub captures: BTreeMap<Uuid, Decimal>,
}

/// Wallet state. Bounded by design: active holds and unsettled withdrawals only, no history,
/// so snapshots stay small however long the stream grows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Wallet {
    pub identity: Option<WalletIdentity>,
    pub balance: Decimal,
    pub held: Decimal,
    pub frozen: bool,
    pub holds: BTreeMap<Uuid, Hold>,
    pub pending_withdrawals: BTreeMap<Uuid, Decimal>,
}

impl Wallet {
    /// What can be spent: the balance less every active hold.
    pub fn available(&self) -> Decimal {
        self.balance - self.held
    }

    fn identity(&self) -> Result<WalletIdentity, WalletError> {
        self.identity.ok_or(WalletError::NotFound)
    }

    fn check_currency(&self, currency: Currency) -> Result<(), WalletError> {
        if self.identity()?.currency != currency {
            return Err(WalletError::CurrencyMismatch);
        }
        Ok(())
    }

    /// Checks a debit of `amount` against freezes and the available balance.
    fn check_debit(&self, amount: Decimal) -> Result<(), WalletError> {
        self.identity()?;
        if self.frozen {
            return Err(WalletError::Frozen);
        }
        if self.available() < amount {
            return Err(WalletError::InsufficientFunds);
        }
        Ok(())
    }

    /// The balance after crediting `amount`, refused beyond the ledger's limit.
    fn credited(&self, amount: Decimal) -> Result<Decimal, WalletError> {
        match self.balance.checked_add(amount) {
            Some(balance) if balance <= balance_max() => Ok(balance),
            _ => Err(WalletError::BalanceOverflow),
        }
    }

    /// The balance after money that was this wallet's comes back (a failed payout). The
    /// balance limit guards inflows; refusing a return would strand the money in `transit`.
    fn returned(&self, amount: Decimal) -> Result<Decimal, WalletError> {
        self.balance.checked_add(amount).ok_or(WalletError::BalanceOverflow)
    }

    fn decide(&self, command: WalletCommand) -> Result<Vec<WalletEvent>, WalletError> {
        match command {
            WalletCommand::OpenWallet { wallet_id, owner_id, currency } => {
                if self.identity.is_some() {
                    return Err(WalletError::AlreadyOpen);
                }
                Ok(vec![WalletEvent::WalletOpened { wallet_id, owner_id, currency }])
            }
            WalletCommand::Deposit { transaction_id, amount, currency, reference } => {
                self.check_currency(currency)?;
                Ok(vec![WalletEvent::Deposited {
                    currency,
                    transaction_id,
                    amount,
                    reference,
                    counter_account: SystemAccount::External,
                    balance_after: self.credited(amount.value())?,
                }])
            }
            WalletCommand::RequestWithdrawal { withdrawal_id, amount, currency, reference, destination } => {
                self.check_currency(currency)?;
                if self.pending_withdrawals.contains_key(&withdrawal_id) {
                    return Err(WalletError::WithdrawalExists);
                }
                self.check_debit(amount.value())?;
                Ok(vec![WalletEvent::WithdrawalRequested {
                    currency,
                    withdrawal_id,
                    amount,
                    reference,
                    destination,
                    counter_account: SystemAccount::Transit,
                    balance_after: self.balance - amount.value(),
                }])
            }
            WalletCommand::CompleteWithdrawal { withdrawal_id } => {
                let amount = self.pending_withdrawal(withdrawal_id)?;
                let currency = self.identity()?.currency;
                Ok(vec![WalletEvent::WithdrawalCompleted { withdrawal_id, currency, amount }])
            }
            WalletCommand::FailWithdrawal { withdrawal_id, reason } => {
                let amount = self.pending_withdrawal(withdrawal_id)?;
                Ok(vec![WalletEvent::WithdrawalFailed {
                    currency: self.identity()?.currency,
                    withdrawal_id,
                    amount,
                    reason,
                    counter_account: SystemAccount::Transit,
                    balance_after: self.returned(amount.value())?,
                }])
            }
            WalletCommand::Reverse { reversal_id, original_transaction_id, amount, direction, reason } => {
                let currency = self.identity()?.currency;
                let balance_after = match direction {
                    // A reversal is an admin correction: it may debit a frozen wallet, but
                    // never below what holds have promised to others.
                    ReversalDirection::DebitWallet => {
                        if self.available() < amount.value() {
                            return Err(WalletError::InsufficientFunds);
                        }
                        self.balance - amount.value()
                    }
                    ReversalDirection::CreditWallet => self.credited(amount.value())?,
                };
                Ok(vec![WalletEvent::TransactionReversed {
                    currency,
                    reversal_id,
                    original_transaction_id,
                    amount,
                    direction,
                    reason,
                    counter_account: SystemAccount::External,
                    balance_after,
                }])
            }
            WalletCommand::DebitForTransfer { transfer_id, to_wallet_id, amount, currency } => {
                self.check_currency(currency)?;
                self.check_debit(amount.value())?;
                Ok(vec![WalletEvent::TransferDebited {
                    currency,
                    transfer_id,
                    to_wallet_id,
                    amount,
                    counter_account: SystemAccount::Transit,
                    balance_after: self.balance - amount.value(),
                }])
            }
            WalletCommand::CreditFromTransfer { transfer_id, from_wallet_id, amount, currency } => {
                self.check_currency(currency)?;
                Ok(vec![WalletEvent::TransferCredited {
                    currency,
                    transfer_id,
                    from_wallet_id,
                    amount,
                    counter_account: SystemAccount::Transit,
                    balance_after: self.credited(amount.value())?,
                }])
            }
            WalletCommand::ReturnTransfer { transfer_id, amount, currency, reason } => {
                self.check_currency(currency)?;
                Ok(vec![WalletEvent::TransferReturned {
                    currency,
                    transfer_id,
                    amount,
                    reason,
                    counter_account: SystemAccount::Transit,
                    balance_after: self.returned(amount.value())?,
                }])
            }
            WalletCommand::Freeze { reason } => {
                self.identity()?;
                if self.frozen {
                    return Err(WalletError::AlreadyFrozen);
                }
                Ok(vec![WalletEvent::WalletFrozen { reason }])
            }
            WalletCommand::Unfreeze => {
                self.identity()?;
                if !self.frozen {
                    return Err(WalletError::NotFrozen);
                }
                Ok(vec![WalletEvent::WalletUnfrozen {}])
            }
            WalletCommand::PlaceHold { hold_id, amount, expires_at } => {
                if self.holds.contains_key(&hold_id) {
                    return Err(WalletError::HoldExists);
                }
                self.check_debit(amount.value())?;
                Ok(vec![WalletEvent::HoldPlaced { hold_id, amount, expires_at }])
            }
            WalletCommand::CaptureHold { hold_id, capture_id, amount, fee } => {
                self.decide_capture(hold_id, capture_id, amount, fee)
            }
            WalletCommand::ResizeHold { hold_id, remaining } => {
                self.identity()?;
                let hold = self.holds.get(&hold_id).ok_or(WalletError::HoldNotFound)?;
                if remaining < Decimal::ZERO {
                    return Err(WalletError::Amount(crate::AmountError::NotPositive));
                }
                let held_delta = remaining - hold.remaining;
                if held_delta > Decimal::ZERO {
                    self.check_debit(held_delta)?;
                }
                Ok(vec![WalletEvent::HoldResized { hold_id, remaining, held_delta }])
            }
            WalletCommand::CreditPurchase { purchase_id, amount, currency } => {
                self.check_currency(currency)?;
                Ok(vec![WalletEvent::PurchaseCredited {
                    currency,
                    purchase_id,
                    amount,
                    counter_account: SystemAccount::Transit,
                    balance_after: self.credited(amount.value())?,
                }])
            }
            WalletCommand::ReleaseHold { hold_id } => {
                self.identity()?;
                let hold = self.holds.get(&hold_id).ok_or(WalletError::HoldNotFound)?;
                Ok(vec![WalletEvent::HoldReleased { hold_id, amount: hold.remaining }])
            }
            WalletCommand::ExpireHold { hold_id, now } => {
                self.identity()?;
                let hold = self.holds.get(&hold_id).ok_or(WalletError::HoldNotFound)?;
                if !hold.captures.is_empty() {
                    return Err(WalletError::HoldCaptureStarted);
                }
                match hold.expires_at {
                    Some(expires_at) if expires_at <= now => {
                        Ok(vec![WalletEvent::HoldExpired { hold_id, amount: hold.remaining }])
                    }
                    _ => Err(WalletError::HoldNotExpired),
                }
            }
            WalletCommand::WithdrawToChain { withdrawal_id, amount, address } => {
                self.check_carbon()?;
                if self.pending_withdrawals.contains_key(&withdrawal_id) {
                    return Err(WalletError::WithdrawalExists);
                }
                self.check_debit(amount.value())?;
                Ok(vec![WalletEvent::ChainWithdrawalRequested {
                    currency: Currency::Carbon,
                    withdrawal_id,
                    amount,
                    address,
                    counter_account: SystemAccount::Chain,
                    balance_after: self.balance - amount.value(),
                }])
            }
            WalletCommand::CompleteChainWithdrawal { withdrawal_id, tx_hash, block_number } => {
                let amount = self.pending_withdrawal(withdrawal_id)?;
                Ok(vec![WalletEvent::ChainWithdrawalMinted {
                    currency: self.identity()?.currency,
                    withdrawal_id,
                    amount,
                    tx_hash,
                    block_number,
                }])
            }
            WalletCommand::ReturnChainWithdrawal { withdrawal_id, reason } => {
                let amount = self.pending_withdrawal(withdrawal_id)?;
                Ok(vec![WalletEvent::ChainWithdrawalReturned {
                    currency: self.identity()?.currency,
                    withdrawal_id,
                    amount,
                    reason,
                    counter_account: SystemAccount::Chain,
                    balance_after: self.returned(amount.value())?,
                }])
            }
            WalletCommand::CreditFromChain { deposit_id, amount, from, tx_hash, log_index } => {
                self.check_carbon()?;
                if !matches!(from, SystemAccount::Chain | SystemAccount::ChainSuspense) {
                    return Err(WalletError::InvalidChainSource);
                }
                Ok(vec![WalletEvent::ChainDeposited {
                    currency: Currency::Carbon,
                    deposit_id,
                    amount,
                    tx_hash,
                    log_index,
                    counter_account: from,
                    balance_after: self.credited(amount.value())?,
                }])
            }
            WalletCommand::Retire { retirement_id, amount } => {
                self.check_carbon()?;
                self.check_debit(amount.value())?;
                Ok(vec![WalletEvent::CreditsRetired {
                    currency: Currency::Carbon,
                    retirement_id,
                    amount,
                    counter_account: SystemAccount::Retired,
                    balance_after: self.balance - amount.value(),
                }])
            }
        }
    }

    /// Only CARBON goes to the chain or is retired.
    fn check_carbon(&self) -> Result<(), WalletError> {
        if self.identity()?.currency != Currency::Carbon {
            return Err(WalletError::NotCarbon);
        }
        Ok(())
    }

    fn pending_withdrawal(&self, withdrawal_id: Uuid) -> Result<Amount, WalletError> {
        let identity = self.identity()?;
        let amount = self.pending_withdrawals.get(&withdrawal_id).ok_or(WalletError::WithdrawalNotFound)?;
        Amount::new(*amount, identity.currency).map_err(WalletError::Amount)
    }

    fn decide_capture(
        &self,
        hold_id: Uuid,
        capture_id: Uuid,
        amount: Amount,
        fee: Option<Amount>,
    ) -> Result<Vec<WalletEvent>, WalletError> {
        let currency = self.identity()?.currency;
        let hold = self.holds.get(&hold_id).ok_or(WalletError::HoldNotFound)?;
        let total = amount.value() + fee.map_or(Decimal::ZERO, Amount::value);
        if let Some(captured) = hold.captures.get(&capture_id) {
            // The same capture again is a no-op; another amount under the same id is a conflict.
            if *captured == total {
                return Ok(vec![]);
            }
            return Err(WalletError::CaptureExistsWithDifferentAmount);
        }
        if self.frozen {
            return Err(WalletError::Frozen);
        }
        if total > hold.remaining {
            return Err(WalletError::CaptureExceedsHold);
        }
        Ok(vec![WalletEvent::HoldCaptured {
            currency,
            hold_id,
            capture_id,
            amount,
            fee,
            counter_account: SystemAccount::Transit,
            balance_after: self.balance - total,
            hold_remaining: hold.remaining - total,
        }])
    }

    fn remove_hold(&mut self, hold_id: &Uuid) {
        if let Some(hold) = self.holds.remove(hold_id) {
            self.held -= hold.remaining;
        }
    }
}

impl Aggregate for Wallet {
    const TYPE: &'static str = "Wallet";
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Error = WalletError;
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
            WalletEvent::WalletOpened { wallet_id, owner_id, currency } => {
                self.identity = Some(WalletIdentity { wallet_id, owner_id, currency });
            }
            WalletEvent::Deposited { balance_after, .. }
            | WalletEvent::TransactionReversed { balance_after, .. }
            | WalletEvent::TransferDebited { balance_after, .. }
            | WalletEvent::TransferCredited { balance_after, .. }
            | WalletEvent::TransferReturned { balance_after, .. }
            | WalletEvent::PurchaseCredited { balance_after, .. }
            | WalletEvent::ChainDeposited { balance_after, .. }
            | WalletEvent::CreditsRetired { balance_after, .. } => {
                self.balance = balance_after;
            }
            WalletEvent::ChainWithdrawalRequested { withdrawal_id, amount, balance_after, .. } => {
                self.balance = balance_after;
                self.pending_withdrawals.insert(withdrawal_id, amount.value());
            }
            WalletEvent::ChainWithdrawalMinted { withdrawal_id, .. } => {
                self.pending_withdrawals.remove(&withdrawal_id);
            }
            WalletEvent::ChainWithdrawalReturned { withdrawal_id, balance_after, .. } => {
                self.balance = balance_after;
                self.pending_withdrawals.remove(&withdrawal_id);
            }
            WalletEvent::WithdrawalRequested { withdrawal_id, amount, balance_after, .. } => {
                self.balance = balance_after;
                self.pending_withdrawals.insert(withdrawal_id, amount.value());
            }
            WalletEvent::WithdrawalCompleted { withdrawal_id, .. } => {
                self.pending_withdrawals.remove(&withdrawal_id);
            }
            WalletEvent::WithdrawalFailed { withdrawal_id, balance_after, .. } => {
                self.balance = balance_after;
                self.pending_withdrawals.remove(&withdrawal_id);
            }
            WalletEvent::HoldResized { hold_id, remaining, held_delta } => {
                self.held += held_delta;
                if let Some(hold) = self.holds.get_mut(&hold_id) {
                    hold.remaining = remaining;
                }
            }
            WalletEvent::WalletFrozen { .. } => self.frozen = true,
            WalletEvent::WalletUnfrozen {} => self.frozen = false,
            WalletEvent::HoldPlaced { hold_id, amount, expires_at } => {
                self.held += amount.value();
                let hold = Hold { remaining: amount.value(), expires_at, captures: BTreeMap::new() };
                self.holds.insert(hold_id, hold);
            }
            WalletEvent::HoldCaptured { hold_id, capture_id, amount, fee, balance_after, hold_remaining, .. } => {
                let total = amount.value() + fee.map_or(Decimal::ZERO, Amount::value);
                self.balance = balance_after;
                self.held -= total;
                // A fully captured hold stays (remaining zero) until released, so a repeated
                // capture still finds its id and answers as a no-op.
                if let Some(hold) = self.holds.get_mut(&hold_id) {
                    hold.remaining = hold_remaining;
                    hold.captures.insert(capture_id, total);
                }
            }
            WalletEvent::HoldReleased { hold_id, .. } | WalletEvent::HoldExpired { hold_id, .. } => {
                self.remove_hold(&hold_id);
            }
        }
    }
}
