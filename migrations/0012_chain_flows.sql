-- The chain bridge's work queues and side tables. These are operational state, not read
-- models: each queue row is written in the same transaction as the command that creates the
-- work (the wallet's event), and the bridge's sender works through them. Read models of the
-- chain flows are built from events by projections like every other.

-- A withdrawal to the chain, queued in the transaction of its `ChainWithdrawalRequested`.
-- `state` is the bridge's view of the mint: queued (no nonce yet), submitted (signed, stored,
-- broadcast), mined (in a block, not yet final), final (minted at a final block; the wallet's
-- `ChainWithdrawalMinted` is recorded in the same transaction), returned (provably never
-- minted and credited back, `ChainWithdrawalReturned` in the same transaction).
CREATE TABLE chain_withdrawals (
    withdrawal_id uuid PRIMARY KEY,
    wallet_id uuid NOT NULL,
    user_id uuid NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    -- 20 bytes: the linked address that receives the tokens.
    address bytea NOT NULL CHECK (octet_length(address) = 20),
    requested_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'submitted', 'mined', 'final', 'returned')),
    -- An admin asked to give up: the bridge credits back once the mint provably never happened.
    cancel_requested_at timestamptz,
    -- Where the mint stands on the chain (the latest transaction sent for it).
    signer bytea CHECK (signer IS NULL OR octet_length(signer) = 20),
    nonce bigint CHECK (nonce >= 0),
    tx_hash bytea CHECK (tx_hash IS NULL OR octet_length(tx_hash) = 32),
    block_number bigint,
    reason text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chain_withdrawals_open ON chain_withdrawals (requested_at, withdrawal_id)
    WHERE state IN ('queued', 'submitted', 'mined');
-- Daily limits count what a user (and everyone) withdrew in the last 24 hours.
CREATE INDEX chain_withdrawals_user_day ON chain_withdrawals (user_id, requested_at);
CREATE INDEX chain_withdrawals_day ON chain_withdrawals (requested_at);

-- A retirement's words: who benefits and why. They may name a person, so they stay out of the
-- events (the `CreditsRetired` event carries ids and the amount) and can be erased.
CREATE TABLE retirement_details (
    retirement_id uuid PRIMARY KEY,
    wallet_id uuid NOT NULL,
    user_id uuid NOT NULL,
    beneficiary text NOT NULL,
    reason text NOT NULL,
    consumption_period text,
    country text CHECK (country IS NULL OR country ~ '^[A-Z]{2}$'),
    created_at timestamptz NOT NULL
);
CREATE INDEX retirement_details_beneficiary ON retirement_details (lower(beneficiary));

-- `recordRetirement(id, amount, certHash)` to send for a retirement of credits held in the
-- ledger, queued in the transaction of its `CreditsRetired`; retried until final, never
-- compensated. `cert_hash` is written by the bridge when it builds the transaction (it needs
-- the event's position and hash, known only after commit).
CREATE TABLE chain_retirements (
    retirement_id uuid PRIMARY KEY,
    amount numeric NOT NULL CHECK (amount > 0),
    queued_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'submitted', 'mined', 'final')),
    cert_hash bytea CHECK (cert_hash IS NULL OR octet_length(cert_hash) = 32),
    signer bytea CHECK (signer IS NULL OR octet_length(signer) = 20),
    nonce bigint CHECK (nonce >= 0),
    tx_hash bytea CHECK (tx_hash IS NULL OR octet_length(tx_hash) = 32),
    block_number bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chain_retirements_open ON chain_retirements (queued_at, retirement_id)
    WHERE state IN ('queued', 'submitted', 'mined');

-- Controls an admin sets: pausing refuses new withdrawals in the API and pauses the token on
-- the chain (the bridge sends `pause()`/`unpause()` until the contract agrees).
CREATE TABLE chain_controls (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    paused boolean NOT NULL DEFAULT false,
    changed_by text,
    changed_at timestamptz
);
INSERT INTO chain_controls (singleton, paused) VALUES (true, false);
