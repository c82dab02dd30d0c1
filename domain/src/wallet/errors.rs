use crate::money::AmountError;

/// Every rejection a wallet can answer, named after the rule it enforces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("wallet not found")]
    NotFound,
    #[error("wallet already open")]
    AlreadyOpen,
    #[error("the amount's currency differs from the wallet's")]
    CurrencyMismatch,
    #[error("available balance is insufficient")]
    InsufficientFunds,
    #[error("wallet is frozen")]
    Frozen,
    #[error("wallet is already frozen")]
    AlreadyFrozen,
    #[error("wallet is not frozen")]
    NotFrozen,
    #[error("the balance would exceed the ledger's limit")]
    BalanceOverflow,
    #[error("invalid amount: {0}")]
    Amount(AmountError),
    #[error("hold not found")]
    HoldNotFound,
    #[error("a hold with this id already exists")]
    HoldExists,
    #[error("the hold has not expired yet")]
    HoldNotExpired,
    #[error("capture has started on this hold; it cannot expire")]
    HoldCaptureStarted,
    #[error("capture exceeds what the hold still holds")]
    CaptureExceedsHold,
    #[error("a capture with this id exists with a different amount")]
    CaptureExistsWithDifferentAmount,
    #[error("withdrawal not found or already settled")]
    WithdrawalNotFound,
    #[error("a withdrawal with this id already exists")]
    WithdrawalExists,
    #[error("only CARBON moves to and from the chain or is retired")]
    NotCarbon,
    #[error("a chain credit comes from the chain or chain suspense account only")]
    InvalidChainSource,
}

impl WalletError {
    /// The stable machine-readable code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            WalletError::NotFound => "wallet_not_found",
            WalletError::AlreadyOpen => "wallet_already_open",
            WalletError::CurrencyMismatch => "currency_mismatch",
            WalletError::InsufficientFunds => "insufficient_funds",
            WalletError::Frozen => "wallet_frozen",
            WalletError::AlreadyFrozen => "wallet_already_frozen",
            WalletError::NotFrozen => "wallet_not_frozen",
            WalletError::BalanceOverflow => "balance_overflow",
            WalletError::Amount(e) => e.code(),
            WalletError::HoldNotFound => "hold_not_found",
            WalletError::HoldExists => "hold_exists",
            WalletError::HoldNotExpired => "hold_not_expired",
            WalletError::HoldCaptureStarted => "hold_capture_started",
            WalletError::CaptureExceedsHold => "capture_exceeds_hold",
            WalletError::CaptureExistsWithDifferentAmount => "capture_exists_with_different_amount",
            WalletError::WithdrawalNotFound => "withdrawal_not_found",
            WalletError::WithdrawalExists => "withdrawal_exists",
            WalletError::NotCarbon => "currency_not_carbon",
            WalletError::InvalidChainSource => "invalid_chain_source",
        }
    }
}
