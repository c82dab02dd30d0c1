//! The chain's identity: what makes a chain "the ledger's chain". Read from the node at every
//! start, recorded in Postgres (`chain_identity`) at the first, and compared afterwards: a chain
//! with another id, another genesis block or other code at the contracts' addresses is not the
//! chain the ledger bridged to (a dev chain restarted without its state has a new genesis), and
//! the bridge refuses to work on it.

use alloy::primitives::{keccak256, Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::BlockNumberOrTag;
use sqlx::{PgPool, Row};

/// The three contracts' addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractAddresses {
    pub carbon_token: Address,
    pub staking: Address,
    pub anchor: Address,
}

impl ContractAddresses {
    fn named(&self) -> [(&'static str, Address); 3] {
        [("CarbonToken", self.carbon_token), ("CarbonStaking", self.staking), ("LedgerAnchor", self.anchor)]
    }
}

/// What identifies a chain and the bridge's contracts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainIdentity {
    pub chain_id: u64,
    pub genesis_hash: B256,
    pub contracts: ContractAddresses,
    /// keccak256 of each contract's code as the node returns it (`eth_getCode`), in the order
    /// token, staking, anchor.
    pub code_hashes: [B256; 3],
}

/// The identity as recorded in Postgres, with what else was recorded alongside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedIdentity {
    pub identity: ChainIdentity,
    pub is_dev_chain: bool,
    /// The dev chain's current RPC URL (never a real network's).
    pub dev_rpc_url: Option<String>,
    pub first_block: Option<u64>,
}

/// What reading, recording or comparing an identity can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("chain RPC call failed: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
    #[error("the chain has no genesis block")]
    NoGenesis,
    #[error("no contract code at {contract}'s address {address}: wrong address, or a chain without the deployment")]
    NoCode { contract: &'static str, address: Address },
    #[error("reading or recording the chain identity in Postgres failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the recorded chain identity is malformed: {0}")]
    Corrupt(String),
    #[error(
        "REFUSING TO START THE BRIDGE: this is not the ledger's chain. {differences}. The ledger recorded chain \
         {recorded_chain_id} (genesis {recorded_genesis}) at its first use; a chain restarted without its state, or \
         another network, is a different chain, and every on-chain fact the ledger relies on would be missing there. \
         Point the bridge at the recorded chain (for the dev chain: keep its state under the data directory), or \
         start over with a fresh database."
    )]
    Mismatch { differences: String, recorded_chain_id: u64, recorded_genesis: B256 },
}

/// keccak256 of empty code: the hash [`read_identity`] gives an address without a contract.
pub fn empty_code_hash() -> B256 {
    keccak256([])
}

/// Reads the identity of the chain behind `provider`, with the code at `contracts` (an address
/// without code hashes to [`empty_code_hash`]).
pub async fn read_identity<P: Provider>(
    provider: &P,
    contracts: ContractAddresses,
) -> Result<ChainIdentity, IdentityError> {
    let chain_id = provider.get_chain_id().await?;
    let genesis_hash = genesis_hash(provider).await?;
    let mut code_hashes = [B256::ZERO; 3];
    for (slot, (_, address)) in code_hashes.iter_mut().zip(contracts.named()) {
        *slot = keccak256(provider.get_code_at(address).await?);
    }
    Ok(ChainIdentity { chain_id, genesis_hash, contracts, code_hashes })
}

/// The genesis block's hash, as block 1 names its parent; block 0's own hash only on a chain
/// that has not mined block 1 yet. Anvil restarted with `--state` makes a new genesis block of
/// its own (timestamped at the restart) next to the loaded one, and `eth_getBlockByNumber(0)`
/// answers either of them from one restart to the next; block 1's parent is the loaded one.
async fn genesis_hash<P: Provider>(provider: &P) -> Result<B256, IdentityError> {
    if let Some(first) = provider.get_block_by_number(BlockNumberOrTag::Number(1)).await? {
        return Ok(first.header.parent_hash);
    }
    let genesis = provider.get_block_by_number(BlockNumberOrTag::Number(0)).await?.ok_or(IdentityError::NoGenesis)?;
    Ok(genesis.header.hash)
}

/// The recorded identity, if the ledger has used a chain before.
pub async fn load_identity(pool: &PgPool) -> Result<Option<RecordedIdentity>, IdentityError> {
    let row = sqlx::query(
        "SELECT chain_id, genesis_hash, carbon_token_address, staking_address, anchor_address, \
                carbon_token_code_hash, staking_code_hash, anchor_code_hash, first_block, is_dev_chain, dev_rpc_url \
           FROM chain_identity",
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let hash = |column: &str| -> Result<B256, IdentityError> {
        let bytes: Vec<u8> = row.get(column);
        B256::try_from(bytes.as_slice()).map_err(|_| IdentityError::Corrupt(format!("{column} is not 32 bytes")))
    };
    let address = |column: &str| -> Result<Address, IdentityError> {
        let bytes: Vec<u8> = row.get(column);
        Address::try_from(bytes.as_slice()).map_err(|_| IdentityError::Corrupt(format!("{column} is not 20 bytes")))
    };
    let chain_id: i64 = row.get("chain_id");
    let first_block: Option<i64> = row.get("first_block");
    Ok(Some(RecordedIdentity {
        identity: ChainIdentity {
            chain_id: u64::try_from(chain_id).map_err(|_| IdentityError::Corrupt("negative chain_id".into()))?,
            genesis_hash: hash("genesis_hash")?,
            contracts: ContractAddresses {
                carbon_token: address("carbon_token_address")?,
                staking: address("staking_address")?,
                anchor: address("anchor_address")?,
            },
            code_hashes: [hash("carbon_token_code_hash")?, hash("staking_code_hash")?, hash("anchor_code_hash")?],
        },
        is_dev_chain: row.get("is_dev_chain"),
        dev_rpc_url: row.get("dev_rpc_url"),
        first_block: first_block.and_then(|b| u64::try_from(b).ok()),
    }))
}

/// Records `current` when no identity is recorded yet, else compares it with the recorded one
/// and fails with [`IdentityError::Mismatch`] naming every difference. On the dev chain the
/// stored RPC URL is brought up to date (its port changes at every start).
///
/// Two processes starting at once on an empty table: the first insert wins and the second
/// compares against it (`ON CONFLICT DO NOTHING`, then a fresh read).
pub async fn record_or_check(pool: &PgPool, current: &RecordedIdentity) -> Result<RecordedIdentity, IdentityError> {
    if load_identity(pool).await?.is_none() {
        // Only a chain that holds the contracts is worth recording.
        for ((contract, address), hash) in
            current.identity.contracts.named().into_iter().zip(current.identity.code_hashes)
        {
            if hash == empty_code_hash() {
                return Err(IdentityError::NoCode { contract, address });
            }
        }
        insert_if_absent(pool, current).await?;
    }
    let recorded = load_identity(pool).await?.ok_or_else(|| IdentityError::Corrupt("the row vanished".into()))?;
    compare(&recorded, current)?;
    if current.is_dev_chain && current.dev_rpc_url != recorded.dev_rpc_url {
        sqlx::query("UPDATE chain_identity SET dev_rpc_url = $1, dev_rpc_url_updated_at = now()")
            .bind(&current.dev_rpc_url)
            .execute(pool)
            .await?;
    }
    Ok(RecordedIdentity { dev_rpc_url: current.dev_rpc_url.clone(), ..recorded })
}

async fn insert_if_absent(pool: &PgPool, current: &RecordedIdentity) -> Result<(), IdentityError> {
    let identity = &current.identity;
    let chain_id = i64::try_from(identity.chain_id).map_err(|_| IdentityError::Corrupt("chain id past i64".into()))?;
    let first_block = current.first_block.and_then(|b| i64::try_from(b).ok());
    sqlx::query(
        "INSERT INTO chain_identity (chain_id, genesis_hash, carbon_token_address, staking_address, anchor_address, \
             carbon_token_code_hash, staking_code_hash, anchor_code_hash, first_block, is_dev_chain, dev_rpc_url, \
             dev_rpc_url_updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, CASE WHEN $11 IS NULL THEN NULL ELSE now() END) \
         ON CONFLICT (singleton) DO NOTHING",
    )
    .bind(chain_id)
    .bind(identity.genesis_hash.as_slice())
    .bind(identity.contracts.carbon_token.as_slice())
    .bind(identity.contracts.staking.as_slice())
    .bind(identity.contracts.anchor.as_slice())
    .bind(identity.code_hashes[0].as_slice())
    .bind(identity.code_hashes[1].as_slice())
    .bind(identity.code_hashes[2].as_slice())
    .bind(first_block)
    .bind(current.is_dev_chain)
    .bind(current.dev_rpc_url.as_deref().filter(|_| current.is_dev_chain))
    .execute(pool)
    .await?;
    Ok(())
}

/// Fails with [`IdentityError::Mismatch`] naming every way `current` is not the `recorded`
/// chain.
pub fn compare(recorded: &RecordedIdentity, current: &RecordedIdentity) -> Result<(), IdentityError> {
    let differences = differences(recorded, current);
    if differences.is_empty() {
        return Ok(());
    }
    Err(IdentityError::Mismatch {
        differences: differences.join("; "),
        recorded_chain_id: recorded.identity.chain_id,
        recorded_genesis: recorded.identity.genesis_hash,
    })
}

/// Every way `current` is not the `recorded` chain, in words.
fn differences(recorded: &RecordedIdentity, current: &RecordedIdentity) -> Vec<String> {
    let (was, now) = (&recorded.identity, &current.identity);
    let mut found = Vec::new();
    if was.chain_id != now.chain_id {
        found.push(format!("chain id is {}, recorded {}", now.chain_id, was.chain_id));
    }
    if was.genesis_hash != now.genesis_hash {
        found.push(format!("genesis block hash is {}, recorded {}", now.genesis_hash, was.genesis_hash));
    }
    if recorded.is_dev_chain != current.is_dev_chain {
        let name = |dev: bool| if dev { "the dev chain" } else { "a chain at ECOLEDGER_ETH_RPC_URL" };
        found.push(format!("configured for {}, recorded {}", name(current.is_dev_chain), name(recorded.is_dev_chain)));
    }
    for (((contract, was_address), (_, now_address)), (was_hash, now_hash)) in was
        .contracts
        .named()
        .into_iter()
        .zip(now.contracts.named())
        .zip(was.code_hashes.iter().zip(now.code_hashes.iter()))
    {
        if was_address != now_address {
            found.push(format!("{contract} is configured at {now_address}, recorded at {was_address}"));
        } else if *now_hash == empty_code_hash() {
            found.push(format!("no {contract} code at {now_address}"));
        } else if was_hash != now_hash {
            found.push(format!("{contract}'s code at {now_address} hashes to {now_hash}, recorded {was_hash}"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> RecordedIdentity {
        RecordedIdentity {
            identity: ChainIdentity {
                chain_id: 31337,
                genesis_hash: B256::repeat_byte(1),
                contracts: ContractAddresses {
                    carbon_token: Address::repeat_byte(0x11),
                    staking: Address::repeat_byte(0x22),
                    anchor: Address::repeat_byte(0x33),
                },
                code_hashes: [B256::repeat_byte(0xa), B256::repeat_byte(0xb), B256::repeat_byte(0xc)],
            },
            is_dev_chain: true,
            dev_rpc_url: Some("http://127.0.0.1:1".into()),
            first_block: Some(1),
        }
    }

    #[test]
    fn every_difference_but_the_dev_rpc_url_is_a_different_chain() {
        type Change = fn(&mut RecordedIdentity);
        let cases: &[(&str, Change, Option<&str>)] = &[
            ("same chain", |_| {}, None),
            ("new dev port", |c| c.dev_rpc_url = Some("http://127.0.0.1:2".into()), None),
            ("chain id", |c| c.identity.chain_id = 1, Some("chain id is 1, recorded 31337")),
            ("genesis", |c| c.identity.genesis_hash = B256::repeat_byte(2), Some("genesis block hash is")),
            ("token code", |c| c.identity.code_hashes[0] = B256::repeat_byte(0xf), Some("CarbonToken's code at")),
            ("no anchor code", |c| c.identity.code_hashes[2] = empty_code_hash(), Some("no LedgerAnchor code")),
            ("staking moved", |c| c.identity.contracts.staking = Address::ZERO, Some("CarbonStaking is configured at")),
            ("not the dev chain", |c| c.is_dev_chain = false, Some("configured for a chain at ECOLEDGER_ETH_RPC_URL")),
        ];
        for (name, change, expected) in cases {
            let mut current = recorded();
            change(&mut current);
            match (compare(&recorded(), &current), expected) {
                (Ok(()), None) => {}
                (Err(error), Some(text)) => assert!(error.to_string().contains(text), "{name}: {error}"),
                (outcome, _) => panic!("{name}: {outcome:?}"),
            }
        }
    }
}
