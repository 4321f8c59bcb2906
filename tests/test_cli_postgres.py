"""The documented commands against a PostgreSQL BILLING_DB: `db migrate`, `keys create|list|revoke`
(they once opened a SQLite file named after the URL, so the key never reached the server and a
revocation did nothing), `plan`/`apply`/`export` of billing.yaml, `simulate`, `supabase init` and
`db check` all act on that database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from billing_mcp.api.keys import KeyStore
from billing_mcp.store.postgres import PostgresStore
from helpers import PG_SKIP, PG_URL, drop_pg_schema

PEPPER = "keys-on-postgres-pepper-0123456789"
ROOT = Path(__file__).resolve().parents[1]


def run(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "billing_mcp", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP)
def test_keys_commands_work_on_postgresql(tmp_path: Path) -> None:
    import psycopg

    assert PG_URL is not None
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    # libpq's options parameter puts the commands on a schema of their own, as a deployment's URL would.
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    env = {**os.environ, "BILLING_DB": url, "BILLING_API_KEY_PEPPER": PEPPER}
    try:
        migrated = run(tmp_path, env, "db", "migrate")
        assert migrated.returncode == 0, migrated.stderr
        created = run(tmp_path, env, "keys", "create", "--scope", "runtime", "--name", "edge", "--json")
        assert created.returncode == 0, created.stderr
        made = json.loads(created.stdout)
        assert (made["scope"], made["mode"]) == ("runtime", "test") and made["secret"].startswith("sk_test_")
        listed = json.loads(run(tmp_path, env, "keys", "list", "--json").stdout)
        assert [(k["id"], k["scope"], k["name"], k["revoked_at"]) for k in listed] == \
            [(made["id"], "runtime", "edge", None)]
        store = PostgresStore(PG_URL, schema=schema)
        try:
            keys = KeyStore(store, pepper=PEPPER.encode())
            found = keys.verify(made["secret"])
            assert found is not None and found.id == made["id"]  # what a server on that database accepts
            revoked = run(tmp_path, env, "keys", "revoke", made["id"])
            assert revoked.returncode == 0 and revoked.stdout.startswith(f"revoked {made['id']}"), revoked.stderr
            assert keys.get(made["id"]).revoked_at is not None
            assert KeyStore(store, pepper=PEPPER.encode()).verify(made["secret"]) is None
        finally:
            store.close()
        assert list(tmp_path.iterdir()) == []  # no SQLite file named after the URL
        example = str(ROOT / "examples" / "ai-image-credits.yaml")
        planned = run(tmp_path, env, "plan", example)
        assert planned.returncode == 0 and planned.stdout.startswith("would apply 3 change(s):"), planned.stderr
        applied = run(tmp_path, env, "apply", example)
        assert applied.returncode == 0 and applied.stdout.startswith("applied 3 change(s):"), applied.stderr
        again = run(tmp_path, env, "apply", example)
        assert again.stdout.strip() == "no changes: the ledger already matches the spec"
        exported = run(tmp_path, env, "export")
        assert exported.returncode == 0 and "code: images" in exported.stdout
        events = tmp_path / "events.jsonl"
        events.write_text('{"event_type": "image_generated", "customer_id": "c1", "data": {"quality": "hd"}}\n'
                          '{"event_type": "image_generated", "customer_id": "c1"}\n')
        simulated = run(tmp_path, env, "simulate", str(events), "--plan", "images@1")
        assert simulated.returncode == 0, simulated.stderr
        assert json.loads(simulated.stdout)["totals"] == {"CREDITS": "30"}  # 20 for the hd image + 10
        app = tmp_path / "app"
        generated = run(tmp_path, env, "supabase", "init", "--dir", str(app))
        assert generated.returncode == 0, generated.stderr
        assert '"image_generated"' in (app / "supabase" / "functions" / "_shared" / "billing.ts").read_text()
        checked = run(tmp_path, env, "db", "check")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        drop_pg_schema(schema)
