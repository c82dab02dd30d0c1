-- Market prices (issue 3, point 4): the `prices` projector's read models of `PriceObserved`
-- events, one feed per pair and index (`CARBON/EUR/EUA`, `ETH/EUR/-`). Purchases read the
-- PriceFeed aggregate itself; these tables serve queries.

-- The latest observation per feed: replaced only by a strictly newer `observed_at`, as in the
-- aggregate (an older observation is history; a tie keeps the first).
CREATE TABLE rm_prices (
    feed_id      text        PRIMARY KEY,
    base         text        NOT NULL,
    quote        text        NOT NULL,
    index        text,
    price        numeric     NOT NULL CHECK (price > 0),
    source       text        NOT NULL,
    observed_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    position     bigint      NOT NULL
);

-- Every observation recorded.
CREATE TABLE rm_price_history (
    feed_id      text        NOT NULL,
    observed_at  timestamptz NOT NULL,
    source       text        NOT NULL,
    price        numeric     NOT NULL CHECK (price > 0),
    received_at  timestamptz NOT NULL,
    position     bigint      NOT NULL,
    PRIMARY KEY (feed_id, observed_at, source)
);
