//! Wallet: one per user and currency. Enforces balances, freezes and holds.

mod aggregate;
mod commands;
mod errors;
mod events;

pub use aggregate::{Hold, Wallet};
pub use commands::WalletCommand;
pub use errors::WalletError;
pub use events::{ReversalDirection, WalletEvent};

use uuid::Uuid;

use crate::money::Currency;

/// Namespace for wallet ids: wallet id = UUIDv5(user id, currency), so each exists once.
pub fn wallet_id(user_id: Uuid, currency: Currency) -> Uuid {
    Uuid::new_v5(&user_id, currency.code().as_bytes())
}
