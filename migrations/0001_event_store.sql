-- The event store: the source of truth and the outbox. See DESIGN.md section 2.

-- Global positions. CACHE 1 so positions come out in allocation order across sessions; they
-- are handed out by ledger_allocate_positions() only, see there.
CREATE SEQUENCE event_position_seq AS bigint START 1 CACHE 1;

CREATE TABLE events (
    position        bigint PRIMARY KEY,
    aggregate_type  text   NOT NULL,
    aggregate_id    text   NOT NULL,
    sequence        bigint NOT NULL CHECK (sequence > 0),
    event_type      text   NOT NULL,
    event_version   text   NOT NULL,
    -- RFC 8785 canonical JSON of stream, sequence, position, type, version, payload and
    -- metadata, stored exactly as hashed (jsonb would reorder keys and rewrite numbers).
    canonical       text   NOT NULL,
    prev_hash       bytea  NOT NULL,
    hash            bytea  NOT NULL,
    -- The writing transaction: readers by position stay below the commit-safe horizon.
    xact_id         xid8   NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (aggregate_type, aggregate_id, sequence)
);

-- Events are never updated or deleted.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Hands out n positions and the transaction's id under a short lock, as the transaction's
-- first write. That makes positions increase with transaction ids: every event of a
-- transaction older than the snapshot's xmin precedes, by position, every event of a
-- transaction still running, so "position > last AND xact_id < xmin" never skips a row that
-- commits later. The lock covers two cheap calls, not the commit.
CREATE FUNCTION ledger_allocate_positions(n integer) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    allocated bigint[];
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'positions must be allocated by the first write of a transaction';
    END IF;
    PERFORM pg_advisory_lock(72560, 1);
    BEGIN
        PERFORM pg_current_xact_id();
        SELECT array_agg(nextval('event_position_seq') ORDER BY i) INTO allocated
            FROM generate_series(1, n) AS i;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_advisory_unlock(72560, 1);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(72560, 1);
    RETURN allocated;
END $$;

CREATE TABLE snapshots (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    schema_version  integer     NOT NULL,
    last_sequence   bigint      NOT NULL,
    head_hash       bytea       NOT NULL,
    state           jsonb       NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Idempotency: the outcome of every command that carried a command id, rejections included.
CREATE TABLE command_outcomes (
    command_id    uuid        PRIMARY KEY,
    request_hash  bytea       NOT NULL,
    status        smallint    NOT NULL,
    body          jsonb       NOT NULL,
    location      text,
    position      bigint,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX command_outcomes_created_at ON command_outcomes (created_at);

-- Uniqueness claimed in the same transaction as the command that needs it.
CREATE TABLE claims (
    kind        text        NOT NULL,
    value       text        NOT NULL,
    owner       text        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);

-- The single active relay's progress and the global hash chain over events in position order.
CREATE TABLE relay_state (
    id                  smallint    PRIMARY KEY CHECK (id = 1),
    published_position  bigint      NOT NULL,
    global_hash         bytea       NOT NULL,
    global_count        bigint      NOT NULL,
    updated_at          timestamptz NOT NULL
);
INSERT INTO relay_state VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0, now());

CREATE TABLE chain_checkpoints (
    position    bigint      PRIMARY KEY,
    head_hash   bytea       NOT NULL,
    count       bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projection_checkpoints (
    name      text   PRIMARY KEY,
    position  bigint NOT NULL
);
