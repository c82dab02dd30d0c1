-- The chain watcher: where it stands on the chain, the hashes of the blocks it processed, and
-- every on-chain log it recorded (the key that makes a log count once).

-- The last block the watcher processed completely, with its hash: before the next range, the
-- node must still have this hash at this height, or the chain was reorganised deeper than the
-- confirmations and the watcher halts (`halted_at`, `halt_reason`) until an operator clears it.
CREATE TABLE chain_watcher_cursor (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    chain_id bigint NOT NULL,
    block_number bigint NOT NULL CHECK (block_number >= 0),
    block_hash bytea NOT NULL CHECK (octet_length(block_hash) = 32),
    halted_at timestamptz,
    halt_reason text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Hashes of the last processed blocks (a bounded window), for the operator looking into a halt.
CREATE TABLE chain_watcher_blocks (
    block_number bigint PRIMARY KEY,
    block_hash bytea NOT NULL CHECK (octet_length(block_hash) = 32)
);

-- One row per `BridgedIn` or `Retired` log recorded, written in the same transaction as the
-- ledger's event for it; `log_id` is `domain::chain::chain_log_id(chain id, transaction hash,
-- ordinal of the log in its transaction)`, so a log read again is never recorded twice.
CREATE TABLE chain_watcher_logs (
    log_id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('bridged_in', 'retired')),
    -- credited (to a wallet), suspended (chain_suspense), retired (chain -> retired).
    outcome text NOT NULL CHECK (outcome IN ('credited', 'suspended', 'retired')),
    wallet_id uuid,
    block_number bigint NOT NULL,
    block_hash bytea NOT NULL CHECK (octet_length(block_hash) = 32),
    tx_hash bytea NOT NULL CHECK (octet_length(tx_hash) = 32),
    log_index_in_tx integer NOT NULL CHECK (log_index_in_tx >= 0),
    amount numeric NOT NULL CHECK (amount > 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chain_watcher_logs_block ON chain_watcher_logs (block_number);
