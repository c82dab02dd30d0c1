//! Chain bridge: CARBON as an ERC-20 on an EVM chain.
//!
//! This is the foundation the bridge stands on: the contracts' Rust bindings (generated from
//! the committed build JSON), a real local dev chain (anvil from npm) and the deployment of the
//! contracts. The bridge's flows (withdrawals, deposits, retirements, anchoring, reconciliation)
//! come on top of it.

pub mod bridge;
pub mod contracts;
pub mod deploy;
pub mod dev_chain;
pub mod holder;
pub mod identity;
pub mod reconcile;
pub mod sender;
pub mod verify_anchors;
pub mod watcher;

pub use bridge::{Bridge, BridgeConfig, BridgeError, ChainInfo, Network};
pub use contracts::{ref_uuid, uuid_ref, CarbonStaking, CarbonToken, LedgerAnchor, EVM_VERSION};
pub use deploy::{deploy, DeployConfig, DeployError, Deployment};
pub use dev_chain::{DevChain, DevChainConfig, DevChainError};
pub use identity::{ChainIdentity, ContractAddresses, IdentityError, RecordedIdentity};
