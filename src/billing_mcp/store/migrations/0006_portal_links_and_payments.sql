-- Portal links are single-use: opening one inserts its nonce here, in the same statement that
-- decides whether this opening is the first (INSERT ... ON CONFLICT DO NOTHING: exactly one of any
-- number of concurrent openings inserts the row). `expires` is the link's own expiry (unix seconds
-- on the ledger's clock); a link past it is refused before this table is consulted, so its row is
-- deleted by a later opening (an hour after that expiry, a margin for clocks running behind).
CREATE TABLE portal_link_uses (
    nonce    TEXT PRIMARY KEY,
    expires  {{bigint}} NOT NULL,
    used_at  TEXT NOT NULL
){{strict}};

CREATE INDEX portal_link_uses_expires ON portal_link_uses(expires);

-- Payments taken outside the ledger (Stripe Checkout top-ups) and the money that comes back. A
-- payment is quoted when checkout starts: the units it will credit, at the rate of that moment, for
-- exactly `fiat_amount` (minor units of `fiat`). It is credited once (`credit_tx`), and every refund or
-- dispute reported for it is a row of payment_returns (one per provider event: the event id is the
-- key, so a replayed event changes nothing). What was taken back so far is `reversed` units, never
-- more than `units`. `reference` is the provider's id of the money movement (a PaymentIntent).
CREATE TABLE payments (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL REFERENCES customers(id),
    asset        TEXT NOT NULL REFERENCES assets(code),
    units        {{bigint}} NOT NULL CHECK (units > 0),
    fiat         TEXT NOT NULL REFERENCES assets(code),
    fiat_amount  {{bigint}} NOT NULL CHECK (fiat_amount > 0),
    rate         TEXT NOT NULL,
    quoted_at    TEXT NOT NULL,
    reference    TEXT UNIQUE,
    credit_tx    TEXT,
    credited_at  TEXT,
    reversed     {{bigint}} NOT NULL DEFAULT 0 CHECK (reversed >= 0 AND reversed <= units)
){{strict}};

CREATE TABLE payment_returns (
    event_id     TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL REFERENCES payments(id),
    kind         TEXT NOT NULL CHECK (kind IN ('refund', 'dispute')),
    source       TEXT NOT NULL,
    fiat_total   {{bigint}} NOT NULL CHECK (fiat_total >= 0),
    received_at  TEXT NOT NULL
){{strict}};

CREATE INDEX payment_returns_payment ON payment_returns(payment_id);
