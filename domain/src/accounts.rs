//! Double entry: every movement debits one account and credits another of the same currency.
//!
//! System accounts enforce no limit and are not aggregates: their side of a posting is recorded
//! in the event of the wallet that enforces the rule, and their balances are derived by projection.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemAccount {
    /// Money entering or leaving the platform.
    External,
    /// Money between the steps of a saga or a payout.
    Transit,
    Fees,
    /// CARBON minted on the chain as tokens: debited when a withdrawal to the chain is
    /// accepted, credited back when tokens are bridged in or a withdrawal is returned.
    Chain,
    /// CARBON retired for good: it only ever receives.
    Retired,
    /// Tokens bridged in for a wallet the ledger does not know, until an admin resolves them.
    ChainSuspense,
}

impl SystemAccount {
    pub fn name(self) -> &'static str {
        match self {
            SystemAccount::External => "external",
            SystemAccount::Transit => "transit",
            SystemAccount::Fees => "fees",
            SystemAccount::Chain => "chain",
            SystemAccount::Retired => "retired",
            SystemAccount::ChainSuspense => "chain_suspense",
        }
    }
}

/// One side of the books: a user's wallet or a per-currency system account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Account {
    Wallet { wallet_id: Uuid },
    System { account: SystemAccount },
}

/// A movement of `amount` from `debit` to `credit` in one currency. Balances here follow the
/// liability view of a wallet: crediting a wallet raises its balance, debiting lowers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub debit: Account,
    pub credit: Account,
    pub currency: Currency,
    pub amount: Decimal,
}
