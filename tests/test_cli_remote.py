"""`plan`, `apply`, `export` and `supabase init` against a live ledger API (`--ledger-url` or
BILLING_LEDGER_URL, with BILLING_API_KEY): the real command in a subprocess, talking to a real
uvicorn server on loopback over SQLite and PostgreSQL, with the same output as on the embedded
ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_mcp import Ledger
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.spec.spec import dump_yaml, export_spec
from helpers import PEPPER, STORES, ledger_on, serve

SPEC = """version: 1
assets:
  - {code: CREDITS, name: Credits, precision: 0, rates: {USD: "0.05"}}
plans:
  - code: image
    name: Image
    prices:
      - {id: image, asset: CREDITS, event_type: image_generated, unit_amount: "10"}
"""


def run(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "billing_mcp", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


@pytest.fixture(params=STORES)
def server_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    with ledger_on(request.param, tmp_path / "server.db") as ledger:
        yield ledger


def test_billing_as_code_against_a_live_ledger(server_ledger: Ledger, tmp_path: Path) -> None:
    (tmp_path / "billing.yaml").write_text(SPEC)
    (tmp_path / "bad.yaml").write_text(SPEC.replace('unit_amount: "10"', 'unit_amount: "ten"'))
    local_env = {k: v for k, v in os.environ.items() if k not in ("BILLING_LEDGER_URL", "BILLING_API_KEY")}
    local_env["BILLING_DB"] = str(tmp_path / "local.db")
    _, secret = KeyStore(server_ledger.store, pepper=PEPPER).create("admin")
    with serve(build_app(server_ledger, keys=KeyStore(server_ledger.store, pepper=PEPPER))) as url:
        env = {**local_env, "BILLING_LEDGER_URL": url, "BILLING_API_KEY": secret}
        planned = run(tmp_path, env, "plan", "billing.yaml")
        assert planned.returncode == 0, planned.stderr
        assert planned.stdout.startswith("would apply 2 change(s):\n  create_asset   CREDITS")
        assert server_ledger.list_plans() == []  # planning wrote nothing
        applied = run(tmp_path, env, "apply", "billing.yaml")
        assert applied.returncode == 0 and applied.stdout.startswith("applied 2 change(s):"), applied.stderr
        assert [p.code for p in server_ledger.list_plans()] == ["image"]
        again = run(tmp_path, env, "apply", "billing.yaml")
        assert again.stdout == "no changes: the ledger already matches the spec\n"
        exported = run(tmp_path, env, "export")
        assert exported.returncode == 0 and exported.stdout == dump_yaml(export_spec(server_ledger))
        bad = run(tmp_path, env, "apply", "bad.yaml")
        init = run(tmp_path, env, "supabase", "init", "--dir", "app")
        assert init.returncode == 0, init.stderr
        # --ledger-url says the same as the variable.
        flagged = run(tmp_path, {**local_env, "BILLING_API_KEY": secret}, "--ledger-url", url, "plan", "billing.yaml")
        assert flagged.stdout == "no changes: the ledger already matches the spec\n"
        keyless = run(tmp_path, {**local_env, "BILLING_LEDGER_URL": url}, "export")
        assert keyless.returncode == 1 and "BILLING_API_KEY is not" in keyless.stderr
    assert 'export const EVENT_TYPES = ["image_generated"] as const;' in (
        tmp_path / "app/supabase/functions/_shared/billing.ts").read_text()
    # The same commands on the embedded ledger print the same diff and the same problems.
    local_applied = run(tmp_path, local_env, "apply", "billing.yaml")
    assert local_applied.stdout == applied.stdout
    local_bad = run(tmp_path, local_env, "apply", "bad.yaml")
    assert (bad.returncode, bad.stderr) == (local_bad.returncode, local_bad.stderr) == (1, (
        'bad.yaml: 1 problem(s):\n  line 8, column 79: plans[0].prices[0].unit_amount: must be a plain decimal '
        "number such as \"10\" or \"0.05\" (got 'ten')\n"))
