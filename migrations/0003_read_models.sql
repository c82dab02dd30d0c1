-- Read models, built only by projectors from events (DESIGN.md section 5). Time comes from
-- event metadata and keys from event data, never the clock or a serial: a replay reproduces
-- these tables row for row.

CREATE TABLE rm_users (
    user_id        uuid        PRIMARY KEY,
    username       text        NOT NULL,
    roles          text[]      NOT NULL,
    is_seller      boolean     NOT NULL DEFAULT false,
    is_buyer       boolean     NOT NULL DEFAULT false,
    erased         boolean     NOT NULL DEFAULT false,
    registered_at  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    position       bigint      NOT NULL
);
CREATE UNIQUE INDEX rm_users_username ON rm_users (lower(username));

CREATE TABLE rm_wallets (
    wallet_id   uuid        PRIMARY KEY,
    owner_id    uuid        NOT NULL,
    currency    text        NOT NULL,
    balance     numeric     NOT NULL,
    held        numeric     NOT NULL,
    frozen      boolean     NOT NULL DEFAULT false,
    opened_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    position    bigint      NOT NULL
);
CREATE INDEX rm_wallets_owner ON rm_wallets (owner_id);

-- Statement lines: one per balance-changing event of a wallet.
CREATE TABLE rm_wallet_entries (
    wallet_id       uuid        NOT NULL,
    position        bigint      NOT NULL,
    transaction_id  uuid        NOT NULL,
    kind            text        NOT NULL,
    amount          numeric     NOT NULL,  -- signed: credits positive
    balance_after   numeric     NOT NULL,
    occurred_at     timestamptz NOT NULL,
    PRIMARY KEY (wallet_id, position)
);

CREATE TABLE rm_system_accounts (
    currency  text    NOT NULL,
    account   text    NOT NULL,
    balance   numeric NOT NULL,
    position  bigint  NOT NULL,
    PRIMARY KEY (currency, account)
);

CREATE TABLE rm_transactions (
    transaction_id  uuid        PRIMARY KEY,
    kind            text        NOT NULL,
    wallet_id       uuid        NOT NULL,
    currency        text        NOT NULL,
    amount          numeric     NOT NULL,
    status          text        NOT NULL,
    reference       text,
    destination     text,
    reversal_of     uuid,
    reversed_by     uuid,
    reason          text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    position        bigint      NOT NULL,
    last_position   bigint      NOT NULL
);
CREATE INDEX rm_transactions_wallet ON rm_transactions (wallet_id, position);

CREATE TABLE rm_audit_events (
    position        bigint      PRIMARY KEY,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    actor           text,
    occurred_at     timestamptz NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL
);

-- Command-side index, written in the command's own transaction (a transactional handler):
-- lets complete, fail and reverse find a transaction's wallet and amount without waiting for
-- a projection.
CREATE TABLE transaction_index (
    transaction_id  uuid    PRIMARY KEY,
    wallet_id       uuid    NOT NULL,
    kind            text    NOT NULL,
    currency        text    NOT NULL,
    amount          numeric NOT NULL,
    status          text    NOT NULL
);
