//! Rust bindings of the bridge's contracts, generated at compile time from the committed build
//! JSON (`contracts/build/*.json`, written by `scripts/compile.mjs`): the ABI and the bytecode
//! the bindings deploy are the very ones committed, so Rust and Solidity cannot drift apart.

use alloy::primitives::B256;
use alloy::sol;

/// The EVM version the contracts are compiled for (`settings.evmVersion` of
/// `contracts/standard-input.json`) and the hardfork [`crate::DevChain`] runs anvil with. Anvil
/// 1.7.1 runs `Bpo1` by default, which is Osaka's EVM with other blob parameters; pinning the
/// name keeps a newer anvil from moving the dev chain ahead of the compiled code.
pub const EVM_VERSION: &str = "osaka";

sol!(
    /// CARBON as an ERC-20 (`contracts/CarbonToken.sol`).
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    CarbonToken,
    "contracts/build/CarbonToken.json"
);

sol!(
    /// Staking of CARBON with a minimum lock (`contracts/CarbonStaking.sol`).
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    CarbonStaking,
    "contracts/build/CarbonStaking.json"
);

sol!(
    /// Anchors of the event store's global hash chain (`contracts/LedgerAnchor.sol`).
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    LedgerAnchor,
    "contracts/build/LedgerAnchor.json"
);

/// The on-chain form of a ledger id (a withdrawal's `ref`, a retirement's `id`, a wallet's
/// `accountRef`): the UUID's 16 bytes followed by 16 zero bytes, as the contracts require.
pub fn uuid_ref(id: uuid::Uuid) -> B256 {
    let mut word = [0u8; 32];
    word[..16].copy_from_slice(id.as_bytes());
    B256::from(word)
}

/// The UUID inside an on-chain ref, or `None` when `word` is not laid out as [`uuid_ref`] does.
pub fn ref_uuid(word: B256) -> Option<uuid::Uuid> {
    let (id, zeros) = word.0.split_at(16);
    if zeros.iter().any(|b| *b != 0) || id.iter().all(|b| *b == 0) {
        return None;
    }
    uuid::Uuid::from_slice(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_ref_round_trips_and_other_words_are_not_refs() {
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let word = uuid_ref(id);
        assert_eq!(&word.0[..16], id.as_bytes());
        assert_eq!(&word.0[16..], &[0u8; 16]);
        assert_eq!(ref_uuid(word), Some(id));
        assert_eq!(ref_uuid(B256::ZERO), None);
        assert_eq!(ref_uuid(B256::with_last_byte(1)), None);
    }
}
