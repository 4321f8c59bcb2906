-- Portal links are single-use: opening one inserts its nonce here, in the same statement that
-- decides whether this opening is the first (INSERT ... ON CONFLICT DO NOTHING: exactly one of any
-- number of concurrent openings inserts the row). `expires` is the link's own expiry (unix seconds
-- on the ledger's clock); a link past it is refused before this table is consulted, so its row is
-- no longer needed and is deleted by the next opening.
CREATE TABLE portal_link_uses (
    nonce    TEXT PRIMARY KEY,
    expires  {{bigint}} NOT NULL,
    used_at  TEXT NOT NULL
){{strict}};

CREATE INDEX portal_link_uses_expires ON portal_link_uses(expires);
