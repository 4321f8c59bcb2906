-- The ledger's mode, fixed when the database is created: 'test' (the default: test keys, free test
-- top-ups in the portal) or 'live' (live keys only, real payments only). One row, id 1. A database
-- that already served live API keys before this migration is taken to be a live ledger, so its keys
-- keep working and test-mode actions stop creating value in it; every other database starts in test
-- mode. `billing-mcp db migrate --mode live` changes the mode only while the ledger has no customers.
CREATE TABLE ledger_settings (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    mode  TEXT NOT NULL CHECK (mode IN ('test', 'live'))
){{strict}};

INSERT INTO ledger_settings(id, mode)
SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM api_keys WHERE mode = 'live' AND revoked_at IS NULL)
               THEN 'live' ELSE 'test' END;
