-- Secrets and personal data live outside events, erasable without breaking a chain.

CREATE TABLE credentials (
    user_id         uuid        PRIMARY KEY,
    username_lower  text        NOT NULL UNIQUE,
    password_hash   text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE personal_data (
    user_id       uuid        PRIMARY KEY,
    email         text,
    display_name  text,
    erased_at     timestamptz
);

-- Security audit log: logins, refusals, role changes, rejected commands. Not domain events:
-- nothing is derived from it, and it is kept apart from the ledger's chains.
CREATE TABLE security_audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    kind         text        NOT NULL,
    actor        text,
    subject      text,
    code         text,
    request_id   uuid,
    ip           text,
    details      jsonb       NOT NULL DEFAULT '{}'
);

-- Failed logins per username, for rate limiting across instances.
CREATE TABLE login_failures (
    username_lower  text        NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_by_user ON login_failures (username_lower, failed_at);
