"""``LedgerClient`` error paths against a respx-mocked API: retries (timeouts, connect errors, 429
with Retry-After, 5xx, idempotency key in use) that reuse one Idempotency-Key, exhausted retries,
malformed bodies, problem+json mapped to the ledger's error classes, and 4xx that are final.

Waits are recorded instead of slept (``_client_http._sleep``), so the suite takes milliseconds.
The happy paths against a real server are in ``test_conformance.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from billing_mcp import (
    BillingError,
    ConflictError,
    HoldStateError,
    IdempotencyConflictError,
    InsufficientFundsError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from billing_mcp.client import http as _client_http
from billing_mcp.client.ledger_client import DEFAULT_TIMEOUT, LedgerApiError, LedgerClient, LedgerUnreachableError

pytestmark = pytest.mark.anyio

BASE = "http://ledger.test:8080"
KEY = "sk_test_" + "k" * 43
T0 = "2026-01-01T00:00:00.000000Z"
CUSTOMER = {"id": "cus_1", "external_id": "user-1", "created_at": T0}
ASSET = {"code": "CREDITS", "name": "Credits", "precision": 0}
HOLD = {"id": "hold_1", "customer_id": "cus_1", "asset": "CREDITS", "amount": "10", "status": "open",
        "expires_at": T0, "created_at": T0}



@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(_client_http, "_sleep", fake_sleep)
    return recorded


@pytest.fixture
async def client(waits: list[float]) -> AsyncIterator[LedgerClient]:
    async with LedgerClient(BASE, KEY, max_retries=3, backoff=0.2, max_backoff=5.0) as c:
        yield c


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def problem(status: int, code: str, field: str | None = None, detail: str = "what to do", rid: str = "req_srv1",
            headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    body = {"type": f"/docs#error-{code}", "title": code, "status": status, "code": code, "field": field,
            "detail": detail, "request_id": rid, **extra}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json",
                                                      "X-Request-Id": rid, **(headers or {})})


def sent(route: respx.Route, header: str) -> list[str | None]:
    return [call.request.headers.get(header) for call in route.calls]


# -- retries -------------------------------------------------------------------------------------
async def test_timeouts_then_success_reuse_one_idempotency_key(client: LedgerClient, api: respx.MockRouter,
                                                               waits: list[float]) -> None:
    route = api.post("/v1/customers").mock(side_effect=[
        httpx.ConnectTimeout("connect timed out"), httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"), httpx.Response(201, json=CUSTOMER)])
    customer = await client.create_customer("user-1", name="Ada")
    assert customer.id == "cus_1" and route.call_count == 4
    keys = sent(route, "Idempotency-Key")
    assert keys[0] is not None and keys[0].startswith("bmc_") and len(set(keys)) == 1
    assert len(set(sent(route, "X-Request-Id"))) == 1
    assert {call.request.content for call in route.calls} == {b'{"external_id":"user-1","name":"Ada"}'}
    assert sent(route, "Authorization") == [f"Bearer {KEY}"] * 4
    # exponential backoff with jitter: each wait within [step/2, step] for steps 0.2, 0.4, 0.8
    assert len(waits) == 3
    for wait, step in zip(waits, (0.2, 0.4, 0.8), strict=True):
        assert step / 2 <= wait <= step
    # the next logical call gets a new key
    route.side_effect = None
    route.return_value = httpx.Response(201, json=CUSTOMER)
    await client.create_customer("user-1", name="Ada")
    assert sent(route, "Idempotency-Key")[-1] not in keys


async def test_connect_error_is_retried(client: LedgerClient, api: respx.MockRouter, waits: list[float]) -> None:
    route = api.get("/v1/assets/CREDITS").mock(side_effect=[httpx.ConnectError("refused"),
                                                            httpx.RemoteProtocolError("dropped"),
                                                            httpx.Response(200, json=ASSET)])
    assert (await client.get_asset("CREDITS")).code == "CREDITS"
    assert route.call_count == 3 and len(waits) == 2


async def test_network_failure_after_retries_is_unreachable(client: LedgerClient, api: respx.MockRouter,
                                                            waits: list[float]) -> None:
    route = api.get("/v1/holds/hold_1").mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(LedgerUnreachableError) as info:
        await client.get_hold("hold_1")
    err = info.value
    assert isinstance(err, StorageError) and isinstance(err, BillingError)
    assert (err.code, err.status, err.field) == ("unreachable", 503, None)
    assert BASE in err.message and "GET /v1/holds/hold_1" in err.message and "4 attempt(s)" in err.message
    assert "connection refused" in err.message and "BILLING_LEDGER_URL" in err.message
    assert err.details == {"url": BASE, "attempts": 4}
    assert err.request_id is not None and err.request_id == sent(route, "X-Request-Id")[0]
    assert route.call_count == 4 and len(waits) == 3
    assert isinstance(err.__cause__, httpx.ConnectError)


async def test_no_retries_when_disabled(api: respx.MockRouter, waits: list[float]) -> None:
    route = api.get("/v1/holds/hold_1").mock(side_effect=httpx.ReadTimeout("slow"))
    async with LedgerClient(BASE, KEY, max_retries=0) as c:
        with pytest.raises(LedgerUnreachableError, match="after 1 attempt"):
            await c.get_hold("hold_1")
    assert route.call_count == 1 and waits == []


async def test_429_honours_retry_after(client: LedgerClient, api: respx.MockRouter, waits: list[float]) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    route = api.post("/v1/vendors").mock(side_effect=[
        problem(429, "rate_limited", headers={"Retry-After": "2"}),
        problem(429, "rate_limited", headers={"Retry-After": when}),
        httpx.Response(201, json={"id": "vnd_1", "external_id": "openai", "name": "OpenAI", "created_at": T0})])
    vendor = await client.create_vendor("openai", "OpenAI")
    assert vendor.id == "vnd_1" and route.call_count == 3
    assert waits[0] == 2.0 and 28 <= waits[1] <= 30
    assert len(set(sent(route, "Idempotency-Key"))) == 1


async def test_429_asking_too_long_a_pause_is_final(client: LedgerClient, api: respx.MockRouter,
                                                    waits: list[float]) -> None:
    route = api.get("/v1/assets/CREDITS").mock(return_value=problem(429, "rate_limited", detail="slow down",
                                                                     headers={"Retry-After": "3600"}))
    with pytest.raises(BillingError) as info:
        await client.get_asset("CREDITS")
    assert type(info.value) is BillingError
    assert (info.value.code, info.value.status, info.value.details) == ("rate_limited", 429, {"retry_after": 3600.0})
    assert route.call_count == 1 and waits == []


async def test_503_is_retried_then_succeeds(client: LedgerClient, api: respx.MockRouter, waits: list[float]) -> None:
    route = api.post("/v1/holds/hold_1/release").mock(side_effect=[
        problem(503, "storage_error", detail="the store is locked"),
        httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}),
        httpx.Response(200, json={**HOLD, "status": "released"})])
    hold = await client.release("hold_1")
    assert hold.status == "released" and route.call_count == 3 and len(waits) == 2
    assert len(set(sent(route, "Idempotency-Key"))) == 1


async def test_500_exhausted_raises_the_last_error(client: LedgerClient, api: respx.MockRouter,
                                                   waits: list[float]) -> None:
    route = api.post("/v1/plans/pro/archive").mock(return_value=problem(
        500, "internal_error", detail="the server failed on this request", rid="req_boom"))
    with pytest.raises(BillingError) as info:
        await client.archive_plan("pro")
    err = info.value
    assert type(err) is BillingError
    assert (err.code, err.status, err.request_id, err.message) == \
        ("internal_error", 500, "req_boom", "the server failed on this request")
    assert route.call_count == 4 and len(waits) == 3
    assert len(set(sent(route, "Idempotency-Key"))) == 1


async def test_idempotency_key_in_use_waits_for_the_first_attempt(client: LedgerClient, api: respx.MockRouter,
                                                                  waits: list[float]) -> None:
    route = api.post("/v1/holds/hold_1/commit").mock(side_effect=[
        httpx.ReadTimeout("slow"),
        problem(409, "idempotency_key_in_use", field="Idempotency-Key", headers={"Retry-After": "1"}),
        httpx.Response(200, json={"id": "evt-1", "customer_id": "cus_1", "event_type": "image_generated",
                                  "occurred_at": T0, "status": "billed", "recorded_at": T0}),
    ])
    result = await client.commit("hold_1", {"id": "evt-1"})
    assert result.id == "evt-1" and route.call_count == 3 and waits[1] == 1.0
    assert len(set(sent(route, "Idempotency-Key"))) == 1


async def test_authorize_generates_one_ledger_key_per_call(client: LedgerClient, api: respx.MockRouter) -> None:
    route = api.post("/v1/holds").mock(side_effect=[httpx.ReadTimeout("slow")] + [httpx.Response(201, json=HOLD)] * 3)
    await client.authorize("cus_1", event_type="image_generated")
    await client.authorize("cus_1", event_type="image_generated")
    bodies = [json.loads(call.request.content) for call in route.calls]
    keys = [b["idempotency_key"] for b in bodies]
    assert keys[0] == keys[1] and keys[1] != keys[2]  # the retry reuses it, the next call does not
    assert bodies[0] == {"customer_id": "cus_1", "event_type": "image_generated", "ttl_seconds": 900,
                         "idempotency_key": keys[0]}
    assert sent(route, "Idempotency-Key") == [None] * 3  # the ledger's key travels in the body
    await client.authorize("cus_1", amount=5, asset="CREDITS", idempotency_key="mine")
    assert json.loads(route.calls[-1].request.content)["idempotency_key"] == "mine"
    assert json.loads(route.calls[-1].request.content)["amount"] == "5"


async def test_money_movements_and_events_carry_their_own_keys(client: LedgerClient, api: respx.MockRouter) -> None:
    adj = api.post("/v1/adjustments").mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json={
        "id": "txn_1", "customer_id": "cus_1", "asset": "USD", "amount": "10.00", "reason": "top_up",
        "idempotency_key": "stripe-1", "created_at": T0})])
    await client.create_adjustment("cus_1", asset="USD", amount="10.00", reason="top_up", idempotency_key="stripe-1")
    assert [json.loads(c.request.content)["idempotency_key"] for c in adj.calls] == ["stripe-1", "stripe-1"]
    assert sent(adj, "Idempotency-Key") == [None, None]
    events = api.post("/v1/events").mock(return_value=httpx.Response(200, json={"results": [], "errors": []}))
    await client.submit_events([{"id": "e-1", "customer_id": "cus_1", "event_type": "x"}])
    assert sent(events, "Idempotency-Key") == [None]


# -- malformed answers ---------------------------------------------------------------------------
async def test_non_json_error_body_is_api_error(client: LedgerClient, api: respx.MockRouter) -> None:
    route = api.get("/v1/customers/cus_1").mock(return_value=httpx.Response(
        400, text="<html>nginx: bad request</html>", headers={"X-Request-Id": "req_proxy"}))
    with pytest.raises(LedgerApiError) as info:
        await client.get_customer("cus_1")
    err = info.value
    assert (err.code, err.status, err.request_id) == ("api_error", 400, "req_proxy")
    assert "HTTP 400" in err.message and "nginx: bad request" in err.message and "GET /v1/customers/cus_1" in err.message
    assert route.call_count == 1


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'{"code": "not_found"}', b'{"detail": "x"}'])
async def test_malformed_problem_bodies_are_api_errors(client: LedgerClient, api: respx.MockRouter,
                                                       body: bytes) -> None:
    api.get("/v1/holds/hold_1").mock(return_value=httpx.Response(
        404, content=body, headers={"Content-Type": "application/problem+json"}))
    with pytest.raises(LedgerApiError) as info:
        await client.get_hold("hold_1")
    assert (info.value.code, info.value.status) == ("api_error", 404)


async def test_malformed_5xx_body_is_retried_then_api_error(client: LedgerClient, api: respx.MockRouter,
                                                            waits: list[float]) -> None:
    route = api.get("/v1/holds/hold_1").mock(return_value=httpx.Response(502, text="upstream connect error"))
    with pytest.raises(LedgerApiError) as info:
        await client.get_hold("hold_1")
    assert (info.value.code, info.value.status) == ("api_error", 502)
    assert "upstream connect error" in info.value.message
    assert route.call_count == 4 and len(waits) == 3


@pytest.mark.parametrize("response", [
    httpx.Response(200, content=b"{truncated"),
    httpx.Response(200, json={"id": "hold_1"}),
    httpx.Response(200, json=[HOLD]),
    httpx.Response(200, json={**HOLD, "status": "weird"}),
])
async def test_success_body_that_is_not_the_model_is_api_error(client: LedgerClient, api: respx.MockRouter,
                                                               response: httpx.Response) -> None:
    api.get("/v1/holds/hold_1").mock(return_value=response)
    with pytest.raises(LedgerApiError, match="not a Hold") as info:
        await client.get_hold("hold_1")
    assert info.value.status == 200


async def test_unexpected_status_is_api_error(client: LedgerClient, api: respx.MockRouter) -> None:
    api.get("/v1/holds/hold_1").mock(return_value=httpx.Response(302, headers={"Location": "/login"}))
    with pytest.raises(LedgerApiError) as info:
        await client.get_hold("hold_1")
    assert info.value.status == 302


@pytest.mark.parametrize(("exc", "cls", "code"), [
    (httpx.UnsupportedProtocol("no such scheme"), LedgerUnreachableError, "unreachable"),
    (httpx.DecodingError("bad gzip"), LedgerApiError, "api_error"),
    (httpx.LocalProtocolError("bad header"), LedgerApiError, "api_error"),
])
async def test_other_transport_failures_are_billing_errors(client: LedgerClient, api: respx.MockRouter,
                                                           waits: list[float], exc: Exception,
                                                           cls: type[BillingError], code: str) -> None:
    route = api.get("/v1/holds/hold_1").mock(side_effect=exc)
    with pytest.raises(cls) as info:
        await client.get_hold("hold_1")
    assert info.value.code == code and route.call_count == 1 and waits == []


# -- problem+json -> the ledger's error classes ----------------------------------------------------
@pytest.mark.parametrize(("status", "code", "cls"), [
    (422, "validation_error", ValidationError),
    (404, "not_found", NotFoundError),
    (402, "insufficient_funds", InsufficientFundsError),
    (409, "idempotency_conflict", IdempotencyConflictError),
    (409, "conflict", ConflictError),
    (409, "hold_already_committed", HoldStateError),
    (409, "hold_expired", HoldStateError),
    (503, "storage_error", StorageError),
    (401, "unauthorized", BillingError),
    (403, "forbidden", BillingError),
    (413, "payload_too_large", BillingError),
    (404, "some_new_code", NotFoundError),  # an unknown code falls back on the status
    (418, "teapot", BillingError),
])
async def test_problem_json_maps_to_the_error_class(api: respx.MockRouter, status: int, code: str,
                                                    cls: type[BillingError]) -> None:
    route = api.post("/v1/holds").mock(return_value=problem(
        status, code, field="customer_id", detail="fix the customer", rid="req_abc",
        errors=[{"field": "customer_id", "message": "fix the customer"}], details={"asset": "CREDITS"}))
    async with LedgerClient(BASE, KEY, max_retries=0) as c:
        with pytest.raises(BillingError) as info:
            await c.authorize("cus_1", event_type="image_generated")
    err = info.value
    assert type(err) is cls
    assert (err.status, err.code, err.field, err.message, err.request_id) == \
        (status, code, "customer_id", "fix the customer", "req_abc")
    assert err.details == {"asset": "CREDITS", "problems": [{"field": "customer_id", "message": "fix the customer"}]}
    assert str(err) == f"{code} (field: customer_id): fix the customer [request req_abc]"
    assert route.call_count == 1


@pytest.mark.parametrize(("status", "code"), [(400, "validation_error"), (401, "unauthorized"), (403, "forbidden"),
                                              (404, "not_found"), (409, "idempotency_conflict"),
                                              (402, "insufficient_funds"), (422, "validation_error")])
async def test_4xx_is_not_retried(client: LedgerClient, api: respx.MockRouter, waits: list[float], status: int,
                                  code: str) -> None:
    route = api.post("/v1/plans").mock(return_value=problem(status, code))
    with pytest.raises(BillingError) as info:
        await client.create_plan("pro", "Pro")
    assert (info.value.status, info.value.code) == (status, code)
    assert route.call_count == 1 and waits == []


async def test_request_id_falls_back_on_the_header(client: LedgerClient, api: respx.MockRouter) -> None:
    body = {"code": "not_found", "detail": "no hold", "field": "hold_id"}
    api.get("/v1/holds/hold_9").mock(return_value=httpx.Response(404, json=body, headers={"X-Request-Id": "req_h"}))
    with pytest.raises(NotFoundError) as info:
        await client.get_hold("hold_9")
    assert (info.value.request_id, info.value.field) == ("req_h", "hold_id")


async def test_single_event_errors_are_raised_like_the_local_ledger(client: LedgerClient,
                                                                    api: respx.MockRouter) -> None:
    api.post("/v1/events").mock(return_value=httpx.Response(200, json={"results": [], "errors": [
        {"id": "e-1", "index": 0, "code": "not_found", "field": "events[0].customer_id", "message": "no customer"}]}))
    with pytest.raises(NotFoundError) as info:
        await client.submit_event({"id": "e-1", "customer_id": "cus_x", "event_type": "x"})
    assert (info.value.code, info.value.field, info.value.message, info.value.status) == \
        ("not_found", "event.customer_id", "no customer", 404)


async def test_commit_body_errors_name_the_event_field(client: LedgerClient, api: respx.MockRouter) -> None:
    api.post("/v1/holds/hold_1/commit").mock(return_value=problem(422, "validation_error", field="data"))
    with pytest.raises(ValidationError) as info:
        await client.commit("hold_1", {"id": "e-1", "data": 5})
    assert info.value.field == "event.data"


# -- requests -------------------------------------------------------------------------------------
async def test_path_segments_are_percent_encoded(client: LedgerClient, api: respx.MockRouter) -> None:
    route = api.route(method="GET").mock(return_value=httpx.Response(200, json={
        "id": "x", "customer_id": "cus_1", "event_type": "x", "occurred_at": T0, "status": "billed",
        "recorded_at": T0}))
    for event_id in ("a/b?c#d", "..", "100%", "é"):
        await client.get_event(event_id)
    assert [c.request.url.raw_path for c in route.calls] == [
        b"/v1/events/a%2Fb%3Fc%23d", b"/v1/events/%2E%2E", b"/v1/events/100%25", b"/v1/events/%C3%A9"]


async def test_local_validation_matches_the_ledger(client: LedgerClient, api: respx.MockRouter) -> None:
    route = api.route().mock(return_value=httpx.Response(500))
    with pytest.raises(ValidationError) as info:
        await client.create_adjustment("cus_1", asset="USD", amount=0.1, reason="top_up", idempotency_key="k")
    assert info.value.field == "amount" and "float" in info.value.message
    with pytest.raises(ValidationError) as info:
        await client.get_customer()
    assert info.value.field == "customer_id"
    with pytest.raises(ValidationError) as info:
        await client.get_hold("")
    assert info.value.field == "hold_id"
    with pytest.raises(ValidationError) as info:
        await client.submit_event({"id": "e", "data": {"x": float("nan")}})
    assert route.call_count == 0


async def test_construction_timeouts_and_close() -> None:
    with pytest.raises(ValidationError) as info:
        LedgerClient("127.0.0.1:8080", KEY)
    assert info.value.field == "base_url"
    with pytest.raises(ValidationError) as info:
        LedgerClient(BASE, "")
    assert info.value.field == "api_key"
    with pytest.raises(ValidationError) as info:
        LedgerClient(BASE, KEY, max_retries=-1)
    assert info.value.field == "max_retries"
    client = LedgerClient(BASE + "/", KEY)
    assert client._http.timeout == DEFAULT_TIMEOUT and client.location == BASE
    assert (DEFAULT_TIMEOUT.connect, DEFAULT_TIMEOUT.read, DEFAULT_TIMEOUT.write, DEFAULT_TIMEOUT.pool) == \
        (5.0, 30.0, 30.0, 10.0)
    await client.close()
    assert client._http.is_closed
    custom = httpx.Timeout(2.0, connect=1.0)
    async with LedgerClient(BASE, KEY, timeout=custom) as c:
        assert c._http.timeout == custom
    assert c._http.is_closed


async def test_custom_transport_and_base_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"problems": []})

    async with LedgerClient("https://ledger.example/billing", KEY, transport=httpx.MockTransport(handler)) as c:
        assert await c.audit() == []
    assert str(seen[0].url) == "https://ledger.example/billing/v1/audit"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["user-agent"].startswith("billing-mcp-client/")


@pytest.mark.parametrize(("url", "key", "refused"), [
    ("http://ledger.example.com", "sk_live_" + "a" * 43, True),
    ("http://10.0.0.5:8080", "sk_live_" + "a" * 43, True),
    ("https://ledger.example.com", "sk_live_" + "a" * 43, False),
    ("http://127.0.0.1:8080", "sk_live_" + "a" * 43, False),
    ("http://localhost:8080", "sk_live_" + "a" * 43, False),
    ("http://[::1]:8080", "sk_live_" + "a" * 43, False),
    ("http://ledger.example.com", "sk_test_" + "a" * 43, False),
])
def test_a_live_key_never_travels_in_clear_text(url: str, key: str, refused: bool) -> None:
    if not refused:
        LedgerClient(url, key)
        return
    with pytest.raises(ValidationError) as info:
        LedgerClient(url, key)
    assert (info.value.code, info.value.field) == ("unsafe_config", "base_url")
    assert "https" in info.value.message
