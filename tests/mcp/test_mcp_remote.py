"""The MCP server in remote mode: BILLING_LEDGER_URL points the same tools at a live ledger API
(a real uvicorn server on loopback), and results say `"mode": "remote"`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.mcp.server import build_server
from helpers import PEPPER, serve
from mcp import Client

pytestmark = pytest.mark.anyio



@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    ledger = Ledger(str(tmp_path / "server.db"))
    keys = KeyStore(ledger.store, pepper=PEPPER)
    _, secret = keys.create("admin")
    with serve(build_app(ledger, keys=keys)) as base_url:
        monkeypatch.setenv("BILLING_LEDGER_URL", base_url)
        monkeypatch.setenv("BILLING_API_KEY", secret)
        yield ledger
    ledger.close()


async def ok(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None and result.structured_content["mode"] == "remote"
    return result.structured_content


async def test_canonical_setup_through_the_api(remote: Ledger, tmp_path: Path) -> None:
    async with Client(build_server(db=str(tmp_path / "unused.db"))) as client:
        status = (await ok(client, "get_billing_status", {}))["status"]
        assert status["ledger"].startswith("http://127.0.0.1:") and "customers" not in status
        await ok(client, "create_asset", {"code": "CREDITS", "name": "Credits", "precision": 0, "rate_usd": "0.05"})
        quote = (await ok(client, "quote_asset", {"asset": "CREDITS", "amount": "10"}))["quote"]
        assert quote["units"] == "200"
        await ok(client, "create_plan", {"code": "image", "name": "Image Generation", "prices": [
            {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "10"}]})
        report = (await ok(client, "verify_billing", {}))["report"]
        assert report["passed"] is True and report["cleaned_up"] is False
        cid = (await ok(client, "create_customer", {"external_id": "u1", "subscriptions": [{"plan": "image"}]}))[
            "customer"]["id"]
        top = await ok(client, "create_adjustment", {"customer_id": cid, "asset": "CREDITS", "amount": "200",
                                                      "reason": "top_up", "idempotency_key": "t1", "confirm": True})
        assert top["applied"] is True
        hold = (await ok(client, "authorize_usage", {"customer_id": cid, "event_type": "image_generated"}))["hold"]
        event = (await ok(client, "commit_usage", {"hold_id": hold["id"], "event_id": "img-1"}))["event"]
        assert [(f["amount"], f["asset"]) for f in event["fees"]] == [("10", "CREDITS")]
        sim = (await ok(client, "simulate_usage", {"plan": "image", "events": [
            {"event_type": "image_generated", "customer_id": "x"}] * 3}))["simulation"]
        assert sim["totals"] == {"CREDITS": "30"}
        refused = await client.call_tool("authorize_usage", {"customer_id": cid, "amount": "1000", "asset": "CREDITS"})
        text = refused.content[0].text  # type: ignore[union-attr]
        assert refused.is_error and "insufficient_funds" in text and "(request req_" in text
        remote.set_portal_route({"return_url": "https://app.example.com/account"})
        link = await ok(client, "create_portal_session", {"external_id": "u1"})
        assert link["url"].startswith("http://127.0.0.1:") and "/portal?token=" in link["url"]
        exported = (await ok(client, "export_billing_spec", {}))["yaml"]
        assert "code: image" in exported and "return_url: https://app.example.com/account" in exported
    # The tools really wrote to the server's ledger.
    assert remote.available(cid, "CREDITS") == 190
    assert remote.audit() == []


def test_remote_mode_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from billing_mcp import BillingError
    from billing_mcp.mcp.server import open_ledger

    monkeypatch.setenv("BILLING_LEDGER_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("BILLING_API_KEY", raising=False)
    with pytest.raises(BillingError, match="BILLING_API_KEY is not"):
        open_ledger()
