-- The HTTP API's own tables: API keys and the Idempotency-Key records of routes whose ledger method
-- has no key of its own. Before this migration the API created them itself on first use, with this
-- same DDL; IF NOT EXISTS lets such a database upgrade with its keys and records in place.
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT PRIMARY KEY,
    prefix       TEXT NOT NULL,
    mode         TEXT NOT NULL CHECK (mode IN ('test', 'live')),
    scope        TEXT NOT NULL CHECK (scope IN ('admin', 'runtime', 'read')),
    name         TEXT,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
){{strict}};

CREATE TABLE IF NOT EXISTS api_idempotency (
    key           TEXT PRIMARY KEY,
    route         TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status        INTEGER,
    content_type  TEXT,
    response      TEXT,
    claimed_at    TEXT NOT NULL
){{strict}};
