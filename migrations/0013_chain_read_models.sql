-- Read models of the chain flows, built by the `chain` projection from events only (time from
-- event metadata, keys from event data: a replay reproduces them row for row), and the
-- one-time challenges an address is linked with (operational state, not a read model).

-- Addresses users proved to hold (`ChainAddressLinked`), lower-case 0x hex.
CREATE TABLE rm_chain_addresses (
    address      text        PRIMARY KEY CHECK (address ~ '^0x[0-9a-f]{40}$'),
    user_id      uuid        NOT NULL,
    usable_from  timestamptz NOT NULL,
    linked_at    timestamptz NOT NULL,
    position     bigint      NOT NULL
);
CREATE INDEX rm_chain_addresses_user ON rm_chain_addresses (user_id, position);

-- Owners of CARBON wallets (from `WalletOpened`), so the chain rows below carry the user
-- without reading another projection's table (projections replay side by side).
CREATE TABLE rm_chain_wallets (
    wallet_id  uuid PRIMARY KEY,
    owner_id   uuid NOT NULL
);

-- Withdrawals to the chain as their owner sees them: pending until the mint is final
-- (completed, with its transaction and block) or the wallet is credited back (failed).
CREATE TABLE rm_chain_withdrawals (
    withdrawal_id  uuid        PRIMARY KEY,
    wallet_id      uuid        NOT NULL,
    user_id        uuid,
    amount         numeric     NOT NULL,
    address        text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    reason         text,
    tx_hash        text,
    block_number   bigint,
    requested_at   timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    position       bigint      NOT NULL,
    last_position  bigint      NOT NULL
);
CREATE INDEX rm_chain_withdrawals_wallet ON rm_chain_withdrawals (wallet_id, position);

-- Retirements of credits held in the ledger (`CreditsRetired`). The event's hash is read from
-- `events` at its position; the words (beneficiary, reason) live in `retirement_details`.
CREATE TABLE rm_retirements (
    retirement_id  uuid        PRIMARY KEY,
    wallet_id      uuid        NOT NULL,
    user_id        uuid,
    amount         numeric     NOT NULL,
    retired_at     timestamptz NOT NULL,
    position       bigint      NOT NULL UNIQUE
);

-- Chain facts without a wallet's own request: deposits bridged in for a known wallet
-- (`deposit`), bridge-ins for an unknown account held in suspense (`suspense`, then resolved
-- to a wallet), and retirements a holder made on the chain (`on_chain_retirement`). The id is
-- the on-chain log's ledger id (`chain_log_id`).
CREATE TABLE rm_chain_movements (
    movement_id    uuid        PRIMARY KEY,
    kind           text        NOT NULL CHECK (kind IN ('deposit', 'suspense', 'on_chain_retirement')),
    status         text        NOT NULL CHECK (status IN ('recorded', 'suspended', 'resolved')),
    amount         numeric     NOT NULL,
    tx_hash        text,
    log_index      bigint,
    account_ref    text,
    holder         text,
    cert_hash      text,
    wallet_id      uuid,
    occurred_at    timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    position       bigint      NOT NULL,
    last_position  bigint      NOT NULL
);
CREATE INDEX rm_chain_movements_open ON rm_chain_movements (kind, status, position);

-- One-time challenges for linking an address (EIP-4361 style): the exact message the user
-- signs, issued to one user, consumed once, refused after `expires_at`.
CREATE TABLE chain_link_challenges (
    nonce        text        PRIMARY KEY,
    user_id      uuid        NOT NULL,
    message      text        NOT NULL,
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    consumed_at  timestamptz
);
CREATE INDEX chain_link_challenges_expiry ON chain_link_challenges (expires_at);

-- Linked addresses on the command side, written in the transaction of `ChainAddressLinked`:
-- a withdrawal checks its address here, never in a read model that may lag.
CREATE TABLE chain_links (
    address      text        PRIMARY KEY CHECK (address ~ '^0x[0-9a-f]{40}$'),
    user_id      uuid        NOT NULL,
    usable_from  timestamptz NOT NULL,
    linked_at    timestamptz NOT NULL
);
CREATE INDEX chain_links_user ON chain_links (user_id);
