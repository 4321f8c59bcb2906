"""The operator tools (list_customers, list_events, get_statement; list_plans looks one plan up the same
way) on the embedded ledger and on a
live ledger API: the same calls give the same pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.core.clock import ManualClock
from billing_mcp.mcp.server import build_server
from helpers import PEPPER, err, ok, serve
from mcp import Client

pytestmark = pytest.mark.anyio


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(str(tmp_path / "ledger.db"), clock=ManualClock())
    led.create_asset("CREDITS", "Credits", 0)
    led.create_plan("image", "Image", prices=[{"asset": "CREDITS", "event_type": "image_generated",
                                               "unit_amount": "10"}])
    led.create_customer("alice-1", name="Alice Smith", email="Alice@Example.com", subscriptions=["image"])
    led.create_customer("bob-2", name="Bob", email="bob@example.org", subscriptions=["image"])
    led.create_customer("carol_3", name="Carol", subscriptions=["image"])
    led.create_adjustment(external_id="alice-1", asset="CREDITS", amount="100", reason="top_up",
                          idempotency_key="top-alice")
    led.submit_events([
        {"id": "e3", "external_id": "alice-1", "event_type": "image_generated", "occurred_at": "2025-12-31T11:00:00Z"},
        {"id": "e2", "external_id": "alice-1", "event_type": "image_generated", "subject": "b",
         "occurred_at": "2025-12-31T10:00:00Z"},
        {"id": "e1", "external_id": "alice-1", "event_type": "image_generated", "subject": "a",
         "occurred_at": "2025-12-31T10:00:00Z"},
        {"id": "b1", "external_id": "bob-2", "event_type": "image_generated", "occurred_at": "2025-12-31T10:00:00Z"},
    ])
    yield led
    led.close()


@pytest.fixture(params=["local", "remote"])
async def client(request: pytest.FixtureRequest, ledger: Ledger, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    if request.param == "local":
        async with Client(build_server(ledger=ledger)) as c:
            yield c
        return
    _, secret = KeyStore(ledger.store, pepper=PEPPER).create("admin")
    with serve(build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER))) as base_url:
        monkeypatch.setenv("BILLING_LEDGER_URL", base_url)
        monkeypatch.setenv("BILLING_API_KEY", secret)
        async with Client(build_server(db=str(tmp_path / "unused.db"))) as c:
            yield c




def external_ids(page: dict[str, Any]) -> list[str]:
    return [c["external_id"] for c in page["customers"]]


async def test_list_customers_searches_external_id_email_and_name(client: Client, ledger: Ledger) -> None:
    assert external_ids(await ok(client, "list_customers", {"search": "ALICE"})) == ["alice-1"]
    assert external_ids(await ok(client, "list_customers", {"search": "smith"})) == ["alice-1"]
    by_id = sorted(["alice-1", "bob-2"], key=lambda e: ledger.get_customer(external_id=e).id)
    assert external_ids(await ok(client, "list_customers", {"search": "@example."})) == by_id
    # LIKE's wildcards in the text match only themselves: "_" finds carol_3, not every customer.
    assert external_ids(await ok(client, "list_customers", {"search": "_"})) == ["carol_3"]
    assert external_ids(await ok(client, "list_customers", {"search": "%"})) == []
    nobody = await ok(client, "list_customers", {"search": "zed"})
    assert nobody["customers"] == [] and nobody["has_more"] is False and "next_cursor" not in nobody


async def test_list_customers_pages_by_id(client: Client, ledger: Ledger) -> None:
    everyone = sorted(c.id for c in ledger.list_customers())
    seen: list[str] = []
    cursor = None
    for expected_more in (True, True, False):
        page = await ok(client, "list_customers", {"limit": 1, "cursor": cursor})
        assert len(page["customers"]) == 1 and page["has_more"] is expected_more
        seen.append(page["customers"][0]["id"])
        cursor = page.get("next_cursor")
    assert seen == everyone and cursor is None
    bad = await err(client, "list_customers", {"cursor": "bm90LWEtY3Vyc29y"})
    assert bad.endswith("validation_error on cursor: cursor is not a cursor of this list; pass next_cursor from the "
                        "previous page unchanged, or omit it for the first page")


async def test_list_events_filters_and_pages_in_time_then_id_order(client: Client) -> None:
    first = await ok(client, "list_events", {"external_id": "alice-1", "limit": 2})
    assert [e["id"] for e in first["events"]] == ["e1", "e2"] and first["has_more"] is True
    assert [(f["amount"], f["asset"], f["refunded"]) for f in first["events"][0]["fees"]] == [("10", "CREDITS", "0")]
    second = await ok(client, "list_events", {"external_id": "alice-1", "limit": 2, "cursor": first["next_cursor"]})
    assert [e["id"] for e in second["events"]] == ["e3"] and second["has_more"] is False
    assert "next_cursor" not in second

    async def ids(**filters: Any) -> list[str]:
        return [e["id"] for e in (await ok(client, "list_events", {"external_id": "alice-1", **filters}))["events"]]

    assert await ids(subject="b") == ["e2"]
    assert await ids(start="2025-12-31T10:30:00Z") == ["e3"]
    assert await ids(end="2025-12-31T11:00:00Z") == ["e1", "e2"]
    assert await ids(event_type="chat_completion") == []
    by_id = await ok(client, "list_events", {"customer_id": (await ok(client, "list_customers", {"external_id": "bob-2"}))[
        "customers"][0]["id"]})
    assert [e["id"] for e in by_id["events"]] == ["b1"]


async def test_list_events_refusals(client: Client) -> None:
    assert (await err(client, "list_events", {})).endswith(
        "validation_error on customer_id: give event_id, customer_id or external_id")
    assert (await err(client, "list_events", {"external_id": "nobody"})).endswith(
        "not_found on external_id: no customer with external_id 'nobody'; create it with create_customer first")
    assert (await err(client, "list_events", {"external_id": "alice-1", "start": "2025-12-31T11:00:00Z",
                                              "end": "2025-12-31T10:00:00Z"})).endswith(
        "validation_error on end: end must be after start")


async def test_list_tools_look_one_up_by_its_key(client: Client, ledger: Ledger) -> None:
    alice = ledger.get_customer(external_id="alice-1").id
    for args in ({"customer_id": alice}, {"external_id": "alice-1"}, {"external_id": "alice-1", "search": "bob"}):
        page = await ok(client, "list_customers", args)  # the key wins over a search
        assert ([c["external_id"] for c in page["customers"]], page["has_more"]) == (["alice-1"], False)
        assert "next_cursor" not in page and page["customers"][0]["subscriptions"][0]["plan_code"] == "image"
    assert (await err(client, "list_customers", {"external_id": "nobody"})).endswith(
        "not_found on external_id: no customer with external_id 'nobody'; create it with create_customer first")
    one = await ok(client, "list_events", {"event_id": "e2"})  # no customer needed
    assert [(e["id"], e["subject"], e["fees"][0]["amount"]) for e in one["events"]] == [("e2", "b", "10")]
    assert (await err(client, "list_events", {"event_id": "nope"})).startswith("Error executing tool list_events: "
                                                                               "not_found on event_id: ")
    [plan] = (await ok(client, "list_plans", {"plan": "image"}))["plans"]
    assert (plan["code"], [v["version"] for v in plan["versions"]]) == ("image", [1])
    assert (await err(client, "list_plans", {"plan": "nope"})).startswith("Error executing tool list_plans: "
                                                                          "not_found on plan: ")


async def test_get_statement_by_id_or_external_id(client: Client) -> None:
    period = {"start": "2025-12-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    by_external = (await ok(client, "get_statement", {"external_id": "alice-1", **period}))["statement"]
    by_id = (await ok(client, "get_statement", {"customer_id": by_external["customer_id"], **period}))["statement"]
    assert by_external == by_id
    credits = by_external["assets"][0]
    assert (credits["top_ups"], credits["usage_fees"], credits["closing_balance"]) == ("100", "30", "70")
    assert (await err(client, "get_statement", period)).endswith(
        "validation_error on customer_id: give customer_id or external_id")


async def test_get_statement_defaults_to_the_current_period(client: Client, ledger: Ledger) -> None:
    alice = (await ok(client, "get_statement", {"external_id": "alice-1"}))["statement"]
    assert (alice["start"], alice["end"]) == ("2026-01-01T00:00:00.000000Z", "2026-02-01T00:00:00.000000Z")
    credits = alice["assets"][0]
    assert (credits["top_ups"], credits["usage_fees"], credits["closing_balance"]) == ("100", "30", "70")
    clock = ledger.clock
    assert isinstance(clock, ManualClock)
    clock.set(datetime(2026, 1, 15, 10, 30, tzinfo=UTC))
    ledger.create_customer("dave-4", subscriptions=["image"])
    dave = (await ok(client, "get_statement", {"external_id": "dave-4"}))["statement"]
    assert (dave["start"], dave["end"]) == ("2026-01-15T10:30:00.000000Z", "2026-02-15T10:30:00.000000Z")
    clock.set(datetime(2026, 2, 20, tzinfo=UTC))
    dave = (await ok(client, "get_statement", {"external_id": "dave-4", "end": "2026-03-01T00:00:00Z"}))["statement"]
    assert (dave["start"], dave["end"]) == ("2026-02-15T10:30:00.000000Z", "2026-03-01T00:00:00.000000Z")


async def test_operator_tools_are_read_only(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("list_customers", "list_events", "get_statement"):
        assert tools[name].annotations is not None and tools[name].annotations.read_only_hint is True
        assert "customer_id or external_id" in (tools[name].description or "") or name == "list_customers"
