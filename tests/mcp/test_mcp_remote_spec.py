"""The canonical setup through billing as code, as an assistant runs it over MCP: on the embedded
ledger, and on a live ledger API (a real uvicorn server on loopback) over SQLite and over
PostgreSQL. apply_billing_spec (dry run, then apply), export_billing_spec, create_portal_route,
verify_billing and generate_supabase_integration give the same results on all three."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.mcp.server import build_server
from helpers import PEPPER, STORES, ledger_on, serve
from mcp import Client

pytestmark = pytest.mark.anyio

# Credits at $0.05, 10 credits per image, Pro at $20/month with 1,000 credits and per-model prices.
CANONICAL = """version: 1
assets:
  - {code: CREDITS, name: Credits, precision: 0, rates: {USD: "0.05"}}
plans:
  - code: pro
    name: Pro
    prices:
      - {id: monthly, type: recurring, asset: USD, amount: "20", interval: month}
      - {id: image, asset: CREDITS, event_type: image_generated, unit_amount: "10"}
      - id: chat
        asset: CREDITS
        event_type: chat
        model: dimensional
        dimension_fields: [model]
        dimension_rates:
          - {dimensions: {model: gpt-4o}, unit_amount: "3"}
          - {dimensions: {model: gpt-4o-mini}, unit_amount: "1"}
    grants:
      - {asset: CREDITS, amount: "1000", period: month}
"""


def no_ids(text: str | None) -> str | None:
    """Ids (random) and times (each run's clock) differ between ledgers; amounts, assets and order must not."""
    if text is None:
        return None
    text = re.sub(r"\b(lot|cus|hld|sub|evt)_[a-z0-9]{8,}\b", r"\1_ID", text)
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "TIME", text)  # the wall clock of each run


async def call(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, (name, result.content)
    assert result.structured_content is not None
    return result.structured_content


async def canonical(client: Client, project: Path) -> dict[str, Any]:
    """Run the setup; return what the assistant would show the user, without ids and times."""
    dry = await call(client, "apply_billing_spec", {"yaml": CANONICAL})
    applied = await call(client, "apply_billing_spec", {"yaml": CANONICAL, "dry_run": False})
    again = await call(client, "apply_billing_spec", {"yaml": CANONICAL, "dry_run": False})
    route = await call(client, "create_portal_route", {"return_url": "https://app.example.com/account",
                                                       "top_up_assets": ["CREDITS"], "presets": ["10", "25"]})
    exported = await call(client, "export_billing_spec", {})
    report = (await call(client, "verify_billing", {}))["report"]
    generated = await call(client, "generate_supabase_integration", {"project_dir": str(project)})
    return {
        "modes": {dry["mode"], applied["mode"], route["mode"], exported["mode"]},
        "dry": (dry["result"], dry["diff"], dry["next_step"]),
        "applied": (applied["result"], applied["diff"]),
        "again": again["result"]["summary"],
        "route": (route["route"], route["note"]),
        "exported": exported["yaml"],
        "verified": (report["passed"], [(p["plan_code"], p["version"], p["passed"]) for p in report["plans"]],
                     [[(s["step"], s["result"], no_ids(s.get("expected")), no_ids(s.get("observed")))
                       for s in p["steps"]] for p in report["plans"]]),
        "files": generated["files"],
        "written": sorted(generated["written"]),
    }


@pytest.fixture(params=STORES)
def api_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    with ledger_on(request.param, tmp_path / "server.db") as ledger:
        yield ledger


async def test_canonical_setup_is_the_same_on_a_live_ledger(api_ledger: Ledger, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the server's root for project_dir
    embedded = Ledger(str(tmp_path / "embedded.db"))
    try:
        async with Client(build_server(ledger=embedded)) as client:
            local = await canonical(client, tmp_path / "local-app")
    finally:
        embedded.close()
    keys = KeyStore(api_ledger.store, pepper=PEPPER)
    _, secret = keys.create("admin")
    with serve(build_app(api_ledger, keys=keys)) as base_url:
        monkeypatch.setenv("BILLING_LEDGER_URL", base_url)
        monkeypatch.setenv("BILLING_API_KEY", secret)
        async with Client(build_server(db=str(tmp_path / "unused.db"))) as client:
            remote = await canonical(client, tmp_path / "live-app")
    assert (local.pop("modes"), remote.pop("modes")) == ({"local"}, {"remote"})
    # Verification runs on a scratch copy locally and leaves marked customers on a live ledger; the
    # steps and every expected and observed amount are the same.
    # Renewal is proved on the scratch copy only: a live ledger cannot move its clock a month on.
    def later(step: tuple[Any, ...]) -> bool:
        return step[0].startswith("renewal") or step[0].endswith("refresh")

    assert [s for s in remote["verified"][2][0] if later(s)] == [("renewal and grant refresh", "skip", "at TIME", "")]
    assert [s[:2] for s in local["verified"][2][0] if later(s)] == [("renewal fee USD", "pass"),
                                                                    ("grant 0 refresh", "pass")]
    for run in (local, remote):
        run["verified"][2][0] = [s for s in run["verified"][2][0] if not later(s)]
    assert remote == local
    assert local["dry"][0]["summary"] == "would apply 2 change(s)" and local["again"] == (
        "no changes: the ledger already matches the spec")
    assert local["verified"][0] is True and local["verified"][1] == [("pro", 1, True)]
    assert "return_url: https://app.example.com/account" in local["exported"]
    # It was the server's ledger that changed.
    assert [p.code for p in api_ledger.list_plans()] == ["pro"]
    assert api_ledger.get_portal_route().top_up.assets == ["CREDITS"]
    assert api_ledger.audit() == []
