-- The chain the bridge works on, recorded at its first use and compared at every later start:
-- a chain with another id, another genesis block or other contract code is not the ledger's
-- chain (a dev chain restarted without its state has a new genesis), and the bridge refuses to
-- start on it. One row: the ledger bridges to one chain.
CREATE TABLE chain_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    chain_id bigint NOT NULL CHECK (chain_id > 0),
    genesis_hash bytea NOT NULL CHECK (octet_length(genesis_hash) = 32),
    carbon_token_address bytea NOT NULL CHECK (octet_length(carbon_token_address) = 20),
    staking_address bytea NOT NULL CHECK (octet_length(staking_address) = 20),
    anchor_address bytea NOT NULL CHECK (octet_length(anchor_address) = 20),
    -- keccak256 of the code read back from the chain (eth_getCode): the build JSON's
    -- deployedBytecode differs from it where the contract has immutables.
    carbon_token_code_hash bytea NOT NULL CHECK (octet_length(carbon_token_code_hash) = 32),
    staking_code_hash bytea NOT NULL CHECK (octet_length(staking_code_hash) = 32),
    anchor_code_hash bytea NOT NULL CHECK (octet_length(anchor_code_hash) = 32),
    -- The block of the deployment, where a log watcher starts (NULL: not known).
    first_block bigint CHECK (first_block >= 0),
    is_dev_chain boolean NOT NULL,
    -- Only for the dev chain (its port changes at every start, so it is updated then): CLI
    -- commands without ECOLEDGER_ETH_RPC_URL reach the dev chain through it. A real network's
    -- URL may hold an API key and is never stored.
    dev_rpc_url text CHECK (dev_rpc_url IS NULL OR is_dev_chain),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    dev_rpc_url_updated_at timestamptz
);
