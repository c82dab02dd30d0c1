-- The double-entry journal (DESIGN.md section 3): one row per posting of every wallet event,
-- built by the `journal` projector from event data and metadata time only, so a replay
-- reproduces it row for row. A trial balance at any position sums it up to that position.
--
-- Accounts are text: `wallet:<uuid>` for a user's wallet, `system:<name>` for a per-currency
-- system account (`external`, `transit`, `fees`).

CREATE TABLE rm_postings (
    position        bigint      NOT NULL,
    posting_index   smallint    NOT NULL,  -- the posting's place among its event's postings
    currency        text        NOT NULL,
    debit_account   text        NOT NULL,
    credit_account  text        NOT NULL,
    amount          numeric     NOT NULL CHECK (amount > 0),
    occurred_at     timestamptz NOT NULL,
    -- Also the index for queries by position (trial balance up to N, replays, as_of).
    PRIMARY KEY (position, posting_index),
    CHECK (debit_account <> credit_account)
);
CREATE INDEX rm_postings_debit ON rm_postings (debit_account, position);
CREATE INDEX rm_postings_credit ON rm_postings (credit_account, position);
