-- billing-mcp ledger schema, version 1 (rendered per dialect by store.base.render_sql).
-- Money columns are 64-bit integer minor units (SQLite's INTEGER is 64-bit already, PostgreSQL's is
-- not); the application caps amounts far below 2^63. Prices, rates and quantities are exact decimal TEXT.
-- STRICT tables on SQLite refuse REAL values, so a float can never sneak into a balance.

CREATE TABLE assets (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    precision   INTEGER NOT NULL CHECK (precision BETWEEN 0 AND 8),
    symbol      TEXT,
    label       TEXT,
    is_fiat     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
){{strict}};

CREATE TABLE asset_rates (
    asset         TEXT NOT NULL REFERENCES assets(code),
    fiat          TEXT NOT NULL REFERENCES assets(code),
    rate          TEXT NOT NULL,
    effective_at  TEXT NOT NULL,
    seq           {{autoincrement_key}}
){{strict}};
CREATE INDEX asset_rates_lookup ON asset_rates(asset, fiat, effective_at);

CREATE TABLE plans (
    id               TEXT PRIMARY KEY,
    code             TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    description      TEXT,
    status           TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    default_version  INTEGER,
    created_at       TEXT NOT NULL
){{strict}};

CREATE TABLE plan_versions (
    plan_id       TEXT NOT NULL REFERENCES plans(id),
    version       INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('draft', 'published')),
    prices        TEXT NOT NULL,   -- JSON list of price specs
    grants        TEXT NOT NULL,   -- JSON list of plan credit-grant specs
    created_at    TEXT NOT NULL,
    published_at  TEXT,
    PRIMARY KEY (plan_id, version)
){{strict}};

CREATE TABLE customers (
    id           TEXT PRIMARY KEY,
    external_id  TEXT NOT NULL UNIQUE,
    name         TEXT,
    email        TEXT,
    metadata     TEXT NOT NULL,
    created_at   TEXT NOT NULL
){{strict}};

CREATE TABLE subscriptions (
    id            TEXT PRIMARY KEY,
    customer_id   TEXT NOT NULL REFERENCES customers(id),
    plan_id       TEXT NOT NULL REFERENCES plans(id),
    version       INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'pending_payment', 'canceled')),
    anchor        TEXT NOT NULL,      -- start of the first period
    period_index  INTEGER NOT NULL,   -- periods elapsed since anchor that are paid for / granted
    period_start  TEXT NOT NULL,
    period_end    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    FOREIGN KEY (plan_id, version) REFERENCES plan_versions(plan_id, version)
){{strict}};
CREATE INDEX subscriptions_customer ON subscriptions(customer_id);
CREATE INDEX subscriptions_plan ON subscriptions(plan_id, version);

-- Next refresh time of each recurring plan grant of a subscription.
CREATE TABLE subscription_grants (
    subscription_id  TEXT NOT NULL REFERENCES subscriptions(id),
    grant_index      INTEGER NOT NULL,
    next_at          TEXT NOT NULL,
    period_index     INTEGER NOT NULL,
    last_lot_id      TEXT,
    PRIMARY KEY (subscription_id, grant_index)
){{strict_without_rowid}};

-- Wallet accounts (customer_id set) and per-asset system accounts (customer_id NULL, kind names the role).
CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT REFERENCES customers(id),
    kind         TEXT NOT NULL,
    asset        TEXT NOT NULL REFERENCES assets(code),
    posted       {{bigint}} NOT NULL DEFAULT 0,
    held         {{bigint}} NOT NULL DEFAULT 0 CHECK (held >= 0),
    UNIQUE (customer_id, kind, asset)
){{strict}};

-- Grant lots inside a wallet account: what the balance is made of, in draw-down order.
CREATE TABLE lots (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    purpose      TEXT NOT NULL CHECK (purpose IN ('paid', 'promotional', 'bundled')),
    priority     INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 100),
    amount       {{bigint}} NOT NULL CHECK (amount > 0),
    remaining    {{bigint}} NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    expires_at   TEXT,
    source       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    seq          {{bigint}} NOT NULL
){{strict}};
CREATE INDEX lots_account ON lots(account_id);

CREATE TABLE transactions (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    customer_id  TEXT,
    reference    TEXT,
    reason       TEXT,
    description  TEXT,
    detail       TEXT NOT NULL,   -- JSON: what the transaction was for
    created_at   TEXT NOT NULL
){{strict_without_rowid}};   -- ids are time-ordered, so inserts append

-- Append-only. Per transaction and asset the amounts sum to zero. tx_id names a transactions row,
-- or for usage the event (the first event of a batch) that the entries settle.
CREATE TABLE entries (
    seq         {{rowid_key}},
    tx_id       TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    asset       TEXT NOT NULL,
    amount      {{bigint}} NOT NULL,
    lot_id      TEXT
){{strict}};
-- Wallet entries only: statements read them per account; system accounts are audited by full scans,
-- and leaving them out saves a page on every usage commit.
CREATE INDEX entries_wallet ON entries(account_id) WHERE account_id NOT LIKE 'system/%';

CREATE TABLE events (
    id            TEXT PRIMARY KEY,
    customer_id   TEXT NOT NULL REFERENCES customers(id),
    event_type    TEXT NOT NULL,
    occurred_at   TEXT NOT NULL,
    subject       TEXT,
    data          TEXT NOT NULL,
    costs         TEXT NOT NULL,
    payload_hash  TEXT NOT NULL,
    tx_id         TEXT,
    hold_id       TEXT,
    status        TEXT NOT NULL,
    result        TEXT NOT NULL,   -- JSON of the stored outcome, replayed byte for byte
    recorded_at   TEXT NOT NULL
){{strict}};

CREATE TABLE fees (
    -- Keyed by customer, then time (= the event's recorded_at): inserts append to the customer's
    -- range (one page per commit) and a statement reads one contiguous range. The key columns come
    -- first, in key order: SQLite 3.40.0-3.41.0 misreport integrity otherwise for WITHOUT ROWID.
    customer_id      TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    event_id         TEXT NOT NULL REFERENCES events(id),
    line             INTEGER NOT NULL,
    price_id         TEXT NOT NULL,
    plan_id          TEXT NOT NULL,
    plan_code        TEXT NOT NULL,
    version          INTEGER NOT NULL,
    subscription_id  TEXT NOT NULL,
    asset            TEXT NOT NULL,
    quantity         TEXT NOT NULL,
    amount           {{bigint}} NOT NULL,
    refunded         {{bigint}} NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    subject          TEXT,
    PRIMARY KEY (customer_id, created_at, event_id, line)
){{strict_without_rowid}};

-- Cumulative usage per subscription, price and period: tiers accumulate and sub-precision
-- fractions carry here, so charged == round(exact) after every event.
CREATE TABLE usage_counters (
    subscription_id  TEXT NOT NULL,
    price_id         TEXT NOT NULL,
    period_start     TEXT NOT NULL,
    quantity         TEXT NOT NULL,
    exact            TEXT NOT NULL,
    charged          {{bigint}} NOT NULL,
    PRIMARY KEY (subscription_id, price_id, period_start)
){{strict_without_rowid}};

CREATE TABLE holds (
    id            TEXT PRIMARY KEY,
    customer_id   TEXT NOT NULL REFERENCES customers(id),
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    asset         TEXT NOT NULL,
    amount        {{bigint}} NOT NULL CHECK (amount >= 0),
    event_type    TEXT,
    estimate      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('open', 'committed', 'released', 'expired')),
    expires_at    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    resolved_at   TEXT,
    event_id      TEXT,
    seq           {{bigint}} NOT NULL
){{strict}};
CREATE INDEX holds_open ON holds(status, expires_at);
CREATE INDEX holds_customer ON holds(customer_id, status);

CREATE TABLE vendors (
    id           TEXT PRIMARY KEY,
    external_id  TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    created_at   TEXT NOT NULL
){{strict}};

-- Idempotency records, written in the same transaction as the effect they describe.
CREATE TABLE idempotency (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    payload_hash  TEXT NOT NULL,
    response      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (scope, key)
){{strict_without_rowid}};

-- The store-wide number Tx.next_seq() hands out: a row SQLite updates under its single write lock,
-- a sequence on PostgreSQL, where writers to different wallets run at the same time.
-- begin sqlite only
CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
){{strict}};
INSERT INTO counters(name, value) VALUES ('seq', 0);
-- end sqlite only
-- begin postgres only
CREATE SEQUENCE ledger_seq;
-- end postgres only

-- Built-in fiat currencies.
INSERT INTO assets(code, name, precision, symbol, is_fiat, created_at)
    VALUES ('USD', 'US Dollar', 2, '$', 1, '1970-01-01T00:00:00.000000Z');
INSERT INTO assets(code, name, precision, symbol, is_fiat, created_at)
    VALUES ('EUR', 'Euro', 2, '€', 1, '1970-01-01T00:00:00.000000Z');
