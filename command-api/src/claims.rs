//! Kinds of uniqueness claims (DESIGN.md section 4), taken in the command's transaction.

pub const USERNAME: &str = "username";
pub const EMAIL: &str = "email";
pub const DEPOSIT_REFERENCE: &str = "deposit_reference";
pub const WITHDRAWAL_REFERENCE: &str = "withdrawal_reference";
/// One reversal per original transaction.
pub const REVERSAL: &str = "reversal";
/// An Ethereum address links to one user only (lower-case hex).
pub const CHAIN_ADDRESS: &str = "chain_address";
