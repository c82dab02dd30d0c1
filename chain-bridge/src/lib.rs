//! Chain bridge: CARBON as an ERC-20 on an EVM chain.
//!
//! This is the foundation the bridge stands on: the contracts' Rust bindings (generated from
//! the committed build JSON), a real local dev chain (anvil from npm) and the deployment of the
//! contracts. The bridge's flows (withdrawals, deposits, retirements, anchoring, reconciliation)
//! come on top of it.

pub mod contracts;
pub mod deploy;
pub mod dev_chain;

pub use contracts::{ref_uuid, uuid_ref, CarbonStaking, CarbonToken, LedgerAnchor, EVM_VERSION};
pub use deploy::{deploy, DeployConfig, DeployError, Deployment};
pub use dev_chain::{DevChain, DevChainConfig, DevChainError};
