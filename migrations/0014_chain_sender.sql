-- The chain bridge's transaction sender (chain-bridge/src/sender): nonces allocated here, every
-- signed transaction stored before it is broadcast, and the anchors sent.

-- One row per hot key that has sent: the next nonce it allocates. A nonce is taken in the
-- same transaction that stores the signed transaction using it, so every allocated nonce has a
-- stored transaction and none is skipped.
CREATE TABLE chain_signers (
    signer bytea PRIMARY KEY CHECK (octet_length(signer) = 20),
    next_nonce bigint NOT NULL CHECK (next_nonce >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (signer, nonce): what it does. `state`: pending (signed and stored, not seen in
-- a block), mined (a receipt of one of its attempts at `block_number`), final (that receipt is
-- still canonical at a final block). `succeeded` is the receipt's status.
CREATE TABLE chain_transactions (
    signer bytea NOT NULL CHECK (octet_length(signer) = 20),
    nonce bigint NOT NULL CHECK (nonce >= 0),
    kind text NOT NULL CHECK (kind IN ('mint', 'record_retirement', 'anchor', 'pause', 'unpause')),
    -- The work it is for: a withdrawal id, a retirement id, an anchored position, or 'token'.
    subject text NOT NULL,
    to_address bytea NOT NULL CHECK (octet_length(to_address) = 20),
    calldata bytea NOT NULL,
    gas_limit bigint NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'mined', 'final')),
    tx_hash bytea CHECK (tx_hash IS NULL OR octet_length(tx_hash) = 32),
    block_number bigint,
    block_hash bytea,
    succeeded boolean,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (signer, nonce)
);
CREATE INDEX chain_transactions_open ON chain_transactions (signer, nonce) WHERE state <> 'final';
CREATE INDEX chain_transactions_subject ON chain_transactions (kind, subject);

-- Every signature of a nonce: the first and each fee bump (same nonce and calldata, higher
-- fees), stored before it is broadcast, so a restart rebroadcasts exactly what may be out there.
CREATE TABLE chain_transaction_attempts (
    signer bytea NOT NULL,
    nonce bigint NOT NULL,
    attempt integer NOT NULL CHECK (attempt >= 0),
    tx_hash bytea NOT NULL UNIQUE CHECK (octet_length(tx_hash) = 32),
    raw bytea NOT NULL,
    max_fee_per_gas numeric NOT NULL,
    max_priority_fee_per_gas numeric NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now(),
    broadcast_at timestamptz,
    PRIMARY KEY (signer, nonce, attempt),
    FOREIGN KEY (signer, nonce) REFERENCES chain_transactions (signer, nonce)
);

-- Global-chain checkpoints anchored on `LedgerAnchor` (each exactly a `chain_checkpoints` row).
CREATE TABLE chain_anchors (
    position bigint PRIMARY KEY,
    head_hash bytea NOT NULL,
    count bigint NOT NULL,
    -- submitted (signed and stored), final (anchored at a final block), refused (reverted: a
    -- position at or above it was anchored already).
    state text NOT NULL DEFAULT 'submitted' CHECK (state IN ('submitted', 'final', 'refused')),
    signer bytea,
    nonce bigint,
    tx_hash bytea,
    block_number bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
