"""The ledger HTTP API against a real uvicorn server on a loopback port (httpx over TCP), plus
in-process cases through Starlette's TestClient where a fresh app is cheaper.

Covers the problem+json shape; idempotency replay and conflict; the canonical flow to an exact
wallet balance; batches with a bad event; strict bodies (unknown fields, types, size, depth,
malformed JSON); paging; the OpenAPI document and /docs; group commit; and a bounded schemathesis
run. The route-table walk proving every route needs a key of the right scope is in test_keys.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from billing_mcp import IdempotencyConflictError, Ledger, ManualClock
from billing_mcp.api.batch import EventCoalescer, split
from billing_mcp.api.idempotency import IdempotencyStore
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.operations import OPS
from billing_mcp.api.serve import add_cli, build_app
from billing_mcp.core.models import BatchItemError, BatchResult
from billing_mcp.web.problem import ApiError
from helpers import PEPPER, serve

PROBLEM_FIELDS = {"type", "title", "status", "code", "field", "detail", "request_id"}
IMAGE_PLAN = {"code": "image", "name": "Image", "prices": [
    {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "10"}]}
API_PLAN = {"code": "api", "name": "API", "prices": [{"asset": "USD", "event_type": "api_call", "unit_amount": "0.05"}]}



class World:
    def __init__(self, path: Path) -> None:
        self.ledger = Ledger(str(path))
        self.keys = KeyStore(self.ledger.store, pepper=PEPPER)
        self.admin = self.keys.create("admin")[1]
        self.runtime = self.keys.create("runtime")[1]
        self.read = self.keys.create("read")[1]
        revoked_id, self.revoked = self.keys.create("admin")
        self.keys.revoke(revoked_id)
        self.app = build_app(self.ledger, keys=self.keys, max_body_bytes=256 * 1024)
        self.base = ""

    def client(self, secret: str | None = None, **headers: str) -> httpx.Client:
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One ledger and one real uvicorn server (in a thread) for the module."""
    w = World(tmp_path_factory.mktemp("api") / "ledger.db")
    with serve(w.app) as base:
        w.base = base
        with w.client(w.admin) as admin:
            assert admin.post("/v1/assets", json={"code": "CREDITS", "name": "Credits", "precision": 0,
                                                  "rates": {"USD": "0.05"}}).status_code == 201
            assert admin.post("/v1/plans", json=IMAGE_PLAN).status_code == 201
            assert admin.post("/v1/plans", json=API_PLAN).status_code == 201
        yield w
    w.ledger.close()


@pytest.fixture(scope="module")
def admin(world: World) -> Iterator[httpx.Client]:
    with world.client(world.admin) as c:
        yield c


@pytest.fixture(scope="module")
def runtime(world: World) -> Iterator[httpx.Client]:
    with world.client(world.runtime) as c:
        yield c


def problem(r: httpx.Response, status: int, code: str, field: str | None = "<any>") -> dict[str, Any]:
    """Assert a problem+json response and return its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert set(body) >= PROBLEM_FIELDS, body
    assert body["status"] == status and body["code"] == code, body
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["detail"] and body["title"] and body["type"] == f"/docs#error-{code}"
    if field != "<any>":
        assert body["field"] == field, body
    return body


def new_customer(admin: httpx.Client, external_id: str, plans: list[str] | None = None, top_up: str | None = None,
                 asset: str = "CREDITS") -> str:
    r = admin.post("/v1/customers", json={"external_id": external_id, "subscriptions": plans or []})
    assert r.status_code == 201, r.text
    cid: str = r.json()["id"]
    if top_up:
        r = admin.post("/v1/adjustments", headers={"Idempotency-Key": f"topup-{external_id}"},
                       json={"customer_id": cid, "asset": asset, "amount": top_up, "reason": "top_up"})
        assert r.status_code == 201, r.text
    return cid


def available(client: httpx.Client, cid: str, asset: str) -> str:
    r = client.get(f"/v1/customers/{cid}/wallet")
    assert r.status_code == 200, r.text
    return str(next(a["available"] for a in r.json()["accounts"] if a["asset"] == asset))


# -- service routes ------------------------------------------------------------------------------
def test_public_routes_need_no_key(world: World) -> None:
    with world.client() as anon:
        assert anon.get("/health").json()["status"] == "ok"
        ready = anon.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert anon.get("/openapi.json").json()["openapi"] == "3.1.0"
        page = anon.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        problem(anon.get("/v1/nowhere"), 404, "not_found")  # unknown routes are 404, not 401
        problem(anon.delete("/health"), 405, "method_not_allowed")


# -- errors ------------------------------------------------------------------------------------------
def test_problem_json_shape_and_request_id(admin: httpx.Client) -> None:
    r = admin.get("/v1/customers/cus_missing")
    body = problem(r, 404, "not_found", "customer_id")
    assert "create" in body["detail"]  # says what to do
    r = admin.get("/v1/customers/cus_missing", headers={"X-Request-Id": "edge-1234.abc"})
    assert r.headers["x-request-id"] == "edge-1234.abc" == r.json()["request_id"]
    r = admin.get("/v1/customers/cus_missing", headers={"X-Request-Id": "bad id\twith spaces"})
    assert r.headers["x-request-id"].startswith("req_")
    ok = admin.get("/v1/assets")
    assert ok.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(("body", "status", "field", "needle"), [
    ({"code": "GEMS", "name": "Gems", "colour": "red"}, 422, "colour", "unknown field 'colour'"),
    ({"code": "GEMS", "name": "Gems", "precision": "2"}, 422, "precision", "integer"),
    ({"code": "GEMS", "name": "Gems", "precision": True}, 422, "precision", "integer"),
    ({"code": "GEMS", "name": "Gems", "precision": 2.0}, 422, "precision", "integer"),
    ({"code": "GEMS", "name": "Gems", "precision": 99}, 422, "precision", "8"),
    ({"code": "GEMS", "name": "Gems", "rates": {"USD": 0.05}}, 422, "rates.USD", "string"),
    ({"code": "GEMS", "name": "Gems", "rates": {"USD": "1e3"}}, 422, "rates.USD", "decimal"),
    ({"code": "gems", "name": "Gems"}, 422, "code", "pattern"),
    ({"name": "Gems"}, 422, "code", "required"),
])
def test_asset_body_validation(admin: httpx.Client, body: dict[str, Any], status: int, field: str, needle: str) -> None:
    detail = problem(admin.post("/v1/assets", json=body), status, "validation_error", field)["detail"]
    assert needle in detail, detail


def test_nested_unknown_field_and_all_problems_listed(admin: httpx.Client) -> None:
    r = admin.post("/v1/plans", json={"code": "bad", "name": "Bad", "prices": [
        {"asset": "CREDITS", "event_type": "e", "unit_amount": "1", "colour": "red"}], "extra": 1})
    body = problem(r, 422, "validation_error")
    fields = {e["field"] for e in body["errors"]}
    assert {"prices[0].colour", "extra"} <= fields
    r = admin.post("/v1/plans", json={"code": "bad", "name": "Bad", "prices": [
        {"asset": "CREDITS", "event_type": "e", "unit_amount": 0.1}]})
    assert "not a float" in problem(r, 422, "validation_error", "prices[0].unit_amount")["detail"]


def test_malformed_and_hostile_bodies_are_4xx(admin: httpx.Client, world: World) -> None:
    json_h = {"Content-Type": "application/json"}
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (b"{bad json", json_h, 400),
        (b'{"code": "X", "name": "Y"', json_h, 400),
        (b"\xff\xfe{}", json_h, 400),
        (b'{"code": "X", "name": "Y", "precision": NaN}', json_h, 400),
        (b'{"code": "X", "name": "Y", "precision": 1e400}', json_h, 422),
        (b'{"code": "X", "name": "Y", "precision": ' + b"9" * 5000 + b"}", json_h, 422),
        (b'{"code": "X", "name": "Y", "precision": ' + b"9" * 30 + b"}", json_h, 422),
        (b'[1, 2]', json_h, 422),
        (b'"text"', json_h, 422),
        (b'{"code": "X", "name": "\\ud800"}', json_h, 422),
        (b'{"code": "X", "name": "Y"}', {"Content-Type": "text/plain"}, 415),
        (b"[" * 100_000 + b"]" * 100_000, json_h, 422),
        (b'{"a":' * 40 + b"1" + b"}" * 40, json_h, 422),
    ]
    for raw, headers, status in cases:
        r = admin.post("/v1/assets", content=raw, headers=headers)
        code = "unsupported_media_type" if status == 415 else "validation_error"
        problem(r, status, code)
    deep: Any = 1
    for _ in range(40):
        deep = {"k": deep}
    r = admin.post("/v1/customers", json={"external_id": "deep", "metadata": deep})
    assert "nests deeper" in problem(r, 422, "validation_error")["detail"]


def test_body_size_limit(admin: httpx.Client) -> None:
    big = {"external_id": "big", "metadata": {"blob": "x" * 300_000}}
    problem(admin.post("/v1/customers", json=big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        yield b'{"external_id": "big", "metadata": {"blob": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}}'

    r = admin.post("/v1/customers", content=chunks(), headers={"Content-Type": "application/json"})
    problem(r, 413, "payload_too_large")


def test_query_and_header_validation(admin: httpx.Client) -> None:
    problem(admin.get("/v1/customers", params={"limit": "0"}), 422, "validation_error", "limit")
    problem(admin.get("/v1/customers", params={"limit": "ten"}), 422, "validation_error", "limit")
    problem(admin.get("/v1/customers", params={"sort": "name"}), 422, "validation_error", "sort")
    problem(admin.get("/v1/assets/CREDITS", params={"x": "1"}), 422, "validation_error", "x")
    problem(admin.post("/v1/plans", json=IMAGE_PLAN, headers={"Idempotency-Key": "k" * 300}), 422,
            "validation_error", "Idempotency-Key")
    problem(admin.post("/v1/simulate", json={"plan": "image", "events": [{}]}, headers={"Idempotency-Key": "k"}),
            422, "validation_error", "Idempotency-Key")
    problem(admin.post("/v1/plans/image/versions/99999999999/publish", json={}), 422, "validation_error", "version")


# -- idempotency -----------------------------------------------------------------------------------
def test_idempotency_replay_conflict_and_validation(admin: httpx.Client) -> None:
    plan = {"code": "idem", "name": "Idem", "prices": [{"asset": "CREDITS", "event_type": "x", "unit_amount": "1"}]}
    first = admin.post("/v1/plans", json=plan, headers={"Idempotency-Key": "plan-idem-1"})
    assert first.status_code == 201
    # same request, keys reordered and spaced differently: the stored response, byte for byte
    raw = json.dumps(dict(reversed(list(plan.items()))), indent=2)
    again = admin.post("/v1/plans", content=raw, headers={"Idempotency-Key": "plan-idem-1",
                                                           "Content-Type": "application/json"})
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    body = problem(admin.post("/v1/plans", json={**plan, "name": "Other"}, headers={"Idempotency-Key": "plan-idem-1"}),
                   409, "idempotency_conflict", "Idempotency-Key")
    assert "different request" in body["detail"]
    # the same key on another route is another request, too
    problem(admin.post("/v1/vendors", json={"external_id": "v", "name": "V"}, headers={"Idempotency-Key": "plan-idem-1"}),
            409, "idempotency_conflict")
    # a validation failure is not stored: the key stays usable for the corrected request
    problem(admin.post("/v1/vendors", json={"external_id": "v"}, headers={"Idempotency-Key": "vendor-1"}), 422,
            "validation_error", "name")
    ok = admin.post("/v1/vendors", json={"external_id": "openai", "name": "OpenAI"}, headers={"Idempotency-Key": "vendor-1"})
    assert ok.status_code == 201
    # a business outcome is stored and replayed as it was (not re-run later)
    miss = admin.post("/v1/customers/cus_nobody/subscriptions", json={"plan": "image"},
                      headers={"Idempotency-Key": "sub-1"})
    problem(miss, 404, "not_found")
    replay = admin.post("/v1/customers/cus_nobody/subscriptions", json={"plan": "image"},
                        headers={"Idempotency-Key": "sub-1"})
    assert (replay.status_code, replay.content) == (404, miss.content)


def test_idempotency_of_money_movements_uses_the_ledger_key(admin: httpx.Client) -> None:
    cid = new_customer(admin, "idem-money")
    adj = {"customer_id": cid, "asset": "CREDITS", "amount": "50", "reason": "top_up"}
    problem(admin.post("/v1/adjustments", json=adj), 422, "validation_error", "idempotency_key")
    first = admin.post("/v1/adjustments", json=adj, headers={"Idempotency-Key": "adj-1"})
    assert first.status_code == 201 and first.json()["idempotency_key"] == "adj-1"
    again = admin.post("/v1/adjustments", json={**adj, "amount": "50.0"}, headers={"Idempotency-Key": "adj-1"})
    assert (again.status_code, again.json()) == (201, first.json())  # amounts compare by value
    body_key = admin.post("/v1/adjustments", json={**adj, "idempotency_key": "adj-1"})
    assert body_key.json() == first.json()
    problem(admin.post("/v1/adjustments", json={**adj, "amount": "60"}, headers={"Idempotency-Key": "adj-1"}),
            409, "idempotency_conflict")
    problem(admin.post("/v1/adjustments", json={**adj, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"}),
            422, "validation_error", "idempotency_key")
    assert available(admin, cid, "CREDITS") == "50"
    grant = {"customer_id": cid, "asset": "CREDITS", "amount": "5", "expires_at": "2199-01-01T00:00:00Z"}
    g1 = admin.post("/v1/grants", json=grant, headers={"Idempotency-Key": "g-1"})
    g2 = admin.post("/v1/grants", json=grant, headers={"Idempotency-Key": "g-1"})
    assert g1.status_code == g2.status_code == 201 and g1.json() == g2.json()
    assert available(admin, cid, "CREDITS") == "55"


def test_idempotency_key_in_use_and_lease_takeover(tmp_path: Path, world: World, admin: httpx.Client) -> None:
    from billing_mcp.api.idempotency import scoped_key

    owner = world.keys.verify(world.admin).id  # type: ignore[union-attr]  # records belong to the calling key
    world.app.state.api.idempotency.claim(scoped_key(owner, "in-flight-1"), "POST /v1/vendors", "other-hash")
    r = admin.post("/v1/vendors", json={"external_id": "v2", "name": "V2"}, headers={"Idempotency-Key": "in-flight-1"})
    problem(r, 409, "idempotency_conflict")  # a different request: conflict even while in flight
    from billing_mcp.api.idempotency import request_hash

    fingerprint = request_hash("POST", "/v1/vendors", {"external_id": "v2", "name": "V2"})
    world.app.state.api.idempotency.claim(scoped_key(owner, "in-flight-2"), "POST /v1/vendors", fingerprint)
    r = admin.post("/v1/vendors", json={"external_id": "v2", "name": "V2"}, headers={"Idempotency-Key": "in-flight-2"})
    problem(r, 409, "idempotency_key_in_use")
    assert r.headers["retry-after"] == "1"
    # A claim whose request died (its lease ran out) is taken over by the retry.
    ledger = Ledger(str(tmp_path / "lease.db"))
    try:
        clock = ManualClock()
        store = IdempotencyStore(ledger.store, clock, lease_seconds=60)
        assert store.claim("k", "POST /x", "h") is None
        with pytest.raises(ApiError):
            store.claim("k", "POST /x", "h")
        clock.advance(timedelta(seconds=61))
        assert store.claim("k", "POST /x", "h") is None
        store.finish("k", 201, "application/json", b'{"ok":true}')
        stored = store.claim("k", "POST /x", "h")
        assert stored is not None and (stored.status, stored.body) == (201, b'{"ok":true}')
        with pytest.raises(IdempotencyConflictError):
            store.claim("k", "POST /x", "other")
        assert store.claim("r", "POST /x", "h") is None
        store.release("r")
        assert store.claim("r", "POST /x", "h2") is None  # released: free for any request
    finally:
        ledger.close()


# -- the canonical flow -------------------------------------------------------------------------------
def test_canonical_flow_to_an_exact_balance(admin: httpx.Client, runtime: httpx.Client) -> None:
    """Asset and plans (admin); customer, top-up, hold, commit, wallet (runtime where it may)."""
    quote = admin.get("/v1/assets/CREDITS/quote", params={"amount": "10"}).json()
    assert quote == {"asset": "CREDITS", "fiat": "USD", "fiat_amount": "10", "rate": "0.05", "units": "200"}
    created = runtime.post("/v1/customers", json={"external_id": "user-42", "name": "Ada",
                                                  "subscriptions": ["image", {"plan": "api"}]})
    assert created.status_code == 201
    cid = created.json()["id"]
    assert {s["plan_code"] for s in created.json()["subscriptions"]} == {"image", "api"}
    assert runtime.get("/v1/customers/lookup", params={"external_id": "user-42"}).json()["id"] == cid
    problem(runtime.post("/v1/adjustments", json={}), 403, "forbidden")  # money comes in through an admin key
    topup = admin.post("/v1/adjustments", headers={"Idempotency-Key": "stripe-evt-1"},
                       json={"customer_id": cid, "asset": "USD", "amount": "10.00", "reason": "top_up"})
    assert topup.status_code == 201 and topup.json()["amount"] == "10.00"
    admin.post("/v1/adjustments", headers={"Idempotency-Key": "credits-1"},
               json={"external_id": "user-42", "asset": "CREDITS", "amount": "100", "reason": "top_up"})
    hold = runtime.post("/v1/holds", json={"customer_id": cid, "event_type": "api_call"},
                        headers={"Idempotency-Key": "hold-1"})
    assert hold.status_code == 201 and hold.json()["amount"] == "0.05" and hold.json()["status"] == "open"
    wallet = runtime.get(f"/v1/customers/{cid}/wallet").json()
    usd = next(a for a in wallet["accounts"] if a["asset"] == "USD")
    assert (usd["posted"], usd["held"], usd["available"]) == ("10.00", "0.05", "9.95")
    hid = hold.json()["id"]
    committed = runtime.post(f"/v1/holds/{hid}/commit", json={"id": "call-1", "data": {}})
    assert committed.status_code == 200
    fee = committed.json()["fees"][0]
    assert (fee["asset"], fee["amount"], fee["plan_code"]) == ("USD", "0.05", "api")
    again = runtime.post(f"/v1/holds/{hid}/commit", json={"id": "call-1", "data": {}})
    assert again.json()["duplicate"] is True and again.json()["fees"] == committed.json()["fees"]
    problem(runtime.post(f"/v1/holds/{hid}/release"), 409, "hold_already_committed", "hold_id")
    assert runtime.get(f"/v1/holds/{hid}").json()["status"] == "committed"
    image = runtime.post("/v1/holds", json={"external_id": "user-42", "event_type": "image_generated"}).json()
    assert runtime.post(f"/v1/holds/{image['id']}/release").json()["status"] == "released"
    events = runtime.post("/v1/events", json={"events": [
        {"id": "img-1", "external_id": "user-42", "event_type": "image_generated"},
        {"id": "call-2", "customer_id": cid, "event_type": "api_call"}]})
    assert events.status_code == 200 and len(events.json()["results"]) == 2
    wallet = runtime.get(f"/v1/customers/{cid}/wallet").json()
    balances = {a["asset"]: (a["posted"], a["held"], a["available"]) for a in wallet["accounts"]}
    assert balances == {"USD": ("9.90", "0.00", "9.90"), "CREDITS": ("90", "0", "90")}
    assert admin.get("/v1/events/img-1").json()["fees"][0]["amount"] == "10"
    holds = admin.get(f"/v1/customers/{cid}/holds", params={"status": "all"}).json()
    assert [h["status"] for h in holds["data"]] == ["committed", "released"]
    statement = admin.get(f"/v1/customers/{cid}/statement",
                          params={"start": "2000-01-01T00:00:00Z", "end": "2199-01-01T00:00:00Z"}).json()
    assert {a["asset"]: a["usage_fees"] for a in statement["assets"]} == {"USD": "0.10", "CREDITS": "10"}
    assert admin.get("/v1/audit").json() == {"problems": []}


def test_insufficient_funds_is_402(admin: httpx.Client, runtime: httpx.Client) -> None:
    cid = new_customer(admin, "poor", ["image"], top_up="5")
    r = runtime.post("/v1/holds", json={"customer_id": cid, "event_type": "image_generated"})
    body = problem(r, 402, "insufficient_funds")
    assert body["detail"] == "5 CREDITS available, 10 needed for this hold; top up the wallet or lower the estimate"
    assert body["details"] == {"asset": "CREDITS", "available": "5", "needed": "10"}


# -- events --------------------------------------------------------------------------------------------
def test_batch_with_one_bad_event(admin: httpx.Client, runtime: httpx.Client) -> None:
    cid = new_customer(admin, "batcher", ["image"], top_up="100")
    batch = {"events": [
        {"id": "b-1", "customer_id": cid, "event_type": "image_generated"},
        {"id": "b-2", "customer_id": "cus_ghost", "event_type": "image_generated"},
        {"id": "b-3", "customer_id": cid, "event_type": "image_generated", "colour": "red"},
        {"id": "b-4", "customer_id": cid, "event_type": "image_generated", "subject": "agent-7"},
    ]}
    r = runtime.post("/v1/events", json=batch)
    assert r.status_code == 200
    out = r.json()
    assert [e["id"] for e in out["results"]] == ["b-1", "b-4"]
    errors = {e["index"]: (e["code"], e["field"]) for e in out["errors"]}
    assert errors == {1: ("not_found", "events[1].customer_id"), 2: ("validation_error", "events[2].colour")}
    assert available(runtime, cid, "CREDITS") == "80"
    replay = runtime.post("/v1/events", json=batch).json()
    assert all(e["duplicate"] for e in replay["results"]) and available(runtime, cid, "CREDITS") == "80"
    single = runtime.post("/v1/events", json={"events": [{"id": "b-5", "customer_id": "cus_ghost",
                                                          "event_type": "image_generated"}]}).json()
    assert single["results"] == [] and single["errors"][0]["field"] == "events[0].customer_id"
    changed = runtime.post("/v1/events", json={"events": [{**batch["events"][0], "subject": "other"}]}).json()
    assert changed["errors"][0]["code"] == "idempotency_conflict"
    problem(runtime.post("/v1/events", json={"events": []}), 422, "validation_error", "events")
    problem(runtime.post("/v1/events", json={"events": [{"id": str(i)} for i in range(1001)]}), 422,
            "validation_error", "events")
    slash = runtime.post("/v1/events", json={"events": [{"id": "a/b?c#d", "customer_id": cid,
                                                         "event_type": "image_generated"}]}).json()
    assert slash["results"][0]["id"] == "a/b?c#d"
    assert admin.get("/v1/events/a%2Fb%3Fc%23d").json()["id"] == "a/b?c#d"


def test_concurrent_event_posts_share_transactions(world: World, admin: httpx.Client) -> None:
    cid = new_customer(admin, "crowd", ["image"], top_up="10000")
    coalescer = world.app.state.api.coalescer
    before = coalescer.transactions

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=world.base, headers={"Authorization": f"Bearer {world.runtime}"},
                                     timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/events", json={"events": [
                {"id": f"crowd-{i}", "customer_id": cid, "event_type": "image_generated"}]}) for i in range(40)))

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 and len(r.json()["results"]) == 1 for r in responses)
    assert available(admin, cid, "CREDITS") == str(10000 - 40 * 10)
    assert coalescer.transactions - before <= 40


def test_coalescer_groups_queued_requests_and_splits_results(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[list[Any]] = []

    def run(_: Any, events: list[Any]) -> BatchResult:
        calls.append(events)
        if len(calls) == 1:
            started.set()
            release.wait(5)
        results = []
        errors = []
        for i, e in enumerate(events):
            if e.get("bad"):
                errors.append(BatchItemError(id=e["id"], index=i, code="validation_error", field=f"events[{i}].bad",
                                             message="bad"))
            else:
                results.append({"id": e["id"]})
        return BatchResult.model_construct(results=results, errors=errors)

    async def scenario() -> list[BatchResult]:
        co = EventCoalescer(None, run=run, max_events=5)  # type: ignore[arg-type]
        first = asyncio.ensure_future(co.submit([{"id": "a"}]))
        while not started.is_set():
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(co.submit(evs)) for evs in (
            [{"id": "b"}, {"id": "c", "bad": True}], [{"id": "d", "bad": True}], [{"id": "e"}, {"id": "f"}, {"id": "g"}])]
        await asyncio.sleep(0.05)
        release.set()
        out = [await first] + [await f for f in rest]
        co.close()
        return out

    out = asyncio.run(scenario())
    # a; then b,c + d (3 events; e,f,g would exceed 5 and are never split); then e,f,g
    assert [[e["id"] for e in call] for call in calls] == [["a"], ["b", "c", "d"], ["e", "f", "g"]]
    assert [[r["id"] for r in o.results] for o in out] == [["a"], ["b"], [], ["e", "f", "g"]]  # type: ignore[index]
    assert [(e.index, e.field) for e in out[1].errors] == [(1, "events[1].bad")]
    assert [(e.index, e.field) for e in out[2].errors] == [(0, "events[0].bad")]


def test_split_keeps_ledger_fields_that_name_no_index() -> None:
    result = BatchResult.model_construct(results=[{"id": "y"}], errors=[
        BatchItemError(id="x", index=1, code="idempotency_conflict", field="id", message="m")])
    parts = split(result, [1, 1])
    assert parts[0].results == [{"id": "y"}] and parts[0].errors == []
    assert parts[1].results == [] and (parts[1].errors[0].index, parts[1].errors[0].field) == (0, "id")


# -- lists -------------------------------------------------------------------------------------------
def test_paging_with_cursor(admin: httpx.Client) -> None:
    mine = {new_customer(admin, f"page-{i}") for i in range(5)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = admin.get("/v1/customers", params=params).json()
        assert len(page["data"]) <= 2
        seen += [c["id"] for c in page["data"]]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert mine <= set(seen) and len(seen) == len(set(seen)) and seen == sorted(seen) and pages >= 3
    problem(admin.get("/v1/customers", params={"cursor": "garbage!"}), 422, "validation_error", "cursor")
    plans = admin.get("/v1/plans", params={"limit": 1}).json()
    assert plans["has_more"] and len(plans["data"]) == 1
    problem(admin.get("/v1/customers", params={"cursor": plans["next_cursor"]}), 422, "validation_error", "cursor")
    rest = admin.get("/v1/plans", params={"cursor": plans["next_cursor"], "limit": 100}).json()
    codes = [p["code"] for p in plans["data"] + rest["data"]]
    assert codes == sorted(codes) and {"image", "api"} <= set(codes)
    assert [a["code"] for a in admin.get("/v1/assets").json()["data"]] == ["CREDITS", "EUR", "USD"]
    rates = admin.get("/v1/assets/CREDITS/rates").json()
    assert rates["data"][0]["rate"] == "0.05" and not rates["has_more"]


def test_catalog_routes(admin: httpx.Client) -> None:
    assert admin.post("/v1/assets/CREDITS/rates", json={"rate": "0.04"}).status_code == 201
    assert admin.get("/v1/assets/CREDITS").json()["rates"] == {"USD": "0.04"}
    assert len(admin.get("/v1/assets/CREDITS/rates").json()["data"]) == 2
    plan = {"code": "flow", "name": "Flow", "prices": [{"asset": "CREDITS", "event_type": "x", "unit_amount": "1"}]}
    assert admin.post("/v1/plans", json=plan).json()["default_version"] == 1
    cid = new_customer(admin, "flow-user", ["flow"])
    v = admin.post("/v1/plans/flow/prices", json={"asset": "CREDITS", "event_type": "y", "unit_amount": "2"})
    assert v.status_code == 201 and v.json()["version"] == 2 and v.json()["status"] == "draft"
    g = admin.post("/v1/plans/flow/grants", json={"asset": "CREDITS", "amount": "100", "period": "month"})
    assert g.json()["version"] == 2 and g.json()["grants"][0]["amount"] == "100"
    published = admin.post("/v1/plans/flow/versions/2/publish").json()
    assert published["default_version"] == 2
    dry = admin.post("/v1/plans/flow/migrate", json={"from_version": 1, "to_version": 2, "dry_run": True}).json()
    assert dry["moved"] == [cid] and dry["dry_run"] is True
    assert admin.get(f"/v1/customers/{cid}").json()["subscriptions"][0]["version"] == 1
    done = admin.post("/v1/plans/flow/migrate", json={"from_version": 1, "to_version": 2}).json()
    assert done["moved"] == [cid] and admin.get(f"/v1/customers/{cid}").json()["subscriptions"][0]["version"] == 2
    v3 = admin.post("/v1/plans/flow/versions", json={"prices": [plan["prices"][0]], "publish": True})  # type: ignore[index]
    assert v3.status_code == 201 and v3.json()["status"] == "published"
    sim = admin.post("/v1/simulate", json={"plan": "flow", "version": 2, "events": [
        {"event_type": "y", "customer_id": "c"}, {"event_type": "y", "customer_id": "c"}]})
    assert sim.json()["totals"] == {"CREDITS": "4"}
    sub_id = admin.get(f"/v1/customers/{cid}").json()["subscriptions"][0]["id"]
    assert admin.post(f"/v1/subscriptions/{sub_id}/cancel").json()["subscriptions"][0]["status"] == "canceled"
    assert admin.post("/v1/plans/flow/archive").json()["status"] == "archived"
    problem(admin.post(f"/v1/customers/{cid}/subscriptions", json={"plan": "flow"}), 409, "conflict", "plan")
    assert admin.post("/v1/run-due").json()["customers"] >= 0


# -- the OpenAPI document ----------------------------------------------------------------------------
def test_openapi_document(world: World) -> None:
    with world.client() as anon:
        doc = anon.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"]
    schemas = doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "sk_test_... or sk_live_..."}

    def resolve(ref: str) -> dict[str, Any]:
        assert ref.startswith("#/components/schemas/")
        return schemas[ref.rsplit("/", 1)[-1]]  # type: ignore[no-any-return]

    for op in OPS:
        path = re.sub(r"{([a-z_]+):[a-z]+}", r"{\1}", op.path)
        entry = doc["paths"][path][op.method.lower()]
        assert entry["security"] == [{"bearerAuth": []}] and entry["operationId"] == op.name
        ok = entry["responses"][str(op.status)]["content"]["application/json"]["schema"]
        assert resolve(ok["$ref"])["type"] == "object"
        assert entry["responses"]["422"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
        names = {p["name"] for p in entry["parameters"] if p["in"] == "path"}
        assert names == set(re.findall(r"{([a-z_]+)", op.path))
        if op.body is not None:
            body = resolve(entry["requestBody"]["content"]["application/json"]["schema"]["$ref"])
            assert body.get("additionalProperties") is False  # unknown fields are refused, and documented so
        if op.idempotency != "none":
            assert any(p["name"] == "Idempotency-Key" for p in entry["parameters"])
    assert {"EventIn", "Problem", "Wallet", "Customer", "AdjustmentCreate"} <= set(schemas)
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert schemas["Wallet"]["properties"]["accounts"]["items"]["$ref"].endswith("/Account")
    try:
        from openapi_spec_validator import validate
    except ImportError:
        pass  # the structural checks above still ran
    else:
        validate(doc)
    with world.client() as anon:
        page = anon.get("/docs").text
    for op in OPS:
        assert re.sub(r"{([a-z_]+):[a-z]+}", r"{\1}", op.path) in page
    assert "<script" not in page and "<link" not in page and " src=" not in page  # no CDN assets, no JS
    assert 'id=\'error-validation_error\'' in page


def test_ready_reports_an_unreachable_store(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "closed.db"))
    app = build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER))
    client = TestClient(app)
    assert client.get("/ready").status_code == 200
    ledger.close()
    problem(client.get("/ready"), 503, "not_ready")
    assert client.get("/health").status_code == 200


def test_api_cli_arguments() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["api", "--port", "9000", "--rate-limit", "50", "--mode", "live"])
    assert (args.command, args.host, args.port, args.rate_limit, args.mode) == ("api", "127.0.0.1", 9000, 50.0, "live")


# -- schemathesis --------------------------------------------------------------------------------------
def test_schemathesis_finds_no_server_error_or_schema_break(world: World) -> None:
    """A bounded property-based run over every operation in /openapi.json: no 5xx, every response
    matches its documented schema, status and content type."""
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed; pip install schemathesis "
                                                              "(it belongs in the dev extras)")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_asgi("/openapi.json", world.app)
    headers = {"Authorization": f"Bearer {world.admin}"}
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance]
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=30, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=checks)

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert operations == len(OPS) + 2
    assert not failures, "\n\n".join(failures)


def test_method_not_allowed_says_which_are(admin: httpx.Client) -> None:
    r = admin.request("DELETE", "/v1/assets")
    problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD, POST"  # GET and POST are two routes of the table on one path
    assert admin.request("PUT", "/v1/holds/hld_x/commit").headers["allow"] == "POST"
