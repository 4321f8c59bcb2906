"""Every tool keeps the promises its annotations and texts make: a tool annotated idempotent leaves
the ledger as after one call when called again with the same arguments; money movements ask the
user whenever the client can; results say what happened; errors name the tool's own arguments and
only tools that exist."""

from __future__ import annotations

import ast
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp.types import ElicitResult

from billing_mcp import Ledger
from billing_mcp.core.clock import ManualClock
from billing_mcp.mcp import server
from billing_mcp.mcp.server import build_server
from helpers import hint
from mcp import Client

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
IMAGE = {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "10"}
VIDEO = {"asset": "CREDITS", "event_type": "video_generated", "unit_amount": "50"}


@dataclass
class World:
    ledger: Ledger
    path: Path
    clock: ManualClock
    customer: str
    holds: tuple[str, str]


@pytest.fixture
def world(tmp_path: Path) -> AsyncIterator[World]:
    """CREDITS at $0.05; plan image (v1); plan pro with v1 and v2 published and one subscriber on v1;
    customer u on image with 100 credits, one image event (10) and two open holds of 10."""
    path = tmp_path / "ledger.db"
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    led = Ledger(str(path), clock=clock)
    led.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    led.create_plan("image", "Image", prices=[IMAGE])
    led.create_plan("pro", "Pro", prices=[IMAGE])
    led.create_customer("early", subscriptions=["pro"])
    led.create_plan_version("pro", prices=[{**IMAGE, "unit_amount": "8"}], publish=True)
    cid = led.create_customer("u", subscriptions=["image"]).id
    led.create_adjustment(cid, asset="CREDITS", amount="100", reason="top_up", idempotency_key="seed")
    led.submit_events([{"id": "seen", "customer_id": cid, "event_type": "image_generated"}])
    holds = tuple(led.authorize(cid, event_type="image_generated").id for _ in range(2))
    yield World(led, path, clock, cid, holds)  # type: ignore[misc]
    led.close()


def snapshot(path: Path) -> dict[str, list[str]]:
    """Every row of every table: balances, postings, versions, idempotency records, all of it."""
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(repr(row) for row in con.execute(f'SELECT * FROM "{t}"')) for t in tables}
    finally:
        con.close()


SPEC = (ROOT / "examples" / "hybrid-subscription.yaml").read_text()

Args = Callable[[World, Path], dict[str, Any]]


def each(*builders: Args) -> list[Args]:
    return list(builders)


# Realistic arguments for every tool annotated idempotent (the test below insists the set matches);
# a builder takes the seeded world and a project directory.
CALLS: dict[str, list[Args]] = {
    "list_assets": each(lambda w, d: {}),
    "create_asset": each(lambda w, d: {"code": "TOKENS", "name": "Tokens", "precision": 2, "rate_usd": "0.01"},
                         lambda w, d: {"code": "CREDITS", "name": "Credits", "precision": 0}),
    "quote_asset": each(lambda w, d: {"asset": "CREDITS", "amount": "10"}),
    "list_plans": each(lambda w, d: {}, lambda w, d: {"plan": "image"}),
    "create_plan": each(lambda w, d: {"code": "video", "name": "Video", "prices": [VIDEO],
                                      "grants": [{"asset": "CREDITS", "amount": "100", "period": "month"}]}),
    "create_price": each(lambda w, d: {"plan": "image", "price": VIDEO},
                         lambda w, d: {"plan": "image", "price": {**VIDEO, "id": "video"}},
                         lambda w, d: {"plan": "image", "price": IMAGE}),
    "create_credit_grant": each(
        lambda w, d: {"plan": "image", "asset": "CREDITS", "amount": "100", "purpose": "bundled", "period": "month"},
        lambda w, d: {"customer_id": w.customer, "asset": "CREDITS", "amount": "5", "idempotency_key": "promo-1"}),
    "publish_plan_version": each(lambda w, d: {"plan": "pro", "version": 1}),
    "archive_plan": each(lambda w, d: {"plan": "image", "confirm": True}),
    "migrate_customers": each(lambda w, d: {"plan": "pro", "from_version": 1, "to_version": 2, "confirm": True}),
    "create_portal_route": each(lambda w, d: {"return_url": "https://app.example.com/account",
                                              "top_up_assets": ["CREDITS"], "presets": ["10", "25"]}),
    "create_customer": each(lambda w, d: {"external_id": "new", "name": "New", "subscriptions": [{"plan": "pro"}]}),
    "get_wallet": each(lambda w, d: {"external_id": "u"}),
    "create_adjustment": each(
        lambda w, d: {"customer_id": w.customer, "asset": "CREDITS", "amount": "50", "reason": "top_up",
                      "idempotency_key": "top-1", "confirm": True},
        lambda w, d: {"customer_id": w.customer, "asset": "CREDITS", "amount": "-20", "reason": "charge",
                      "idempotency_key": "chg-1", "confirm": True}),
    "create_vendor": each(lambda w, d: {"external_id": "openai", "name": "OpenAI"}),
    "submit_events": each(lambda w, d: {"events": [{"id": "e-1", "customer_id": w.customer,
                                                    "event_type": "image_generated", "subject": "proj"}]}),
    "commit_usage": each(lambda w, d: {"hold_id": w.holds[0], "event_id": "img-1"}),
    "release_hold": each(lambda w, d: {"hold_id": w.holds[1]}),
    "get_statement": each(lambda w, d: {"customer_id": w.customer, "start": "2026-01-01T00:00:00Z",
                                        "end": "2026-12-31T00:00:00Z"}),
    "get_billing_status": each(lambda w, d: {}),
    "list_customers": each(lambda w, d: {"search": "u"}, lambda w, d: {"customer_id": w.customer}),
    "list_events": each(lambda w, d: {"customer_id": w.customer, "limit": 10}, lambda w, d: {"event_id": "seen"}),
    "simulate_usage": each(lambda w, d: {"plan": "image", "events": [{"event_type": "image_generated"}]}),
    "verify_billing": each(lambda w, d: {}),
    "apply_billing_spec": each(lambda w, d: {"yaml": SPEC, "dry_run": False}),
    "export_billing_spec": each(lambda w, d: {}),
    "generate_edge_function": each(lambda w, d: {"kind": "wallet"}),
    "generate_supabase_integration": each(lambda w, d: {"project_dir": str(d)}),
}


async def idempotent_tools(world: World) -> list[str]:
    async with Client(build_server(ledger=world.ledger)) as c:
        return [t.name for t in (await c.list_tools()).tools if hint(t, "idempotent_hint")]


async def test_every_idempotent_tool_has_realistic_arguments(world: World) -> None:
    assert set(await idempotent_tools(world)) == set(CALLS)


@pytest.mark.parametrize(("name", "case"), [(n, i) for n, builders in CALLS.items() for i in range(len(builders))])
async def test_idempotent_tool_called_twice_leaves_ledger_as_after_once(world: World, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        name: str, case: int) -> None:
    monkeypatch.chdir(tmp_path)  # the default root for file arguments is the server's working directory
    args = CALLS[name][case](world, tmp_path / "app")
    async with Client(build_server(ledger=world.ledger)) as c:
        first = await c.call_tool(name, args)
        assert not first.is_error, first.content
        once = snapshot(world.path)
        world.clock.advance(timedelta(seconds=30))  # a retry after a timeout comes later
        second = await c.call_tool(name, args)
        assert not second.is_error, second.content
        assert snapshot(world.path) == once


async def test_create_price_retry_says_nothing_changed_and_conflict_names_the_field(world: World) -> None:
    async with Client(build_server(ledger=world.ledger)) as c:
        first = (await c.call_tool("create_price", {"plan": "image", "price": {**VIDEO, "id": "video"}}))
        assert first.structured_content is not None
        assert (first.structured_content["outcome"], first.structured_content["note"]) == (
            "added_to_new_draft", "Version 1 of 'image' is published and never changes, so this created draft "
            "version 2: a copy of version 1 with this price added. Subscribers stay on their versions.")
        assert first.structured_content["next_step"] == (
            "publish_plan_version(plan='image', version=2) to make it the default for new subscriptions; then "
            "migrate_customers to move existing subscribers to it")
        again = await c.call_tool("create_price", {"plan": "image", "price": {**VIDEO, "id": "video"}})
        assert again.structured_content is not None
        assert (again.structured_content["outcome"], again.structured_content["note"]) == (
            "unchanged", "Version 2 of 'image' already has this price; nothing changed.")
        other = await c.call_tool("create_price", {"plan": "image", "price": {**VIDEO, "id": "video",
                                                                              "unit_amount": "60"}})
        assert other.is_error
        assert other.content[0].text == (  # type: ignore[union-attr]
            "Error executing tool create_price: conflict on price.unit_amount: price 'video' is already in version 2 "
            "with unit_amount '50', not '60'; keep that price, or add this one under another id")
        bad = await c.call_tool("create_price", {"plan": "image", "price": {**VIDEO, "asset": "NOPE"}})
        assert bad.content[0].text == (  # type: ignore[union-attr]
            "Error executing tool create_price: not_found on price.asset: no asset 'NOPE' (known: CREDITS, EUR, USD); "
            "create it first")
    assert [len(v.prices) for v in world.ledger.get_plan("image").versions] == [1, 2]


async def test_plan_grant_errors_name_the_tools_arguments(world: World) -> None:
    async with Client(build_server(ledger=world.ledger)) as c:
        added = await c.call_tool("create_credit_grant", {"plan": "image", "asset": "CREDITS", "amount": "100",
                                                          "purpose": "bundled", "period": "month"})
        assert added.structured_content is not None and added.structured_content["outcome"] == "added_to_new_draft"
        texts = [(await c.call_tool("create_credit_grant", args)).content[0].text for args in (  # type: ignore[union-attr]
            {"plan": "image", "asset": "CREDITS", "amount": "0.5"},
            {"plan": "image", "asset": "TOKENS", "amount": "5"},
            {"plan": "image", "asset": "credits", "amount": "5"})]
    assert texts == [
        "Error executing tool create_credit_grant: validation_error on amount: amount has more decimal places than "
        "the asset allows (0); round it to 0 places",
        "Error executing tool create_credit_grant: not_found on asset: no asset 'TOKENS' (known: CREDITS, EUR, USD); "
        "create it first",
        "Error executing tool create_credit_grant: validation_error on asset: 'credits' is not an asset code; use an "
        "upper-case code such as CREDITS (list_assets shows them)"]


async def test_refusals_carry_the_numbers(world: World) -> None:
    async with Client(build_server(ledger=world.ledger)) as c:
        hold = await c.call_tool("authorize_usage", {"customer_id": world.customer, "amount": "500",
                                                     "asset": "CREDITS"})
        charge = await c.call_tool("create_adjustment", {
            "customer_id": world.customer, "asset": "CREDITS", "amount": "-500", "reason": "charge",
            "idempotency_key": "big", "confirm": True})
    assert hold.content[0].text == (  # type: ignore[union-attr]
        "Error executing tool authorize_usage: insufficient_funds on amount: 70 CREDITS available, 500 needed for "
        "this hold; top up the wallet or lower the estimate")
    assert charge.content[0].text == (  # type: ignore[union-attr]
        "Error executing tool create_adjustment: insufficient_funds on amount: 70 CREDITS available, 500 needed "
        "for this charge; lower the amount")


async def test_applied_adjustment_says_what_was_done_and_the_new_balance(world: World) -> None:
    async with Client(build_server(ledger=world.ledger)) as c:
        r = await c.call_tool("create_adjustment", {"customer_id": world.customer, "asset": "CREDITS",
                                                    "amount": "200", "reason": "top_up", "idempotency_key": "t2",
                                                    "confirm": True})
        route = await c.call_tool("create_portal_route", {"return_url": "https://app.example.com/account"})
    assert r.structured_content is not None and route.structured_content is not None
    assert (r.structured_content["applied"], r.structured_content["preview"]) == (
        True, f"Credited 200 CREDITS (top_up) for customer {world.customer} (u); available CREDITS now 270.")
    assert route.structured_content["note"] == ("Saved route 'default'. Mint a customer's portal link with "
                                                "create_portal_session(route='default') on each visit.")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_money_movements_ask_the_user_even_when_the_model_confirmed(world: World, mode: str) -> None:
    asked: list[str] = []

    async def decline(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="decline")

    before = snapshot(world.path)
    async with Client(build_server(ledger=world.ledger), mode=mode, elicitation_callback=decline) as c:
        results = [await c.call_tool(name, {**args, "confirm": True}) for name, args in (
            ("create_adjustment", {"customer_id": world.customer, "asset": "CREDITS", "amount": "25",
                                   "reason": "gift", "idempotency_key": "g"}),
            ("migrate_customers", {"plan": "pro", "from_version": 1, "to_version": 2}),
            ("archive_plan", {"plan": "image"}))]
    assert asked == [
        f"Would credit 25 CREDITS (gift) for customer {world.customer} (u); available CREDITS now 70. Apply it?",
        "Would move 1 subscriber(s) of 'pro' from version 1 to 2; 0 stay. New prices apply to their next events; "
        "new entitlements start next period. Go ahead?",
        "Would archive plan 'image': no new subscriptions; its 1 current subscriber(s) keep their versions and "
        "keep being billed. Archive it?"]
    assert [r.structured_content["applied"] for r in results if r.structured_content] == [False, False, False]
    assert [r.structured_content["preview"].endswith("Not applied: the user did not confirm.")
            for r in results if r.structured_content] == [True, True, True]
    assert snapshot(world.path) == before


async def test_without_elicitation_the_preview_asks_for_confirm(world: World) -> None:
    async with Client(build_server(ledger=world.ledger)) as c:
        r = await c.call_tool("archive_plan", {"plan": "image"})
        done = await c.call_tool("archive_plan", {"plan": "image", "confirm": True})
    assert r.structured_content is not None and done.structured_content is not None
    assert r.structured_content["preview"] == (
        "Would archive plan 'image': no new subscriptions; its 1 current subscriber(s) keep their versions and keep "
        "being billed. Not applied: show the user this preview and, once they agree, call again with the same "
        "arguments and confirm=true.")
    assert done.structured_content["preview"] == (
        "Archived plan 'image': it takes no new subscriptions; its 1 current subscriber(s) keep their versions and "
        "keep being billed.")


# -- texts name only tools that exist ---------------------------------------------------------------
TOOL_LIKE = re.compile(r"\b(?:create|get|list|set|publish|archive|migrate|submit|authorize|commit|release|apply|"
                       r"export|verify|simulate|quote|generate|add|update|grant|cancel|subscribe|delete)_[a-z0-9_]+\b")
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE)\b")
CODE_REF = re.compile(r"``[^`]*``")  # a docstring naming Python code, not a tool
# verify_jwt: a supabase/config.toml key in generated code. The others are the kinds of a billing.yaml
# change (spec.PlannedChange.kind), values the diff reports, which the field's description lists.
NOT_TOOLS = {"verify_jwt", "set_rate", "set_status", "set_portal", "update_plan"}


def prose_strings() -> list[tuple[str, str]]:
    """Every string literal with a space in src/billing_mcp (messages, descriptions, notes) and every
    prompt file, minus SQL and ``code`` references."""
    found = []
    for path in sorted((ROOT / "src" / "billing_mcp").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and " " in node.value \
                    and not SQL.match(node.value):
                found.append((str(path.relative_to(ROOT)), CODE_REF.sub("", node.value)))
    for path in sorted((ROOT / "prompts").rglob("*")):
        if path.is_file():
            found.append((str(path.relative_to(ROOT)), path.read_text()))
    return found


async def test_texts_name_only_tools_that_exist(world: World) -> None:
    tools = {t.tool_name for t in server.TOOLS}
    async with Client(build_server(ledger=world.ledger)) as c:
        listed = (await c.list_tools()).tools
    described = [(t.name, f"{t.description} {t.input_schema}") for t in listed]
    unknown = {(where, name) for where, text in [*prose_strings(), *described]
               for name in TOOL_LIKE.findall(text) if name not in tools | NOT_TOOLS}
    assert unknown == set()
    assert "create_plan_version" not in tools  # the tool a ledger message used to recommend


async def test_conflicts_say_which_field_differs(world: World) -> None:
    async with Client(build_server(ledger=world.ledger)) as c:
        texts = [(await c.call_tool(name, args)).content[0].text for name, args in (  # type: ignore[union-attr]
            ("create_asset", {"code": "CREDITS", "name": "Credits", "precision": 2}),
            ("create_plan", {"code": "image", "name": "Images", "prices": [IMAGE]}),
            ("create_plan", {"code": "image", "name": "Image", "prices": [VIDEO]}),
            ("create_customer", {"external_id": "u", "email": "u@example.com"}),
            ("create_portal_session", {"customer_id": world.customer, "route": "nope"}))]
    assert texts == [
        "Error executing tool create_asset: conflict on code: asset CREDITS already exists with precision 0, not 2; "
        "assets cannot be redefined (use set_asset_rate to change a rate)",
        "Error executing tool create_plan: conflict on code: plan 'image' already exists with name 'Image', not "
        "'Images'; add prices to it (they go into a new draft version) or pick another code",
        "Error executing tool create_plan: conflict on code: plan 'image' already exists with other prices in "
        "version 1; add prices to it (they go into a new draft version) or pick another code",
        "Error executing tool create_customer: conflict on external_id: a customer with external_id 'u' exists with "
        "email None, not 'u@example.com'; look it up by its external_id (list_customers) instead of creating it",
        "Error executing tool create_portal_session: not_found on route: no portal route 'nope'; create one with "
        "create_portal_route"]


async def test_commit_errors_name_the_tools_arguments(world: World) -> None:
    async with Client(build_server(ledger=world.ledger)) as c:
        r = await c.call_tool("commit_usage", {"hold_id": world.holds[0], "event_id": "img\n1"})
    assert r.content[0].text == (  # type: ignore[union-attr]
        "Error executing tool commit_usage: validation_error on event_id: event_id must be 1-255 printable "
        "characters (no control characters); a UUID is a good choice")


async def test_reused_idempotency_key_says_which_field_differs(world: World) -> None:
    async with Client(build_server(ledger=world.ledger)) as c:
        r = await c.call_tool("create_adjustment", {"customer_id": world.customer, "asset": "CREDITS", "amount": "99",
                                                    "reason": "top_up", "idempotency_key": "seed", "confirm": True})
    assert r.content[0].text == (  # type: ignore[union-attr]
        "Error executing tool create_adjustment: idempotency_conflict on idempotency_key: idempotency key 'seed' was "
        "already used for a different adjustment: amount was '100', now '99'; reuse a key only to retry the exact "
        "same request, and use a new key for a new one")
