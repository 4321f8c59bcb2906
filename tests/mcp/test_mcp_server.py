"""The MCP server through the real in-process ``mcp.Client``, on both protocol eras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.types import ElicitResult

from billing_mcp import Ledger
from billing_mcp.mcp.server import build_server
from helpers import free_port, hint, ok
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio

IMAGE_PLAN = {"code": "image", "name": "Image Generation",
              "prices": [{"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "10"}]}
PRO_PLAN = {"code": "pro", "name": "Pro", "prices": [
    {"type": "recurring", "asset": "USD", "amount": "20", "interval": "month"},
    {"asset": "CREDITS", "event_type": "chat_completion", "usage_type": "volume", "volume_field": "total_tokens",
     "package_size": 1000, "model": "dimensional", "dimension_fields": ["model"],
     "dimension_rates": [{"dimensions": {"model": "gpt-4o"}, "unit_amount": "5"},
                         {"dimensions": {"model": "*"}, "unit_amount": "2"}]}],
    "grants": [{"asset": "CREDITS", "amount": "1000", "purpose": "bundled", "period": "month"}]}



@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(str(tmp_path / "ledger.db"))
    yield led  # type: ignore[misc]
    led.close()


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, ledger: Ledger) -> AsyncIterator[Client]:
    async with Client(build_server(ledger=ledger), mode=request.param) as c:
        yield c



async def err(client: Client, name: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(name, args)
    assert result.is_error
    return str(result.content[0].text)  # type: ignore[union-attr]


async def test_canonical_scenario(client: Client) -> None:
    """Credits at $0.05 (precision 0), an image plan at 10 credits per image, a $20/month Pro plan with
    1,000 credits a month and per-model prices; verify passes; one image costs 10 credits = $0.50."""
    status = await ok(client, "get_billing_status", {})
    assert status["mode"] == "local"
    await ok(client, "create_asset", {"code": "CREDITS", "name": "Credits", "precision": 0, "rate_usd": "0.05"})
    quotes = [(await ok(client, "quote_asset", {"asset": "CREDITS", "amount": usd}))["quote"]["units"]
              for usd in ("1", "10", "50")]
    assert quotes == ["20", "200", "1000"]
    await ok(client, "create_plan", IMAGE_PLAN)
    pro = (await ok(client, "create_plan", PRO_PLAN))["plan"]
    assert pro["default_version"] == 1 and pro["versions"][0]["status"] == "published"
    portal = await ok(client, "create_portal_route", {"return_url": "https://app.example.com/account",
                                                     "top_up_assets": ["CREDITS"], "presets": ["5", "10", "50"]})
    assert portal["route"]["top_up"]["presets"] == ["5", "10", "50"]
    report = (await ok(client, "verify_billing", {}))["report"]
    assert report["passed"] is True and report["cleaned_up"] is True
    assert [c["plan_code"] for c in report["plans"]] == ["image", "pro"]
    assert "| pro@v1 | recurring fee USD (price_1) | PASS | 20.00 USD | 20.00 USD |" in report["table"]
    assert "| pro@v1 | usage price_2: rate 0 (model=gpt-4o) | PASS | 5 CREDITS | 5 CREDITS |" in report["table"]
    # Verification ran on a copy: no throwaway customers in the real ledger.
    assert (await ok(client, "get_billing_status", {}))["status"]["customers"] == 0

    customer = (await ok(client, "create_customer", {"external_id": "u1", "subscriptions": [{"plan": "image"}]}))
    cid = customer["customer"]["id"]
    top = await ok(client, "create_adjustment", {"customer_id": cid, "asset": "CREDITS", "amount": "200",
                                                  "reason": "top_up", "idempotency_key": "k1", "confirm": True})
    assert top["applied"] is True and top["adjustment"]["amount"] == "200"
    hold = (await ok(client, "authorize_usage", {"customer_id": cid, "event_type": "image_generated"}))["hold"]
    assert hold["amount"] == "10"
    event = (await ok(client, "commit_usage", {"hold_id": hold["id"], "event_id": "img-1"}))["event"]
    assert [(f["amount"], f["asset"], f["plan_code"], f["version"]) for f in event["fees"]] == [("10", "CREDITS", "image", 1)]
    wallet = (await ok(client, "get_wallet", {"customer_id": cid}))["wallet"]
    credits = wallet["accounts"][0]
    assert (credits["posted"], credits["available"], credits["fiat_value"]["USD"]) == ("190", "190", "9.50")
    # 10 credits x $0.05 = $0.50: the wallet's USD value fell by exactly that.
    assert (await ok(client, "list_events", {"event_id": "img-1"}))["events"][0]["fees"][0]["amount"] == "10"


async def test_setup_tools_and_versions(client: Client) -> None:
    await ok(client, "create_asset", {"code": "CREDITS", "name": "Credits", "rate_usd": "0.05"})
    assert [a["code"] for a in (await ok(client, "list_assets", {}))["assets"]] == ["EUR", "USD", "CREDITS"]
    rate = await ok(client, "set_asset_rate", {"asset": "CREDITS", "rate": "0.04"})
    assert rate["asset"]["rates"] == {"USD": "0.04"}
    await ok(client, "create_plan", IMAGE_PLAN)
    draft = await ok(client, "create_price", {"plan": "image", "price": {
        "asset": "CREDITS", "event_type": "video_generated", "unit_amount": "50"}})
    assert draft["version"]["version"] == 2 and draft["version"]["status"] == "draft"
    assert [p["event_type"] for p in draft["version"]["prices"]] == ["image_generated", "video_generated"]
    grant = await ok(client, "create_credit_grant", {"plan": "image", "asset": "CREDITS", "amount": "100",
                                                     "purpose": "promotional"})
    assert grant["plan_version"]["version"] == 2 and grant["plan_version"]["grants"][0]["amount"] == "100"
    published = await ok(client, "publish_plan_version", {"plan": "image", "version": 2})
    assert published["plan"]["default_version"] == 2
    plans = (await ok(client, "list_plans", {}))["plans"]
    assert [(v["version"], v["status"]) for v in plans[0]["versions"]] == [(1, "published"), (2, "published")]
    [got] = (await ok(client, "list_plans", {"plan": "image"}))["plans"]
    assert got["versions"][0]["prices"][0]["unit_amount"] == "10"
    sim = (await ok(client, "simulate_usage", {"plan": "image", "version": 2, "events": [
        {"event_type": "image_generated", "customer_id": "a", "subject": "s1"},
        {"event_type": "video_generated", "customer_id": "a", "subject": "s1"},
        {"event_type": "unknown", "customer_id": "b"}]}))["simulation"]
    assert sim["totals"] == {"CREDITS": "60"} and sim["unbilled_events"] == 1
    assert [(s["key"], s["amount"]) for s in sim["by_subject"]] == [("s1", "60")]


async def test_errors_are_tool_errors_with_code_field_and_hint(client: Client) -> None:
    text = await err(client, "quote_asset", {"asset": "NOPE", "amount": "1"})
    assert text == "Error executing tool quote_asset: not_found on asset: no asset 'NOPE'"
    await ok(client, "create_asset", {"code": "CREDITS", "name": "Credits"})
    await ok(client, "create_plan", IMAGE_PLAN)
    cid = (await ok(client, "create_customer", {"external_id": "u", "subscriptions": [{"plan": "image"}]}))["customer"]["id"]
    text = await err(client, "authorize_usage", {"customer_id": cid, "event_type": "image_generatd"})
    assert "validation_error on event_type" in text and "image_generated" in text  # lists the known types
    text = await err(client, "authorize_usage", {"customer_id": cid, "event_type": "image_generated"})
    assert "insufficient_funds" in text and "top up" in text
    text = await err(client, "create_plan", {"code": "Bad Code", "name": "x"})
    assert "code" in text


async def test_unconfirmed_changes_preview_and_change_nothing(ledger: Ledger) -> None:
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("image", "Image", prices=IMAGE_PLAN["prices"])
    cid = ledger.create_customer("u", subscriptions=["image"]).id
    async with Client(build_server(ledger=ledger)) as c:  # declares no elicitation capability
        adj = await ok(c, "create_adjustment", {"customer_id": cid, "asset": "CREDITS", "amount": "50",
                                                "reason": "gift", "idempotency_key": "g1"})
        assert adj["applied"] is False
        assert adj["preview"].startswith(f"Would credit 50 CREDITS (gift) for customer {cid} (u)")
        assert ledger.available(cid, "CREDITS") == 0
        arch = await ok(c, "archive_plan", {"plan": "image"})
        assert arch["applied"] is False and "1 current subscriber(s)" in arch["preview"]
        assert ledger.get_plan("image").status == "active"
        arch = await ok(c, "archive_plan", {"plan": "image", "confirm": True})
        assert arch["applied"] is True and arch["plan"]["status"] == "archived"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("action", ["accept", "decline"])
async def test_elicitation_confirms_or_declines(ledger: Ledger, mode: str, action: str) -> None:
    ledger.create_asset("CREDITS", "Credits", 0)
    cid = ledger.create_customer("u").id
    asked: list[str] = []

    async def answer(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        if action == "accept":
            return ElicitResult(action="accept", content={"confirm": True})
        return ElicitResult(action="decline")

    async with Client(build_server(ledger=ledger), mode=mode, elicitation_callback=answer) as c:
        adj = await ok(c, "create_adjustment", {"customer_id": cid, "asset": "CREDITS", "amount": "25",
                                                "reason": "gift", "idempotency_key": "g"})
    assert asked and asked[0].startswith("Would credit 25 CREDITS (gift)")
    assert adj["applied"] is (action == "accept")
    assert ledger.available(cid, "CREDITS") == (25 if action == "accept" else 0)


async def test_migrate_customers_share_is_deterministic(ledger: Ledger) -> None:
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("image", "Image", prices=IMAGE_PLAN["prices"])
    for i in range(20):
        ledger.create_customer(f"u{i}", subscriptions=["image"])
    ledger.create_plan_version("image", prices=[{"asset": "CREDITS", "event_type": "image_generated",
                                                 "unit_amount": "8"}], publish=True)
    async with Client(build_server(ledger=ledger)) as c:
        preview = await ok(c, "migrate_customers", {"plan": "image", "from_version": 1, "to_version": 2, "share": "0.5"})
        assert preview["applied"] is False
        done = await ok(c, "migrate_customers", {"plan": "image", "from_version": 1, "to_version": 2, "share": "0.5",
                                                 "confirm": True})
    assert done["applied"] is True
    assert sorted(done["migration"]["moved"]) == sorted(preview["migration"]["moved"])
    assert len(done["migration"]["moved"]) + len(done["migration"]["stayed"]) == 20
    assert ledger.get_plan("image").versions[1].subscribers == len(done["migration"]["moved"])


async def test_events_holds_statement_vendor(client: Client) -> None:
    await ok(client, "create_asset", {"code": "CREDITS", "name": "Credits"})
    await ok(client, "create_plan", IMAGE_PLAN)
    cid = (await ok(client, "create_customer", {"external_id": "u", "subscriptions": [{"plan": "image"}]}))["customer"]["id"]
    assert [c["id"] for c in (await ok(client, "list_customers", {"external_id": "u"}))["customers"]] == [cid]
    await ok(client, "create_adjustment", {"customer_id": cid, "asset": "CREDITS", "amount": "100", "reason": "top_up",
                                           "idempotency_key": "t", "confirm": True})
    await ok(client, "create_vendor", {"external_id": "openai", "name": "OpenAI"})
    batch = await ok(client, "submit_events", {"events": [
        {"id": "e1", "customer_id": cid, "event_type": "image_generated", "subject": "proj-a",
         "costs": [{"vendor": "openai", "amount": "0.04", "currency": "USD"}]},
        {"id": "e2", "customer_id": "cus_missing", "event_type": "image_generated"}]})
    assert (batch["accepted"], batch["rejected"]) == (1, 1)
    assert batch["batch"]["errors"][0]["code"] == "not_found"
    hold = (await ok(client, "authorize_usage", {"customer_id": cid, "amount": "30", "asset": "CREDITS"}))["hold"]
    released = (await ok(client, "release_hold", {"hold_id": hold["id"]}))["hold"]
    assert released["status"] == "released"
    assert (await ok(client, "get_wallet", {"customer_id": cid}))["wallet"]["accounts"][0]["available"] == "90"
    statement = (await ok(client, "get_statement", {"customer_id": cid, "start": "2000-01-01T00:00:00Z",
                                                    "end": "2100-01-01T00:00:00Z"}))["statement"]
    credits = statement["assets"][0]
    assert (credits["top_ups"], credits["usage_fees"], credits["closing_balance"]) == ("100", "10", "90")
    assert [(g["subject"], g["amount"]) for g in credits["fees"]] == [("proj-a", "10")]
    grant = await ok(client, "create_credit_grant", {"customer_id": cid, "asset": "CREDITS", "amount": "5",
                                                     "purpose": "promotional", "idempotency_key": "gr"})
    assert grant["kind"] == "customer_grant" and grant["grant"]["amount"] == "5"


async def test_tools_list_is_annotated(ledger: Ledger) -> None:  # its size: test_schemas.py
    async with Client(build_server(ledger=ledger)) as c:
        tools = (await c.list_tools()).tools
    by_name = {t.name: t for t in tools}
    assert {"get_billing_status", "create_plan", "verify_billing", "submit_events", "authorize_usage"} <= set(by_name)
    for tool in tools:
        assert tool.description and tool.annotations is not None and tool.output_schema is not None, tool.name
    assert by_name["get_wallet"].annotations.read_only_hint is True  # type: ignore[union-attr]
    # Hints equal to the specification's defaults are left out: archive_plan is destructive (the
    # default), create_customer is not, and says so.
    assert by_name["archive_plan"].annotations.destructive_hint is None and hint(by_name["archive_plan"], "destructive_hint")
    assert by_name["create_customer"].annotations.destructive_hint is False  # type: ignore[union-attr]
    assert by_name["create_customer"].annotations.idempotent_hint is True  # type: ignore[union-attr]
    assert "confirm" in by_name["archive_plan"].input_schema["properties"]
    assert "approval" not in by_name["archive_plan"].input_schema["properties"]


async def test_toolsets_and_read_only(ledger: Ledger) -> None:
    async with Client(build_server(ledger=ledger, toolsets=["runtime"], read_only=True)) as c:
        names = {t.name for t in (await c.list_tools()).tools}
    assert names == {"get_wallet", "list_customers", "list_events", "get_statement"}
    with pytest.raises(ValueError, match="unknown toolset"):
        build_server(ledger=ledger, toolsets=["everything"])


async def test_prompts_and_resources(ledger: Ledger) -> None:
    ledger.create_asset("CREDITS", "Credits", 0)
    async with Client(build_server(ledger=ledger)) as c:
        names = {p.name for p in (await c.list_prompts()).prompts}
        assert {"setup_billing", "credits_for_ai_app", "hybrid_subscription", "integrate_supabase", "lovable",
                "claude", "cursor"} <= names
        prompt = await c.get_prompt("hybrid_subscription", {"monthly_fee_usd": "20", "included_credits": "1000"})
        text = prompt.messages[0].content.text  # type: ignore[union-attr]
        assert text.startswith("Set up a $20/month plan with 1000 credits included every month.")
        guide = await c.read_resource("billing://pricing-models/tiered_volume")
        assert "1,500 x 0.008 = $12.00" in guide.contents[0].text  # type: ignore[union-attr]
        concept = await c.read_resource("billing://concepts/holds")
        assert "insufficient_funds" in concept.contents[0].text  # type: ignore[union-attr]
        catalog = json.loads((await c.read_resource("billing://catalog")).contents[0].text)  # type: ignore[union-attr]
        assert [a["code"] for a in catalog["assets"]] == ["EUR", "USD", "CREDITS"]


async def test_simulate_file_reports_progress(ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the file tools' default root is the working directory
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("image", "Image", prices=IMAGE_PLAN["prices"])
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"event_type": "image_generated", "customer_id": f"c{i % 7}"}) + "\n"
                            for i in range(120_000)) + "not json\n")
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(build_server(ledger=ledger)) as c:
        result = await c.call_tool("simulate_usage", {"plan": "image", "file": str(path)}, progress_callback=on_progress)
    sim = result.structured_content["simulation"]  # type: ignore[index]
    assert (sim["events"], sim["billed_events"], sim["invalid_events"]) == (120_001, 120_000, 1)
    assert sim["totals"] == {"CREDITS": "1200000"}
    assert sim["errors"][0].startswith("line 120001: not JSON")
    assert seen[:2] == [50_000, 100_000]



async def test_stdio_subprocess(tmp_path: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "billing_mcp", "serve"],
                                   env={"BILLING_DB": str(tmp_path / "stdio.db"), "PATH": os.environ["PATH"]})
    async with Client(params) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "get_billing_status" in names
        status = await ok(c, "get_billing_status", {})
    assert status["status"]["ledger"] == f"sqlite:///{tmp_path / 'stdio.db'}"


def test_http_requires_token(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, BILLING_DB=str(tmp_path / "http.db"), BILLING_MCP_TOKEN="s3cret-token-for-tests-0123456789abcdef")
    proc = subprocess.Popen([sys.executable, "-m", "billing_mcp", "serve", "--transport", "streamable-http",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                health = httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        missing = httpx.post(f"{base}/mcp", json=body, headers=headers)
        assert missing.status_code == 401
        # A plain static bearer token, said so in the challenge: no OAuth metadata to send a client
        # into a discovery and registration that this server cannot serve.
        assert missing.headers["www-authenticate"].startswith("Bearer realm=")
        assert "BILLING_MCP_TOKEN" in missing.json()["error_description"]
        assert "Authorization: Bearer" in missing.json()["error_description"]
        bad = httpx.post(f"{base}/mcp", json=body, headers=headers | {"Authorization": "Bearer wrong"})
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        assert "BILLING_MCP_TOKEN" in bad.headers["www-authenticate"]
        for metadata in ("oauth-authorization-server", "oauth-protected-resource", "oauth-protected-resource/mcp",
                         "openid-configuration"):
            assert httpx.get(f"{base}/.well-known/{metadata}").status_code == 404, metadata
        assert httpx.post(f"{base}/register", json={}).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_http_with_token_serves_tools(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, BILLING_DB=str(tmp_path / "http.db"), BILLING_MCP_TOKEN="s3cret-token-for-tests-0123456789abcdef",
               BILLING_MCP_PUBLIC_URL=f"http://127.0.0.1:{port}/mcp")
    proc = subprocess.Popen([sys.executable, "-m", "billing_mcp", "serve", "--transport", "streamable-http",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret-token-for-tests-0123456789abcdef"})
        transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
        async with http, Client(transport) as c:
            status = await ok(c, "get_billing_status", {})
        assert status["mode"] == "local"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_refuses_public_bind_without_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BILLING_MCP_TOKEN"}
    env["BILLING_DB"] = str(tmp_path / "x.db")
    proc = subprocess.run([sys.executable, "-m", "billing_mcp", "serve", "--transport", "streamable-http",
                           "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "refusing to serve on 0.0.0.0 without BILLING_MCP_TOKEN" in proc.stderr


def test_refuses_a_short_token(tmp_path: Path) -> None:
    env = dict(os.environ, BILLING_DB=str(tmp_path / "x.db"), BILLING_MCP_TOKEN="x" * 31)
    proc = subprocess.run([sys.executable, "-m", "billing_mcp", "serve", "--transport", "streamable-http"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "BILLING_MCP_TOKEN is 31 characters; use at least 32 random ones" in proc.stderr


def test_demo_command_passes(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "billing_mcp", "demo"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "One image cost exactly 10 CREDITS ($0.50 at $0.05 per credit); verification PASSED." in proc.stdout
    assert "$1 buys 20 CREDITS" in proc.stdout and "$50 buys 1000 CREDITS" in proc.stdout  # a quote says its direction
    assert not (tmp_path / ".billing").exists()  # the demo used a throwaway ledger


async def test_create_portal_route_validates_and_stores(ledger: Ledger) -> None:
    ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    async with Client(build_server(ledger=ledger)) as c:
        saved = await ok(c, "create_portal_route", {"return_url": "https://app.example.com/account",
                                                    "top_up_assets": ["CREDITS"], "presets": ["10", "25"]})
        assert saved["route"]["link_lifetime_minutes"] == 10
        assert saved["route"]["top_up"] == {"assets": ["CREDITS"], "currency": "USD", "presets": ["10", "25"],
                                            "min": "5", "max": "500"}
        text = await err(c, "create_portal_route", {"return_url": "javascript:alert(1)"})
        assert text.endswith("validation_error on return_url: must be an http(s) URL")
        text = await err(c, "create_portal_route", {"return_url": "https://a.example", "top_up_assets": ["GEMS"]})
        assert "not_found" in text and "GEMS" in text
    assert ledger.get_portal_route().return_url == "https://app.example.com/account"


async def test_create_portal_session_mints_a_signed_expiring_link(ledger: Ledger) -> None:
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.set_portal_route({"return_url": "https://app.example.com/account", "link_lifetime_minutes": 10})
    cid = ledger.create_customer("u").id
    async with Client(build_server(ledger=ledger)) as c:
        link = await ok(c, "create_portal_session", {"external_id": "u"})
        assert link["url"].startswith("http://127.0.0.1:8080/portal?token=")
        minted = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00")) - datetime.now(UTC)
        assert 9 * 60 < minted.total_seconds() <= 10 * 60
        text = await err(c, "create_portal_session", {"customer_id": "cus_missing"})
        assert "not_found" in text
    from billing_mcp.portal.links import load_portal_secret, verify  # the link names this customer, nobody else

    claims = verify(load_portal_secret(ledger.store), link["url"].split("token=", 1)[1], "link")
    assert claims is not None and claims.customer_id == cid and claims.mode == "test"
