-- The live price stream (issue 5, point 3): every observation that became its feed's latest,
-- by ledger position, so `GET /api/v1/prices/stream` can send what a client missed
-- (`Last-Event-ID`) from here and then follow new rows. Filled by the `prices` projection in
-- the projector's transaction; a replay reproduces it row for row.
CREATE TABLE rm_price_updates (
    position     bigint      PRIMARY KEY,
    feed_id      text        NOT NULL,
    base         text        NOT NULL,
    quote        text        NOT NULL,
    index        text,
    price        numeric     NOT NULL CHECK (price > 0),
    source       text        NOT NULL,
    observed_at  timestamptz NOT NULL
);

-- The latest now breaks a tie of `observed_at` by source priority (projections::prices), and
-- rm_price_updates starts empty: rebuild the prices read models from the events. The live
-- projector finds its checkpoint moved, reloads it and replays the price events.
DELETE FROM rm_prices;
DELETE FROM rm_price_history;
UPDATE projection_checkpoints SET position = 0 WHERE name = 'prices';

-- Candles (`GET /api/v1/prices/{base}/{quote}/history`) scan rm_price_history by feed and
-- `observed_at` range: its primary key (feed_id, observed_at, source) already serves that.
