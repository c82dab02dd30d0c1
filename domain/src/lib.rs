//! EcoLedger's domain: money, users and wallets as cqrs-es aggregates.
//!
//! Everything here is deterministic: what an aggregate needs from outside (a time, an original
//! transaction's amount) is carried in the command, so replaying events always rebuilds the same
//! state. Business rules live in `handle`; `apply` only folds an event into state.

pub mod accounts;
pub mod chain;
pub mod listing;
pub mod money;
pub mod price;
pub mod purchase;
pub mod retirement;
pub mod transfer;
pub mod user;
pub mod wallet;

pub use accounts::{Posting, SystemAccount};
pub use money::{Amount, AmountError, Currency};

/// A rejection named after the rule it enforces: its code is the API's error code.
pub trait Rejection {
    fn code(&self) -> &'static str;
}

macro_rules! rejection {
    ($($error:ty),*) => {$(
        impl Rejection for $error {
            fn code(&self) -> &'static str {
                <$error>::code(self)
            }
        }
    )*};
}

rejection!(
    wallet::WalletError,
    user::UserError,
    transfer::TransferError,
    listing::ListingError,
    purchase::PurchaseError,
    chain::ChainMovementError
);

/// The version every event type is written with today. Older versions are upcast on load.
pub const EVENT_VERSION: &str = "1";
