-- Carbon-credit listings (announcements) and purchases: read models.

CREATE TABLE rm_listings (
    listing_id      uuid        PRIMARY KEY,
    seller_id       uuid        NOT NULL,
    quantity        numeric     NOT NULL,
    sold            numeric     NOT NULL,
    reserved        numeric     NOT NULL,
    pricing_kind    text        NOT NULL,
    currency        text        NOT NULL,
    unit_price      numeric,
    price_index     text,
    premium_bps     integer,
    min_fill        numeric,
    expires_at      timestamptz NOT NULL,
    project_id      text        NOT NULL,
    registry        text        NOT NULL,
    vintage         integer     NOT NULL,
    serial_range    text,
    status          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    position        bigint      NOT NULL,
    last_position   bigint      NOT NULL
);
CREATE INDEX rm_listings_by_status ON rm_listings (status, position);
CREATE INDEX rm_listings_by_seller ON rm_listings (seller_id, position);

CREATE TABLE rm_purchases (
    purchase_id        uuid        PRIMARY KEY,
    listing_id         uuid        NOT NULL,
    buyer_id           uuid        NOT NULL,
    seller_id          uuid        NOT NULL,
    quantity           numeric     NOT NULL,
    currency           text        NOT NULL,
    unit_price         numeric     NOT NULL,
    price_source       text        NOT NULL,
    price_observed_at  timestamptz NOT NULL,
    subtotal           numeric     NOT NULL,
    fee_bps            integer     NOT NULL,
    fee                numeric     NOT NULL,
    total              numeric     NOT NULL,
    status             text        NOT NULL,
    reason             text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    position           bigint      NOT NULL,
    last_position      bigint      NOT NULL
);
CREATE INDEX rm_purchases_by_listing ON rm_purchases (listing_id, position);
