use chrono::{DateTime, Utc};
use uuid::Uuid;

use rust_decimal::Decimal;

use super::events::ReversalDirection;
use crate::accounts::SystemAccount;
use crate::money::{Amount, Currency};

/// Commands carry everything the wallet needs from outside (times, an original transaction's
/// facts), so handling stays deterministic.
#[derive(Debug, Clone, PartialEq)]
pub enum WalletCommand {
    OpenWallet {
        wallet_id: Uuid,
        owner_id: Uuid,
        currency: Currency,
    },
    /// Money arriving from a payment provider: `external` → wallet.
    Deposit {
        transaction_id: Uuid,
        amount: Amount,
        currency: Currency,
        reference: String,
    },
    /// A payout starts: wallet → `transit`, settled later by complete or fail.
    RequestWithdrawal {
        withdrawal_id: Uuid,
        amount: Amount,
        currency: Currency,
        reference: String,
        destination: String,
    },
    /// The payout provider paid out: `transit` → `external`.
    CompleteWithdrawal {
        withdrawal_id: Uuid,
    },
    /// The payout failed: `transit` → wallet.
    FailWithdrawal {
        withdrawal_id: Uuid,
        reason: String,
    },
    /// A new posting that undoes a settled transaction against `external`.
    Reverse {
        reversal_id: Uuid,
        original_transaction_id: Uuid,
        amount: Amount,
        direction: ReversalDirection,
        reason: String,
    },
    /// First step of a transfer: wallet → `transit`, the balance checked here.
    DebitForTransfer {
        transfer_id: Uuid,
        to_wallet_id: Uuid,
        amount: Amount,
        currency: Currency,
    },
    /// Second step: `transit` → the destination wallet.
    CreditFromTransfer {
        transfer_id: Uuid,
        from_wallet_id: Uuid,
        amount: Amount,
        currency: Currency,
    },
    /// The destination could not be credited: `transit` → back to the source.
    ReturnTransfer {
        transfer_id: Uuid,
        amount: Amount,
        currency: Currency,
        reason: String,
    },
    Freeze {
        reason: String,
    },
    Unfreeze,
    PlaceHold {
        hold_id: Uuid,
        amount: Amount,
        expires_at: Option<DateTime<Utc>>,
    },
    /// Moves part of a hold into `transit`, and an optional fee into `fees`, keyed by
    /// `capture_id` (a purchase id).
    CaptureHold {
        hold_id: Uuid,
        capture_id: Uuid,
        amount: Amount,
        fee: Option<Amount>,
    },
    /// Sets what a hold still holds (a listing's quantity changed); growing it needs funds.
    ResizeHold {
        hold_id: Uuid,
        remaining: Decimal,
    },
    /// A purchase settles: `transit` → this wallet (the seller's proceeds, the buyer's credits).
    CreditPurchase {
        purchase_id: Uuid,
        amount: Amount,
        currency: Currency,
    },
    ReleaseHold {
        hold_id: Uuid,
    },
    /// Expires a hold whose time has come; `now` is carried so replays stay deterministic.
    ExpireHold {
        hold_id: Uuid,
        now: DateTime<Utc>,
    },
    /// CARBON leaves for the chain: wallet → `chain` at once; the bridge mints the tokens.
    WithdrawToChain {
        withdrawal_id: Uuid,
        amount: Amount,
        /// The linked address that receives the tokens (0x-prefixed, lower-case hex).
        address: String,
    },
    /// The mint of a withdrawal is final on the chain; the wallet's balance does not change.
    CompleteChainWithdrawal {
        withdrawal_id: Uuid,
        tx_hash: String,
        block_number: u64,
    },
    /// The mint provably never happened (final block, nonce past it): `chain` → wallet.
    ReturnChainWithdrawal {
        withdrawal_id: Uuid,
        reason: String,
    },
    /// Tokens bridged in on the chain for this wallet: `from` (`chain`, or `chain_suspense`
    /// when an admin resolves a bridge-in for an unknown wallet) → wallet.
    CreditFromChain {
        deposit_id: Uuid,
        amount: Amount,
        from: SystemAccount,
        tx_hash: String,
        log_index: u64,
    },
    /// Credits retired for good: wallet → `retired`.
    Retire {
        retirement_id: Uuid,
        amount: Amount,
    },
}
