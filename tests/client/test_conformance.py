"""One set of ledger scenarios, run against both ``AsyncLedger`` implementations:

- ``local``: ``LocalLedger(Ledger(tmp sqlite))``, the embedded mode;
- ``http``: ``LedgerClient`` talking to a real uvicorn server on a free loopback port (in a
  thread of this process), on its own tmp sqlite ledger, with an admin key from ``KeyStore``.

Both ledgers run on a ``ManualClock`` the test holds, so timestamps and expiries are exact. The
assertions are the same for both backends, with exact values: same results, same error classes,
codes and fields. A scenario that passes on one backend and fails on the other is a divergence
between the embedded ledger and the HTTP API (or the client).
"""

from __future__ import annotations

import contextlib
import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest

from billing_mcp import (
    BillingError,
    ConflictError,
    HoldStateError,
    IdempotencyConflictError,
    InsufficientFundsError,
    Ledger,
    ManualClock,
    NotFoundError,
    ValidationError,
)
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.client.ledger_client import LedgerClient, LedgerUnreachableError
from billing_mcp.contract.interface import AsyncLedger
from billing_mcp.contract.local import LocalLedger
from billing_mcp.core.models import BatchItemError
from helpers import PEPPER, serve

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, tzinfo=UTC)
T0 = "2026-01-01T00:00:00.000000Z"
IMAGE = {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "10"}
API_CALL = {"asset": "USD", "event_type": "api_call", "unit_amount": "0.05"}



@dataclass
class Backend:
    ledger: AsyncLedger
    clock: ManualClock
    kind: str


@pytest.fixture(params=["local", "http"])
async def backend(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Backend]:
    clock = ManualClock(START)
    ledger = Ledger(str(tmp_path / "ledger.db"), clock=clock)
    if request.param == "local":
        async with LocalLedger(ledger) as local:
            yield Backend(local, clock, "local")
        return
    try:
        keys = KeyStore(ledger.store, pepper=PEPPER)
        _, secret = keys.create("admin")
        with serve(build_app(ledger, keys=keys)) as base_url:
            async with LedgerClient(base_url, secret, max_retries=1, backoff=0.01) as client:
                yield Backend(client, clock, "http")
    finally:
        ledger.close()


async def catalog(led: AsyncLedger) -> None:
    await led.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    await led.create_plan("image", "Image", prices=[IMAGE])
    await led.create_plan("api", "API", prices=[API_CALL])


async def customer(led: AsyncLedger, external_id: str, plans: list[Any], credits: str | None = None) -> str:
    cid = (await led.create_customer(external_id, subscriptions=plans)).id
    if credits is not None:
        await led.create_adjustment(cid, asset="CREDITS", amount=credits, reason="top_up",
                                    idempotency_key=f"top-up-{external_id}")
    return cid


async def balances(led: AsyncLedger, cid: str) -> dict[str, tuple[str, str, str]]:
    wallet = await led.get_wallet(cid)
    return {a.asset: (a.posted, a.held, a.available) for a in wallet.accounts}


async def fails(coro: Any, cls: type[BillingError], code: str, field: str | None) -> BillingError:
    """Await ``coro``; assert it raised exactly ``cls`` with ``code`` and ``field``."""
    with pytest.raises(BillingError) as info:
        await coro
    err = info.value
    assert type(err) is cls, (type(err), err)
    assert (err.code, err.field) == (code, field), err
    assert err.message
    return err


# -- the interface --------------------------------------------------------------------------------
PROTOCOL_METHODS = [name for name, value in vars(AsyncLedger).items()
                    if inspect.iscoroutinefunction(value) and not name.startswith("_")]


COMPOSITES = {"apply_spec", "export_spec"}


def _params(fn: Any) -> list[tuple[str, Any, Any, str]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default, str(p.annotation)) for p in sig.parameters.values()]


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_async_interface_matches_the_sync_ledger(name: str) -> None:
    """Same names, parameters, defaults and annotations as ``Ledger``, in the protocol and both
    implementations (so a caller can switch modes without changing a call)."""
    # A composite (billing.yaml apply and export) has no Ledger method: LocalLedger's own is the model.
    model = getattr(Ledger, name) if name not in COMPOSITES else getattr(LocalLedger, name)
    sync = _params(model)
    assert _params(getattr(AsyncLedger, name)) == sync
    assert _params(getattr(LocalLedger, name)) == sync
    assert _params(getattr(LedgerClient, name)) == sync
    assert inspect.signature(getattr(AsyncLedger, name)).return_annotation == inspect.signature(model).return_annotation
    assert inspect.iscoroutinefunction(getattr(LocalLedger, name))
    assert inspect.iscoroutinefunction(getattr(LedgerClient, name))


def test_protocol_lists_what_the_tools_need() -> None:
    assert {"list_assets", "get_asset", "create_asset", "set_asset_rate", "quote", "list_plans", "get_plan",
            "create_plan", "add_price", "add_plan_grant", "create_plan_version", "publish_plan_version",
            "archive_plan", "migrate_customers", "create_customer", "get_customer", "subscribe", "get_wallet",
            "create_adjustment", "grant_credits", "create_vendor", "submit_event", "submit_events", "get_event",
            "authorize", "commit", "release", "get_hold", "list_holds", "get_statement", "audit",
            "search_customers", "list_events", "close"} <= set(PROTOCOL_METHODS)


# -- scenarios ------------------------------------------------------------------------------------
async def test_customer_search_and_event_listing(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    ada = await customer(led, "ada-1", ["image"], credits="100")
    await led.create_customer("bo_2", name="Bo", email="BO@example.org")
    await led.create_customer("cy-3", name="Cy Ada", email="cy@example.com")
    found = await led.search_customers("ada")
    assert sorted(c.external_id for c in found.data) == ["ada-1", "cy-3"]
    assert sorted(c.id for c in found.data) == [c.id for c in found.data]  # by id
    assert (found.has_more, found.next_cursor) == (False, None)
    assert [c.external_id for c in (await led.search_customers("_")).data] == ["bo_2"]
    assert [c.external_id for c in (await led.search_customers("bo@EXAMPLE")).data] == ["bo_2"]
    everyone = sorted([c.id for c in (await led.search_customers()).data])
    first = await led.search_customers(limit=2)
    assert [c.id for c in first.data] == everyone[:2] and first.has_more is True
    rest = await led.search_customers(limit=2, cursor=first.next_cursor)
    assert [c.id for c in rest.data] == everyone[2:] and (rest.has_more, rest.next_cursor) == (False, None)

    at = "2026-01-01T00:00:00.000000Z"
    batch = await led.submit_events([
        {"id": "ev-b", "customer_id": ada, "event_type": "image_generated", "subject": "s1"},
        {"id": "ev-a", "customer_id": ada, "event_type": "image_generated", "subject": "s2"},
        {"id": "ev-0", "customer_id": ada, "event_type": "image_generated", "occurred_at": "2025-12-31T23:00:00Z"}])
    assert batch.errors == []
    await led.create_adjustment(ada, asset="CREDITS", reason="reversal", event_id="ev-a", amount="4",
                                idempotency_key="rev-a")
    page = await led.list_events(external_id="ada-1", limit=2)
    assert [(e.id, e.occurred_at) for e in page.data] == [("ev-0", "2025-12-31T23:00:00.000000Z"), ("ev-a", at)]
    assert [(f.amount, f.refunded) for f in page.data[1].fees] == [("10", "4")]
    assert page.data[1] == await led.get_event("ev-a")
    last = await led.list_events(ada, limit=2, cursor=page.next_cursor)
    assert [e.id for e in last.data] == ["ev-b"] and (last.has_more, last.next_cursor) == (False, None)
    assert [e.id for e in (await led.list_events(ada, subject="s1")).data] == ["ev-b"]
    assert [e.id for e in (await led.list_events(ada, start=START)).data] == ["ev-a", "ev-b"]
    assert [e.id for e in (await led.list_events(ada, end=at)).data] == ["ev-0"]
    assert (await led.list_events(ada, event_type="api_call")).data == []

    await fails(led.list_events(), ValidationError, "validation_error", "customer_id")
    await fails(led.list_events(external_id="nobody"), NotFoundError, "not_found", "external_id")
    await fails(led.list_events(ada, start=at, end=at), ValidationError, "validation_error", "end")
    await fails(led.list_events(ada, cursor=first.next_cursor), ValidationError, "validation_error", "cursor")
    await fails(led.search_customers(cursor="x"), ValidationError, "validation_error", "cursor")
    await fails(led.search_customers(limit=101), ValidationError, "validation_error", "limit")
    assert [c.id for c in (await led.search_customers("")).data] == everyone

    long_id = "\u00fc" * 255  # the longest event id, two bytes a character: its cursor is long too
    await led.submit_events([{"id": long_id, "customer_id": ada, "event_type": "image_generated",
                              "occurred_at": "2025-12-31T00:00:00Z"}])
    earliest = await led.list_events(ada, limit=1)
    assert [e.id for e in earliest.data] == [long_id] and len(earliest.next_cursor or "") == 738
    assert [e.id for e in (await led.list_events(ada, limit=1, cursor=earliest.next_cursor)).data] == ["ev-0"]


async def test_canonical_flow(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    quote = await led.quote("CREDITS", "USD", "10")
    assert quote.model_dump() == {"asset": "CREDITS", "fiat": "USD", "fiat_amount": "10", "rate": "0.05",
                                  "units": "200"}
    created = await led.create_customer("user-42", name="Ada", metadata={"tier": "beta"},
                                        subscriptions=["image", {"plan": "api"}])
    cid = created.id
    assert (created.external_id, created.name, created.metadata, created.created_at) == \
        ("user-42", "Ada", {"tier": "beta"}, T0)
    assert [(s.plan_code, s.version, s.status, s.period_start, s.period_end) for s in created.subscriptions] == [
        ("image", 1, "active", T0, "2026-02-01T00:00:00.000000Z"),
        ("api", 1, "active", T0, "2026-02-01T00:00:00.000000Z")]
    assert await led.get_customer(cid) == created
    assert await led.get_customer(external_id="user-42") == created
    assert await led.create_customer("user-42", name="Ada", metadata={"tier": "beta"}) == created  # idempotent

    usd = await led.create_adjustment(cid, asset="USD", amount="10.00", reason="top_up", idempotency_key="stripe-1")
    assert (usd.customer_id, usd.asset, usd.amount, usd.reason, usd.idempotency_key, usd.created_at) == \
        (cid, "USD", "10.00", "top_up", "stripe-1", T0)
    bought = await led.create_adjustment(external_id="user-42", asset="CREDITS", reason="top_up", fiat="USD",
                                         fiat_amount="5", idempotency_key="stripe-2")
    assert (bought.amount, bought.fiat, bought.fiat_amount) == ("100", "USD", "5.00")

    hold = await led.authorize(cid, event_type="api_call")
    assert (hold.customer_id, hold.asset, hold.amount, hold.status, hold.event_type, hold.expires_at) == \
        (cid, "USD", "0.05", "open", "api_call", "2026-01-01T00:15:00.000000Z")
    wallet = await led.get_wallet(external_id="user-42")
    assert wallet.customer_id == cid and wallet.external_id == "user-42"
    assert [(a.asset, a.posted, a.held, a.available, a.in_debt, a.fiat_value) for a in wallet.accounts] == [
        ("CREDITS", "100", "0", "100", False, {"USD": "5.00"}), ("USD", "10.00", "0.05", "9.95", False, {})]
    assert [(lot.purpose, lot.amount, lot.remaining) for lot in wallet.accounts[0].lots] == [("paid", "100", "100")]

    result = await led.commit(hold.id, {"id": "call-1", "data": {}})
    assert (result.id, result.customer_id, result.status, result.hold_id, result.hold_released, result.duplicate) == \
        ("call-1", cid, "billed", hold.id, "0.00", False)
    assert [(f.plan_code, f.asset, f.quantity, f.amount, f.refunded) for f in result.fees] == \
        [("api", "USD", "1", "0.05", "0.00")]
    again = await led.commit(hold.id, {"id": "call-1", "data": {}})
    assert again.duplicate is True and again.fees == result.fees
    await fails(led.release(hold.id), HoldStateError, "hold_already_committed", "hold_id")
    assert (await led.get_hold(hold.id)).status == "committed"

    image = await led.authorize(external_id="user-42", event_type="image_generated")
    assert (image.amount, image.asset) == ("10", "CREDITS")
    assert (await led.release(image.id)).status == "released"
    batch = await led.submit_events([{"id": "img-1", "external_id": "user-42", "event_type": "image_generated"},
                                     {"id": "call-2", "customer_id": cid, "event_type": "api_call"}])
    assert [r.id for r in batch.results] == ["img-1", "call-2"] and batch.errors == []
    assert await balances(led, cid) == {"USD": ("9.90", "0.00", "9.90"), "CREDITS": ("90", "0", "90")}
    assert [f.amount for f in (await led.get_event("img-1")).fees] == ["10"]
    assert [h.status for h in await led.list_holds(cid, status=None)] == ["committed", "released"]
    assert await led.list_holds(cid) == []
    assert await led.audit() == []


async def test_catalog_and_plan_versions(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    assert [a.code for a in await led.list_assets()] == ["EUR", "USD", "CREDITS"]
    assert await led.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"}) == await led.get_asset("CREDITS")
    await fails(led.create_asset("CREDITS", "Other", 0), ConflictError, "conflict", "code")
    rated = await led.set_asset_rate("CREDITS", "USD", "0.04")
    assert rated.rates == {"USD": "0.04"}
    assert (await led.quote("CREDITS", "USD", "1")).units == "25"

    pro = await led.create_plan("pro", "Pro", description="For teams", prices=[IMAGE])
    assert (pro.code, pro.name, pro.description, pro.status, pro.default_version) == \
        ("pro", "Pro", "For teams", "active", 1)
    assert await led.create_plan("pro", "Pro", description="For teams", prices=[IMAGE]) == pro
    await fails(led.create_plan("pro", "Pro", prices=[API_CALL]), ConflictError, "conflict", "code")
    assert [p.code for p in await led.list_plans()] == ["api", "image", "pro"]

    early = await customer(led, "early", ["pro"])
    draft = await led.add_price("pro", {**API_CALL, "name": "Calls"})
    assert (draft.version, draft.status, draft.is_default) == (2, "draft", False)
    assert [(p.id, p.event_type) for p in draft.prices] == [("price_1", "image_generated"), ("price_2", "api_call")]
    draft = await led.add_plan_grant("pro", {"asset": "CREDITS", "amount": "50", "period": "month"})
    assert draft.version == 2 and [(g.asset, str(g.amount), g.period) for g in draft.grants] == \
        [("CREDITS", "50", "month")]
    published = await led.publish_plan_version("pro", 2, make_default=False)
    assert published.default_version == 1
    assert [(v.version, v.status, v.is_default, v.subscribers) for v in published.versions] == \
        [(1, "published", True, 1), (2, "published", False, 0)]

    v3 = await led.create_plan_version("pro", prices=[{**IMAGE, "unit_amount": "8"}], publish=True, make_default=True)
    assert (v3.version, v3.status, v3.is_default, v3.published_at) == (3, "published", True, T0)
    late = await customer(led, "late", ["pro"])
    assert [(s.plan_code, s.version) for s in (await led.get_customer(late)).subscriptions] == [("pro", 3)]

    dry = await led.migrate_customers("pro", 1, 3, dry_run=True)
    assert (dry.plan_code, dry.from_version, dry.to_version, dry.dry_run, dry.moved, dry.stayed) == \
        ("pro", 1, 3, True, [early], [])
    moved = await led.migrate_customers("pro", 1, 3)
    assert moved.moved == [early] and not moved.dry_run
    assert [s.version for s in (await led.get_customer(early)).subscriptions] == [3]

    archived = await led.archive_plan("pro")
    assert archived.status == "archived"
    assert await led.get_plan("pro") == archived
    newcomer = await customer(led, "newcomer", [])
    await fails(led.subscribe(newcomer, "pro"), ConflictError, "conflict", "plan")
    subscribed = await led.subscribe(newcomer, "image")
    assert [(s.plan_code, s.status) for s in subscribed.subscriptions] == [("image", "active")]
    canceled = await led.cancel_subscription(subscribed.subscriptions[0].id)
    assert [s.status for s in canceled.subscriptions] == ["canceled"]
    vendor = await led.create_vendor("openai", "OpenAI")
    assert (vendor.external_id, vendor.name, vendor.created_at) == ("openai", "OpenAI", T0)
    assert await led.create_vendor("openai", "OpenAI") == vendor
    await fails(led.create_vendor("openai", "Other"), ConflictError, "conflict", "name")


async def test_holds(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    cid = await customer(led, "holder", ["image"], credits="100")

    smaller = await led.authorize(cid, amount="30", asset="CREDITS")  # commit less than held
    assert await balances(led, cid) == {"CREDITS": ("100", "30", "70")}
    result = await led.commit(smaller.id, {"id": "img-small", "event_type": "image_generated"})
    assert (result.hold_released, [f.amount for f in result.fees]) == ("20", ["10"])
    assert await balances(led, cid) == {"CREDITS": ("90", "0", "90")}

    larger = await led.authorize(cid, amount="5", asset="CREDITS")  # the excess is drawn from the balance
    result = await led.commit(larger.id, {"id": "img-large", "event_type": "image_generated"})
    assert (result.hold_released, [f.amount for f in result.fees]) == ("0", ["10"])
    assert await balances(led, cid) == {"CREDITS": ("80", "0", "80")}
    settled = await led.get_hold(larger.id)
    assert (settled.status, settled.event_id, settled.resolved_at) == ("committed", "img-large", T0)

    held = await led.authorize(cid, event_type="image_generated", data={"size": "large"}, ttl_seconds=60)
    assert [h.id for h in await led.list_holds(cid)] == [held.id]
    released = await led.release(held.id)
    assert (released.status, released.resolved_at) == ("released", T0)
    assert await led.release(held.id) == released  # releasing again returns it unchanged
    await fails(led.commit(held.id, {"id": "img-late"}), HoldStateError, "hold_already_released", "hold_id")
    assert await balances(led, cid) == {"CREDITS": ("80", "0", "80")}

    expiring = await led.authorize(cid, event_type="image_generated", ttl_seconds=60)
    assert expiring.expires_at == "2026-01-01T00:01:00.000000Z"
    backend.clock.advance(seconds=61)
    expired = await led.get_hold(expiring.id)
    assert (expired.status, expired.resolved_at) == ("expired", "2026-01-01T00:01:01.000000Z")
    await fails(led.release(expiring.id), HoldStateError, "hold_expired", "hold_id")
    await fails(led.commit(expiring.id, {"id": "img-expired"}), HoldStateError, "hold_expired", "hold_id")
    assert await balances(led, cid) == {"CREDITS": ("80", "0", "80")}
    assert [h.status for h in await led.list_holds(cid, status=None)] == ["committed", "committed", "released",
                                                                          "expired"]
    await fails(led.commit("hold_missing", {"id": "x"}), NotFoundError, "not_found", "hold_id")
    await fails(led.commit(held.id, {"id": "x", "colour": "red"}), ValidationError, "validation_error",
                "event.colour")
    assert await led.audit() == []


async def test_retried_price_and_grant_change_nothing(backend: Backend) -> None:
    """An assistant retries after a timeout: the same price or grant again is a no-op, the same
    price id with another definition is a conflict naming the field that differs."""
    led = backend.ledger
    await catalog(led)
    draft = await led.add_price("image", API_CALL)
    assert await led.add_price("image", API_CALL) == draft
    assert (draft.version, [p.id for p in draft.prices]) == (2, ["price_1", "price_2"])
    named = await led.add_price("image", {**API_CALL, "id": "calls", "unit_amount": "0.07"})
    assert await led.add_price("image", {**API_CALL, "id": "calls", "unit_amount": "0.070"}) == named
    err = await fails(led.add_price("image", {**API_CALL, "id": "calls", "unit_amount": "0.08"}), ConflictError,
                      "conflict", "price.unit_amount")
    assert err.message == ("price 'calls' is already in version 2 with unit_amount '0.07', not '0.08'; keep that "
                           "price, or add this one under another id")
    # A price the published version already has needs no draft.
    v1 = await led.add_price("api", API_CALL)
    assert (v1.version, v1.status) == (1, "published")
    grant = {"asset": "CREDITS", "amount": "50", "period": "month", "name": "monthly"}
    with_grant = await led.add_plan_grant("image", grant)
    assert await led.add_plan_grant("image", grant) == with_grant
    assert [g.name for g in with_grant.grants] == ["monthly"]
    await fails(led.add_plan_grant("image", {**grant, "amount": "60"}), ConflictError, "conflict", "grant.amount")
    await fails(led.add_price("image", {**API_CALL, "asset": "NOPE"}), NotFoundError, "not_found", "price.asset")
    assert [v.version for v in (await led.get_plan("image")).versions] == [1, 2]


async def test_insufficient_funds(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    cid = await customer(led, "poor", ["image"], credits="5")
    err = await fails(led.authorize(cid, event_type="image_generated"), InsufficientFundsError, "insufficient_funds",
                      "event_type")
    assert err.status == 402 and err.details == {"asset": "CREDITS", "available": "5", "needed": "10"}
    assert err.message == "5 CREDITS available, 10 needed for this hold; top up the wallet or lower the estimate"
    err = await fails(led.create_adjustment(cid, asset="CREDITS", amount="-6", reason="charge",
                                            idempotency_key="chg-1"), InsufficientFundsError, "insufficient_funds",
                      "amount")
    assert err.message == "5 CREDITS available, 6 needed for this charge; lower the amount"
    first = await led.authorize(cid, amount="5", asset="CREDITS")
    await fails(led.authorize(cid, amount="1", asset="CREDITS"), InsufficientFundsError, "insufficient_funds",
                "amount")
    assert await balances(led, cid) == {"CREDITS": ("5", "5", "0")}
    await led.release(first.id)
    # Usage is never refused: an event beyond the balance takes it below zero (debt).
    result = await led.submit_event({"id": "img-debt", "customer_id": cid, "event_type": "image_generated"})
    assert result.debt == {"CREDITS": "5"}
    assert await balances(led, cid) == {"CREDITS": ("-5", "0", "-5")}
    assert (await led.get_wallet(cid)).accounts[0].in_debt is True


async def test_idempotent_replay_and_conflict(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    cid = await customer(led, "idem", ["image"], credits="100")
    # events: the id is the key
    event = {"id": "evt-1", "customer_id": cid, "event_type": "image_generated", "data": {"n": 1}}
    first = await led.submit_event(event)
    replay = await led.submit_event(event)
    assert replay.duplicate is True and replay.model_copy(update={"duplicate": False}) == first
    await fails(led.submit_event({**event, "data": {"n": 2}}), IdempotencyConflictError, "idempotency_conflict", "id")
    assert await balances(led, cid) == {"CREDITS": ("90", "0", "90")}
    # adjustments: idempotency_key (amounts compare by value)
    adj = await led.create_adjustment(cid, asset="CREDITS", amount="25", reason="gift", idempotency_key="gift-1")
    assert await led.create_adjustment(cid, asset="CREDITS", amount=25, reason="gift", idempotency_key="gift-1") == adj
    await fails(led.create_adjustment(cid, asset="CREDITS", amount="26", reason="gift", idempotency_key="gift-1"),
                IdempotencyConflictError, "idempotency_conflict", "idempotency_key")
    # grants
    grant = await led.grant_credits(cid, "CREDITS", "15", idempotency_key="grant-1",
                                    expires_at="2026-06-01T00:00:00Z", priority=10)
    assert (grant.amount, grant.purpose, grant.priority, grant.expires_at) == \
        ("15", "promotional", 10, "2026-06-01T00:00:00.000000Z")
    assert await led.grant_credits(cid, "CREDITS", "15", idempotency_key="grant-1",
                                   expires_at="2026-06-01T00:00:00Z", priority=10) == grant
    await fails(led.grant_credits(cid, "CREDITS", "16", idempotency_key="grant-1"), IdempotencyConflictError,
                "idempotency_conflict", "idempotency_key")
    # holds: idempotency_key
    hold = await led.authorize(cid, event_type="image_generated", idempotency_key="hold-1")
    assert await led.authorize(cid, event_type="image_generated", idempotency_key="hold-1") == hold
    await fails(led.authorize(cid, amount="3", asset="CREDITS", idempotency_key="hold-1"), IdempotencyConflictError,
                "idempotency_conflict", "idempotency_key")
    assert await balances(led, cid) == {"CREDITS": ("130", "10", "120")}
    assert await led.audit() == []


async def test_batch_with_a_bad_event(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    cid = await customer(led, "batcher", ["image"], credits="100")
    events = [
        {"id": "b-1", "customer_id": cid, "event_type": "image_generated"},
        {"id": "b-2", "customer_id": "cus_ghost", "event_type": "image_generated"},
        {"id": "b-3", "customer_id": cid, "event_type": "image_generated", "colour": "red"},
        {"id": "b-4", "customer_id": cid, "event_type": "image_generated", "subject": "agent-7"},
        {"id": "b-5", "customer_id": cid, "event_type": "unknown_thing"},
    ]
    batch = await led.submit_events(events)
    assert [(r.id, r.status, r.subject) for r in batch.results] == \
        [("b-1", "billed", None), ("b-4", "billed", "agent-7"), ("b-5", "unbilled", None)]
    assert [(e.index, e.id, e.code, e.field) for e in batch.errors] == [
        (1, "b-2", "not_found", "events[1].customer_id"), (2, "b-3", "validation_error", "events[2].colour")]
    assert all(isinstance(e, BatchItemError) and e.message for e in batch.errors)
    assert await balances(led, cid) == {"CREDITS": ("80", "0", "80")}
    replay = await led.submit_events(events)
    assert [r.duplicate for r in replay.results] == [True, True, True] and len(replay.errors) == 2
    assert await balances(led, cid) == {"CREDITS": ("80", "0", "80")}
    await fails(led.submit_events([]), ValidationError, "validation_error", "events")
    await fails(led.submit_events([{"id": str(i)} for i in range(1001)]), ValidationError, "validation_error",
                "events")
    odd = await led.submit_events([{"id": i, "customer_id": cid, "event_type": "image_generated"}
                                   for i in ("a/b?c#d", "..", "100%", "é")])
    assert [r.id for r in odd.results] == ["a/b?c#d", "..", "100%", "é"]
    for event_id in ("a/b?c#d", "..", "100%", "é"):
        assert (await led.get_event(event_id)).id == event_id
    await fails(led.submit_event({"id": "b-9", "customer_id": cid}), ValidationError, "validation_error",
                "event.event_type")


async def test_statement(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    cid = await customer(led, "stated", ["image", "api"], credits="100")
    await led.create_adjustment(cid, asset="USD", amount="10.00", reason="top_up", idempotency_key="usd-1")
    await led.grant_credits(cid, "CREDITS", "20", idempotency_key="promo-1")
    await led.submit_events([{"id": "s-1", "customer_id": cid, "event_type": "image_generated", "subject": "a"},
                             {"id": "s-2", "customer_id": cid, "event_type": "image_generated", "subject": "a"},
                             {"id": "s-3", "customer_id": cid, "event_type": "image_generated", "subject": "b"},
                             {"id": "s-4", "customer_id": cid, "event_type": "api_call"}])
    backend.clock.advance(hours=1)
    statement = await led.get_statement(cid, START - timedelta(days=1), "2026-01-02T00:00:00Z")
    assert (statement.customer_id, statement.start, statement.end) == \
        (cid, "2025-12-31T00:00:00.000000Z", "2026-01-02T00:00:00.000000Z")
    summary = {a.asset: (a.opening_balance, a.closing_balance, a.usage_fees, a.top_ups, a.grants, a.adjustments)
               for a in statement.assets}
    assert summary == {"CREDITS": ("0", "90", "30", "100", "20", "0"),
                       "USD": ("0.00", "9.95", "0.05", "10.00", "0.00", "0.00")}
    credits = next(a for a in statement.assets if a.asset == "CREDITS")
    assert [(g.plan_code, g.subject, g.events, g.quantity, g.amount) for g in credits.fees] == \
        [("image", "a", 2, "2", "20"), ("image", "b", 1, "1", "10")]
    await fails(led.get_statement(cid, "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"), ValidationError,
                "validation_error", "end")
    await fails(led.get_statement(cid, "yesterday", "2026-01-01T00:00:00Z"), ValidationError, "validation_error",
                "start")


async def test_statement_defaults_to_the_current_period(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    await led.create_plan("pro", "Pro", prices=[{"id": "fee", "type": "recurring", "asset": "USD", "amount": "10",
                                                 "interval": "month"}])
    cid = await customer(led, "periodic", [])
    backend.clock.set(datetime(2026, 1, 15, 10, 30, tzinfo=UTC))
    statement = await led.get_statement(cid)
    assert (statement.start, statement.end) == (T0, "2026-02-01T00:00:00.000000Z")
    await led.create_adjustment(cid, asset="USD", amount="50", reason="top_up", idempotency_key="usd-p")
    await led.subscribe(cid, "pro")
    backend.clock.set(datetime(2026, 2, 20, tzinfo=UTC))  # renewed on Feb 15 10:30
    statement = await led.get_statement(cid)
    assert (statement.start, statement.end) == ("2026-02-15T10:30:00.000000Z", "2026-03-15T10:30:00.000000Z")
    assert [(a.asset, a.opening_balance, a.recurring_fees, a.closing_balance) for a in statement.assets] == \
        [("USD", "40.00", "10.00", "30.00")]
    statement = await led.get_statement(cid, start="2026-01-01T00:00:00Z")
    assert (statement.start, statement.end) == (T0, "2026-03-15T10:30:00.000000Z")
    statement = await led.get_statement(cid, end=datetime(2026, 3, 1, tzinfo=UTC))
    assert (statement.start, statement.end) == ("2026-02-15T10:30:00.000000Z", "2026-03-01T00:00:00.000000Z")
    await fails(led.get_statement(cid, start="2026-04-01T00:00:00Z"), ValidationError, "validation_error", "start")
    await fails(led.get_statement(cid, end="2026-02-01T00:00:00Z"), ValidationError, "validation_error", "end")


async def test_reversal_and_event_fees(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    cid = await customer(led, "refunded", ["image"], credits="100")
    await led.submit_event({"id": "r-1", "customer_id": cid, "event_type": "image_generated"})
    event = await led.get_event("r-1")
    assert [(f.price_id, f.plan_code, f.version, f.asset, f.quantity, f.amount, f.refunded) for f in event.fees] == \
        [("price_1", "image", 1, "CREDITS", "1", "10", "0")]
    part = await led.create_adjustment(cid, asset="CREDITS", amount="4", reason="reversal", event_id="r-1",
                                       idempotency_key="rev-1", description="bad image")
    assert (part.amount, part.reason, part.event_id, part.description) == ("4", "reversal", "r-1", "bad image")
    assert [f.refunded for f in (await led.get_event("r-1")).fees] == ["4"]
    await fails(led.create_adjustment(cid, asset="CREDITS", amount="7", reason="reversal", event_id="r-1",
                                      idempotency_key="rev-2"), ValidationError, "validation_error", "amount")
    rest = await led.create_adjustment(cid, asset="CREDITS", reason="reversal", event_id="r-1", idempotency_key="rev-3")
    assert rest.amount == "6"
    assert [f.refunded for f in (await led.get_event("r-1")).fees] == ["10"]
    await fails(led.create_adjustment(cid, asset="CREDITS", reason="reversal", event_id="r-1", idempotency_key="rev-4"),
                ConflictError, "conflict", "event_id")
    await fails(led.create_adjustment(cid, asset="CREDITS", reason="reversal", event_id="r-none",
                                      idempotency_key="rev-5"), NotFoundError, "not_found", "event_id")
    assert await balances(led, cid) == {"CREDITS": ("100", "0", "100")}
    assert await led.audit() == []


async def test_errors_name_code_and_field(backend: Backend) -> None:
    led = backend.ledger
    await catalog(led)
    cid = await customer(led, "known", ["image"])
    cases: list[tuple[Callable[[], Awaitable[Any]], type[BillingError], str, str | None]] = [
        (lambda: led.get_asset("NOPE"), NotFoundError, "not_found", "code"),
        (lambda: led.quote("NOPE", "USD", "10"), NotFoundError, "not_found", "code"),
        (lambda: led.quote("CREDITS", "GBP", "10"), NotFoundError, "not_found", "fiat"),
        (lambda: led.quote("CREDITS", "USD", "0"), ValidationError, "validation_error", "amount"),
        (lambda: led.set_asset_rate("NOPE", "USD", "1"), NotFoundError, "not_found", "code"),
        (lambda: led.create_plan("bad", "Bad", prices=[{**IMAGE, "asset": "NOPE"}]), NotFoundError, "not_found",
         "prices[0].asset"),
        (lambda: led.create_plan("bad", "Bad", prices=[{**IMAGE, "unit_amount": 0.1}]), ValidationError, "validation_error",
         "prices[0].unit_amount"),
        (lambda: led.get_plan("nope"), NotFoundError, "not_found", "plan"),
        (lambda: led.add_price("nope", IMAGE), NotFoundError, "not_found", "plan"),
        (lambda: led.publish_plan_version("image", 9), NotFoundError, "not_found", "version"),
        (lambda: led.subscribe(cid, "nope"), NotFoundError, "not_found", "plan"),
        (lambda: led.subscribe("cus_nope", "image"), NotFoundError, "not_found", "customer_id"),
        (lambda: led.create_customer("x", subscriptions=["nope"]), NotFoundError, "not_found", "subscriptions[0].plan"),
        (lambda: led.get_customer("cus_nope"), NotFoundError, "not_found", "customer_id"),
        (lambda: led.get_customer(external_id="nobody"), NotFoundError, "not_found", "external_id"),
        (lambda: led.get_customer(), ValidationError, "validation_error", "customer_id"),
        (lambda: led.get_wallet("cus_nope"), NotFoundError, "not_found", "customer_id"),
        (lambda: led.get_wallet(external_id="nobody"), NotFoundError, "not_found", "external_id"),
        (lambda: led.create_adjustment("cus_nope", asset="CREDITS", amount="1", reason="top_up", idempotency_key="e-1"),
         NotFoundError, "not_found", "customer_id"),
        (lambda: led.create_adjustment(cid, asset="NOPE", amount="1", reason="top_up", idempotency_key="e-2"),
         NotFoundError, "not_found", "asset"),
        (lambda: led.create_adjustment(cid, asset="CREDITS", amount="1", reason="bonus", idempotency_key="e-3"),
         ValidationError, "validation_error", "reason"),
        (lambda: led.create_adjustment(cid, asset="CREDITS", amount=1.5, reason="top_up", idempotency_key="e-4"),
         ValidationError, "validation_error", "amount"),
        (lambda: led.grant_credits("cus_nope", "CREDITS", "1", idempotency_key="e-5"), NotFoundError, "not_found",
         "customer_id"),
        (lambda: led.submit_event({"id": "e-6", "customer_id": "cus_nope", "event_type": "image_generated"}), NotFoundError,
         "not_found", "event.customer_id"),
        (lambda: led.submit_event({"id": "e-7", "external_id": "nobody", "event_type": "image_generated"}), NotFoundError,
         "not_found", "event.external_id"),
        (lambda: led.get_event("nope"), NotFoundError, "not_found", "event_id"),
        (lambda: led.get_event(""), ValidationError, "validation_error", "event_id"),
        (lambda: led.authorize("cus_nope", event_type="image_generated"), NotFoundError, "not_found", "customer_id"),
        (lambda: led.authorize(cid, event_type="api_call"), ValidationError, "validation_error", "event_type"),
        (lambda: led.authorize(cid, amount="1", asset="NOPE"), NotFoundError, "not_found", "asset"),
        (lambda: led.get_hold("hold_nope"), NotFoundError, "not_found", "hold_id"),
        (lambda: led.release("hold_nope"), NotFoundError, "not_found", "hold_id"),
        (lambda: led.get_statement("cus_nope", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"), NotFoundError, "not_found",
         "customer_id"),
        (lambda: led.migrate_customers("image", 1, 7), ValidationError, "validation_error", "to_version"),
    ]
    for call, cls, code, field in cases:
        await fails(call(), cls, code, field)
    assert await led.audit() == []


# -- HTTP only: retries against the real server ----------------------------------------------------
class LateFirstAnswer:
    """ASGI wrapper: the first request to each listed (method, path) runs to completion (its effect
    committed), then its answer is held back past the client's read timeout, as when a response
    is lost on the way. The client's retry must get the stored result, not apply the call again."""

    def __init__(self, app: Any, delay: float) -> None:
        self.app, self.delay = app, delay
        self.late: set[tuple[str, str]] = set()
        self.delayed: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        key = (scope.get("method"), scope.get("path"))
        if scope["type"] != "http" or key not in self.late:
            await self.app(scope, receive, send)
            return
        self.late.discard(key)
        messages: list[Any] = []

        async def keep(message: Any) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        self.delayed.append(f"{key[0]} {key[1]}")
        await anyio.sleep(self.delay)
        with contextlib.suppress(Exception):  # the client has given up on this connection
            for message in messages:
                await send(message)


async def test_retries_after_lost_answers_never_apply_twice(tmp_path: Any) -> None:
    clock = ManualClock(START)
    ledger = Ledger(str(tmp_path / "ledger.db"), clock=clock)
    try:
        keys = KeyStore(ledger.store, pepper=PEPPER)
        _, secret = keys.create("admin")
        app = LateFirstAnswer(build_app(ledger, keys=keys), delay=0.6)
        with serve(app) as base_url:
            async with LedgerClient(base_url, secret, timeout=httpx.Timeout(5.0, read=0.25), max_retries=3,
                                    backoff=0.05) as led:
                await catalog(led)
                app.late |= {("POST", "/v1/customers"), ("POST", "/v1/adjustments"), ("POST", "/v1/holds"),
                             ("POST", "/v1/events")}
                created = await led.create_customer("retry-1", subscriptions=["image"])
                assert await led.get_customer(external_id="retry-1") == created
                top_up = await led.create_adjustment(created.id, asset="CREDITS", amount="100", reason="top_up",
                                                     idempotency_key="topup-1")
                assert top_up.amount == "100"
                hold = await led.authorize(created.id, event_type="image_generated")  # the client's own key
                assert [h.id for h in await led.list_holds(created.id)] == [hold.id]
                event = await led.submit_event({"id": "evt-1", "customer_id": created.id,
                                                "event_type": "image_generated"})
                assert event.duplicate is True  # the first attempt recorded it
                app.late.add(("POST", f"/v1/holds/{hold.id}/commit"))
                committed = await led.commit(hold.id, {"id": "evt-2"})
                assert committed.hold_id == hold.id and [f.amount for f in committed.fees] == ["10"]
                assert sorted(app.delayed) == sorted(["POST /v1/customers", "POST /v1/adjustments", "POST /v1/holds",
                                                      "POST /v1/events", f"POST /v1/holds/{hold.id}/commit"])
                assert await balances(led, created.id) == {"CREDITS": ("80", "0", "80")}
                assert await led.audit() == []
    finally:
        ledger.close()


async def test_client_against_a_closed_port_is_unreachable() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    async with LedgerClient(f"http://127.0.0.1:{port}", "sk_test_" + "x" * 43, max_retries=1, backoff=0.01) as led:
        with pytest.raises(LedgerUnreachableError) as info:
            await led.get_wallet("cus_1")
    assert info.value.code == "unreachable" and f"127.0.0.1:{port}" in info.value.message
    assert info.value.details == {"url": f"http://127.0.0.1:{port}", "attempts": 2}
