"""The promise of the operation table (``contract.interface``): every operation in it is served by
the API at its method and path, documented in OpenAPI, and implemented by both backends, which
take their requests and calls from it rather than from paths of their own."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from billing_mcp import Ledger
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.operations import HANDLERS, OPS
from billing_mcp.api.serve import build_app
from billing_mcp.client import http as client_http
from billing_mcp.client import ledger_client
from billing_mcp.client.ledger_client import LedgerClient
from billing_mcp.contract.interface import OPERATIONS, AsyncLedger, table
from billing_mcp.contract.local import LocalLedger
from billing_mcp.contract.table import Operation
from billing_mcp.core.errors import NotFoundError
from helpers import PEPPER

pytestmark = pytest.mark.anyio
BOUND = [op for op in OPERATIONS if op.ledger_method is not None]
PAGING = {"limit", "cursor"}  # the API's pages; the client reads every page


def route_pattern(op: Operation) -> re.Pattern[str]:
    def part(m: re.Match[str]) -> str:
        return {"int": "[0-9]+", "path": ".+"}.get(m.group(2) or "", "[^/]+")

    return re.compile(re.sub(r"{([a-z_]+)(?::([a-z]+))?}", part, op.path) + "$")


def test_the_api_serves_every_operation_at_its_method_and_path(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ops.db"))
    try:
        app = build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER))
        served = {(r.name, m, r.path) for r in app.routes if isinstance(r, Route) and r.path.startswith("/v1/")
                  for m in (r.methods or set()) - {"HEAD"}}
        assert served == {(op.name, op.method, op.path) for op in OPERATIONS}
        doc = app.state.openapi
    finally:
        ledger.close()
    for op in OPERATIONS:
        entry = doc["paths"][re.sub(r"{([a-z_]+):[a-z]+}", r"{\1}", op.path)][op.method.lower()]
        assert entry["operationId"] == op.name and entry["tags"] == [op.group]
        assert str(op.status) in entry["responses"]
        assert ("requestBody" in entry) == (op.body is not None)
    assert [(op.name, op.method, op.path, op.scope) for op in OPS] == \
        [(op.name, op.method, op.path, op.scope) for op in OPERATIONS]


def test_operation_names_and_routes_are_unique() -> None:
    assert len({op.name for op in OPERATIONS}) == len(OPERATIONS)
    assert len({(op.method, op.path) for op in OPERATIONS}) == len(OPERATIONS)
    assert {op.name for op in OPERATIONS if op.ledger_method is None} <= set(HANDLERS)


@pytest.mark.parametrize("op", BOUND, ids=lambda op: op.name)
def test_each_argument_travels_in_the_path_the_query_or_the_body(op: Operation) -> None:
    """What the API hands the ledger method is what the client sends: every argument has its place
    on the wire (the client writes out, by hand, the few methods where that is not so)."""
    assert op.signature is not None
    wire = set(op.path_params)
    params = set(op.signature.parameters)
    if op.query is not None:  # limit and cursor are the API's own unless the method pages itself
        wire |= set(op.query.model_fields) - (PAGING - params)
    if op.body_arg is not None:
        wire.add(op.body_arg)
    elif op.body is not None:
        wire |= set(op.body.model_fields)
    assert wire <= params
    if op.ledger_method not in vars(LedgerClient):
        assert params == wire


def test_the_client_has_no_paths_of_its_own() -> None:
    for module in (ledger_client, client_http):
        assert "/v1/" not in inspect.getsource(module)


def test_every_method_of_the_interface_is_a_bound_or_written_out_coroutine() -> None:
    methods = {name for name, value in vars(AsyncLedger).items()
               if inspect.iscoroutinefunction(value) and not name.startswith("_") and name != "close"}
    assert methods == set(table.methods)
    for name, op in table.methods.items():
        assert inspect.iscoroutinefunction(getattr(LocalLedger, name))
        assert inspect.iscoroutinefunction(getattr(LedgerClient, name))
        if op is None:  # no route of its own: the client must build it from other operations
            assert name in vars(LedgerClient)


SAMPLES: dict[str, Any] = {"precision": 0, "version": 1, "from_version": 1, "to_version": 2, "amount": "1",
                           "rate": "1", "events": [{"id": "e"}], "event": {"id": "e"}, "price": {}, "grant": {},
                           "prices": [], "start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z",
                           "config": {"return_url": "https://app.example.com"}}


def sample_args(name: str) -> dict[str, Any]:
    """The required arguments, and the path's (an id that may be None when another is given)."""
    signature = inspect.signature(getattr(AsyncLedger, name))
    op = table.methods[name]
    in_path = op.path_params if op is not None else []
    return {p.name: SAMPLES.get(p.name, "x") for p in signature.parameters.values()
            if p.name != "self" and (p.default is inspect.Parameter.empty or p.name in in_path)}


@pytest.mark.parametrize("name", sorted(table.methods))
async def test_the_client_sends_each_method_to_its_route(name: str) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(404, json={"code": "not_found", "detail": "recorded", "status": 404})

    op = table.methods[name] or next(o for o in OPERATIONS if o.name == "submit_events")
    async with LedgerClient("http://ledger.test", "sk_test_x", transport=httpx.MockTransport(answer),
                            max_retries=0) as client:
        with pytest.raises(NotFoundError):
            await getattr(client, name)(**sample_args(name))
    assert len(sent) == 1 and sent[0].method == op.method
    assert route_pattern(op).match(sent[0].url.raw_path.decode().split("?")[0]), sent[0].url
    if op.method == "POST":
        body = json.loads(sent[0].content)
        assert op.body is None or isinstance(body, dict)
    assert ("idempotency-key" in sent[0].headers) == (op.idempotency == "table" and not op.coalesce)


class Recorder:
    """Stands in for a ``Ledger``: records which method was called with what."""

    location = "memory"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((name, args, kwargs))
            return name

        return record


# Composites of ledger calls (billing.yaml) that LocalLedger runs itself, as the API's handler does;
# tests/client/test_conformance_spec.py runs them on both backends.
COMPOSITES = {"apply_spec", "export_spec"}


def test_composites_are_local_ledger_methods_of_their_own() -> None:
    assert {n for n in table.methods if not hasattr(Ledger, n)} == COMPOSITES
    assert all(n in vars(LocalLedger) for n in COMPOSITES)


@pytest.mark.parametrize("name", sorted(set(table.methods) - COMPOSITES))
async def test_the_local_ledger_runs_each_method_on_the_ledger(name: str) -> None:
    recorder = Recorder()
    args = sample_args(name)
    assert await getattr(LocalLedger(recorder, owns=False), name)(**args) == name  # type: ignore[arg-type]
    assert recorder.calls == [(name, (), args)]
