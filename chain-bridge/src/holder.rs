//! What a token holder's own wallet software does, for the dev walkthrough and tests: sign a
//! link challenge (EIP-191), read a balance, bridge tokens back into a ledger wallet, retire
//! tokens on the chain. The bridge itself never holds a holder's key. And the one thing an
//! operator does with the cold admin key that the bridge cannot: unpause the token.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use uuid::Uuid;

use crate::bridge::{signing_provider, Url};
use crate::contracts::{uuid_ref, CarbonToken};

/// An EIP-191 (`personal_sign`) signature of `message`: 65 bytes (r, s, v = 27/28) as 0x-hex.
pub fn sign_message(signer: &PrivateKeySigner, message: &str) -> Result<String, alloy::signers::Error> {
    let signature = signer.sign_message_sync(message.as_bytes())?;
    Ok(format!("0x{}", alloy::hex::encode(signature.as_bytes())))
}

/// `balanceOf(holder)` and `totalSupply()` in token units (0.001 tCO2e) at the latest block.
pub async fn balance(
    provider: &DynProvider,
    token: Address,
    holder: Address,
) -> Result<(U256, U256), alloy::contract::Error> {
    let token = CarbonToken::new(token, provider);
    let balance = token.balanceOf(holder).call().await?;
    let supply = token.totalSupply().call().await?;
    Ok((balance, supply))
}

/// What sending a holder's transaction can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("the transaction could not be sent: {0}")]
    Send(#[from] alloy::contract::Error),
    #[error("the transaction was not mined: {0}")]
    Receipt(#[from] alloy::providers::PendingTransactionError),
    #[error("the transaction {0} reverted")]
    Reverted(B256),
}

/// `bridgeIn(units, accountRef)` from the holder: burns the tokens for the ledger wallet
/// `wallet_id`, which the bridge credits once the block is confirmed. Waits for the receipt.
pub async fn bridge_in(
    url: Url,
    holder: PrivateKeySigner,
    token: Address,
    units: U256,
    wallet_id: Uuid,
) -> Result<B256, HolderError> {
    let provider = signing_provider(url, holder);
    let token = CarbonToken::new(token, &provider);
    confirmed(token.bridgeIn(units, uuid_ref(wallet_id)).send().await?).await
}

/// `retire(units, certHash)` from the holder: burns the tokens for good.
pub async fn retire(
    url: Url,
    holder: PrivateKeySigner,
    token: Address,
    units: U256,
    cert_hash: B256,
) -> Result<B256, HolderError> {
    let provider = signing_provider(url, holder);
    let token = CarbonToken::new(token, &provider);
    confirmed(token.retire(units, cert_hash).send().await?).await
}

/// `unpause()` from the admin (cold) key: the token's pauser (the bridge) may pause it, only the
/// admin may let it go again. Waits for the receipt.
pub async fn unpause(url: Url, admin: PrivateKeySigner, token: Address) -> Result<B256, HolderError> {
    let provider = signing_provider(url, admin);
    let token = CarbonToken::new(token, &provider);
    confirmed(token.unpause().send().await?).await
}

async fn confirmed(
    pending: alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
) -> Result<B256, HolderError> {
    let receipt = pending.get_receipt().await?;
    if !receipt.status() {
        return Err(HolderError::Reverted(receipt.transaction_hash));
    }
    Ok(receipt.transaction_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_recovers_to_the_signer() {
        let signer = PrivateKeySigner::random();
        let signature = sign_message(&signer, "link me").unwrap();
        let bytes = alloy::hex::decode(signature.trim_start_matches("0x")).unwrap();
        let signature = alloy::primitives::Signature::try_from(bytes.as_slice()).unwrap();
        assert_eq!(signature.recover_address_from_msg("link me").unwrap(), signer.address());
        assert_ne!(signature.recover_address_from_msg("link you").unwrap(), signer.address());
    }
}
