-- Transfers (issue: ledger flows) and the saga table that drives multi-step flows.

-- A transfer has two sides in the history: the sender's `transfer_out`, the receiver's
-- `transfer_in`, under one transaction id.
ALTER TABLE rm_transactions DROP CONSTRAINT rm_transactions_pkey;
ALTER TABLE rm_transactions ADD PRIMARY KEY (transaction_id, wallet_id);

CREATE TABLE rm_transfers (
    transfer_id     uuid        PRIMARY KEY,
    from_wallet_id  uuid        NOT NULL,
    from_user_id    uuid        NOT NULL,
    to_wallet_id    uuid        NOT NULL,
    to_user_id      uuid        NOT NULL,
    currency        text        NOT NULL,
    amount          numeric     NOT NULL,
    status          text        NOT NULL,
    reason          text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    position        bigint      NOT NULL,
    last_position   bigint      NOT NULL
);
CREATE INDEX rm_transfers_from ON rm_transfers (from_user_id, position);
CREATE INDEX rm_transfers_to ON rm_transfers (to_user_id, position);

-- A memo is the sender's free text: it may name people, so it stays out of events and can be
-- erased.
CREATE TABLE transfer_memos (
    transfer_id  uuid PRIMARY KEY,
    memo         text
);

-- Sagas: state in Postgres, driven by a sweeper (competing workers lease due rows with
-- SKIP LOCKED); JetStream or NOTIFY only wake them. Each step is a unit of work whose
-- aggregates make it happen once, whatever the retries.
CREATE TABLE sagas (
    saga_id          uuid        PRIMARY KEY,
    kind             text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    payload          jsonb       NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sagas_due ON sagas (next_attempt_at) WHERE status = 'pending';
