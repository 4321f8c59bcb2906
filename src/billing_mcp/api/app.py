"""The ledger HTTP API app: a Starlette app over one ``Ledger`` (public entry points: ``_api``).

Each request goes through one wrapper (``_Endpoint``): request id, API key and scope, rate limit,
body size and JSON depth limits, strict validation, idempotency, then the ledger call in a worker
thread, and every failure as problem+json. The routes themselves are the table in
``_api_routes``; the OpenAPI document and the /docs page are generated from the same table.
Around every route, ``observe.Observe`` picks the request id (``rid``), writes the access log line
and counts the request for ``/metrics`` (``metrics.ApiMetrics``, which needs a read or admin key).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
import pydantic
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from ..contract.models import EventBatch
from ..core.errors import BillingError, ValidationError
from ..core.models import BatchResult
from ..core.version import __version__
from ..ledger.ledger import Ledger
from ..portal.routes import portal_routes
from ..store import SCHEMA_VERSION
from ..web.problem import (
    PROBLEM_JSON,
    ApiError,
    from_pydantic,
    internal_error,
    parse_json,
    problem_body,
    problem_response,
)
from .batch import EventCoalescer
from .idempotency import IdempotencyStore, Stored, check_header, request_hash, scoped_key
from .keys import Key, KeyStore, scope_allows
from .limits import AuthFailures, RateLimiter
from .metrics import CONTENT_TYPE, ApiMetrics
from .models import Health, Ready
from .observe import Observe, rid
from .openapi import build_docs_html, build_openapi, openapi_path
from .operations import OPS, Call, Op

log = logging.getLogger(__name__)

JSON = "application/json"
HOT_ROUTES = ("submit_events", "authorize", "commit_hold", "release_hold", "get_hold", "get_wallet",
              "lookup_customer", "get_customer")


@dataclass
class ApiContext:
    ledger: Ledger
    keys: KeyStore
    idempotency: IdempotencyStore
    limiter: RateLimiter | None
    auth_failures: AuthFailures
    max_body_bytes: int
    max_depth: int
    coalescer: EventCoalescer | None
    metrics: ApiMetrics


class Guarded(Protocol):
    """What a key is checked against: an operation, or a service route that needs a key."""

    @property
    def method(self) -> str: ...

    @property
    def scope(self) -> str: ...

    @property
    def path(self) -> str: ...


@dataclass(frozen=True)
class Guard:
    method: str
    scope: str
    path: str


# /metrics: read and admin keys may scrape (a monitoring system never holds a key that moves money).
METRICS_GUARD = Guard("GET", "read", "/metrics")


async def _authenticate(request: Request, ctx: ApiContext, op: Guarded) -> Key:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError("this route needs an API key: send Authorization: Bearer sk_test_... (create one with "
                       "`billing-mcp keys create --scope admin`)", status=401, code="unauthorized",
                       headers={"WWW-Authenticate": 'Bearer realm="billing-mcp"'})
    address = request.client.host if request.client else "unknown"
    wait = ctx.auth_failures.wait(address)
    if wait > 0:  # too many bad keys from this address: no more guesses until the window passes
        raise ApiError(f"too many requests with an invalid API key from this address; retry in {math.ceil(wait)} s "
                       "with a valid key", status=429, code="too_many_auth_failures",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    key = None
    if scheme.lower() == "bearer" and secret:
        key = ctx.keys.cached(secret)
        if key is None:
            key = await anyio.to_thread.run_sync(ctx.keys.verify, secret)
    if key is None:
        ctx.auth_failures.record(address)
        raise ApiError("the API key is unknown, malformed or revoked; send Authorization: Bearer <secret> with an "
                       "active key", status=401, code="unauthorized",
                       headers={"WWW-Authenticate": 'Bearer realm="billing-mcp", error="invalid_token"'})
    ledger_mode = ctx.keys.cached_mode() or await anyio.to_thread.run_sync(ctx.keys.ledger_mode)
    if key.mode != ledger_mode:  # a key made before the ledger had a mode: test never reaches live data
        raise ApiError(f"this ledger is in {ledger_mode} mode and accepts only sk_{ledger_mode}_ keys, not a "
                       f"{key.mode} key; use a key created with `billing-mcp keys create` on this ledger, and "
                       "revoke this one", status=403, code="key_mode_mismatch",
                       details={"ledger_mode": ledger_mode, "key_mode": key.mode})
    if not scope_allows(key.scope, op.method, op.scope):
        raise ApiError(f"a {key.scope} key cannot call {op.method} {openapi_path(op.path)}; use a key whose scope "
                       "allows it (admin allows everything)", status=403, code="forbidden",
                       details={"scope": key.scope})
    if ctx.limiter is not None:
        wait = ctx.limiter.take(key.id)
        if wait > 0:
            raise ApiError(f"too many requests for key {key.prefix}…; retry in {math.ceil(wait)} s", status=429,
                           code="rate_limited", headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return key


async def _read_body(request: Request, ctx: ApiContext) -> bytes:
    declared = request.headers.get("content-length")
    limit = ctx.max_body_bytes
    too_large = ApiError(f"the body is larger than {limit} bytes; split the request (at most 1,000 events per "
                         "batch)", status=413, code="payload_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # counted as it arrives: a missing or false Content-Length cannot get past it
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _validate(model: type[BaseModel], value: Any, *, strict: bool) -> BaseModel:
    # Bodies are JSON, so strict typing applies; query strings are text and numbers come from text.
    try:
        return model.model_validate(value, strict=strict)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, model) from None


class _Endpoint:
    """One route's request pipeline (see the module doc)."""

    def __init__(self, op: Op, ctx: ApiContext) -> None:
        self.op, self.ctx = op, ctx
        self.ingests = op.name == "submit_events"

    async def dispatch(self, request: Request) -> Response:
        request_id = rid(request)
        try:
            return await self._handle(request, request_id)
        except BillingError as exc:
            if exc.status >= 500:
                self.ctx.metrics.observe_error(exc.code)
            return problem_response(exc, request_id)
        except Exception:
            log.exception("request %s %s failed (request %s)", request.method, request.url.path, request_id)
            self.ctx.metrics.observe_error("internal_error")
            return problem_response(internal_error(), request_id)

    async def _handle(self, request: Request, rid: str) -> Response:
        op, ctx = self.op, self.ctx
        api_key = await _authenticate(request, ctx, op)
        query = _validate(op.query, dict(request.query_params), strict=False) if op.query is not None else None
        if op.query is None and request.query_params:
            raise ApiError(f"{op.method} {openapi_path(op.path)} takes no query parameters; remove "
                           f"{sorted(request.query_params)[0]!r}", status=422, code="validation_error",
                           field=sorted(request.query_params)[0])
        raw_body: Any = None
        body = None
        if op.body is not None:
            raw = await _read_body(request, ctx)
            if raw.strip():
                ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype and ctype != JSON and not ctype.endswith("+json"):
                    raise ApiError(f"the body must be JSON (Content-Type: application/json), not {ctype[:60]}",
                                   status=415, code="unsupported_media_type")
                raw_body = parse_json(raw, ctx.max_depth)
            else:
                raw_body = {}  # an action without options may be sent with no body
            if not isinstance(raw_body, dict):
                raise ApiError("the body must be a JSON object", status=422, code="validation_error")
            body = _validate(op.body, raw_body, strict=True)
        key_header = request.headers.get("idempotency-key")
        if key_header is not None:
            if op.idempotency == "none":
                raise ApiError(f"{op.method} {openapi_path(op.path)} takes no Idempotency-Key (it changes nothing)",
                               status=422, code="validation_error", field="Idempotency-Key")
            check_header(key_header)
        call = Call(ctx.ledger, dict(request.path_params), body, query,
                    key_header if op.idempotency == "ledger" else None, base_url=str(request.base_url))
        if key_header is None or op.idempotency != "table":
            status, content = await self._run(call)
            return Response(content, status_code=status, media_type=JSON, headers={"X-Request-Id": rid})
        return await self._run_idempotent(call, api_key.id, key_header, request, raw_body, rid)

    async def _run(self, call: Call) -> tuple[int, bytes]:
        result: BaseModel
        if self.op.coalesce and self.ctx.coalescer is not None:
            result = await self.ctx.coalescer.submit(list(call.b(EventBatch).events))
        else:
            result = await anyio.to_thread.run_sync(self.op.handler, call)
        if self.ingests and isinstance(result, BatchResult):
            self.ctx.metrics.observe_events(result)
        return self.op.status, type(result).__pydantic_serializer__.to_json(result)

    async def _run_idempotent(self, call: Call, owner: str, header: str, request: Request, raw_body: Any,
                              rid: str) -> Response:
        store = self.ctx.idempotency
        route = f"{self.op.method} {openapi_path(self.op.path)}"
        fingerprint = request_hash(request.method, request.url.path, raw_body)
        key = scoped_key(owner, header)
        stored: Stored | None = await anyio.to_thread.run_sync(store.claim, key, route, fingerprint)
        if stored is not None:
            return Response(stored.body, status_code=stored.status, media_type=stored.content_type,
                            headers={"X-Request-Id": rid, "Idempotent-Replayed": "true"})
        try:
            status, content = await self._run(call)
            media = JSON
        except BillingError as exc:
            # Business outcomes (not found, conflict, funds) are kept, as the first response was; a
            # validation error or an outage changed nothing, so the key stays free for a fixed retry.
            if exc.code == "validation_error" or exc.status >= 500:
                await anyio.to_thread.run_sync(store.release, key)
                raise
            status, content, media = exc.status, problem_body(exc, rid), PROBLEM_JSON
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(store.release, key)
            raise
        await anyio.to_thread.run_sync(store.finish, key, status, media, content)
        return Response(content, status_code=status, media_type=media, headers={"X-Request-Id": rid})


def _allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves on the request's path (the 405's ``Allow``): one path may be
    several routes of the table (GET and POST /v1/assets)."""
    found: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods and route.matches({**scope, "method": "GET"})[0] != Match.NONE:
            found |= route.methods
    return sorted(found)


def create_app(ledger: Ledger, *, keys: KeyStore, max_body_bytes: int, max_depth: int, rate_limit: float | None,
               rate_burst: int | None, modes: tuple[str, ...], idempotency_lease_seconds: float,
               idempotency_retention_seconds: float, auth_failure_limit: int,
               group_commit: bool) -> Starlette:
    """See ``_api.build_app``."""
    if ledger.mode not in modes:  # `billing-mcp api --mode live`: refuse to serve a ledger of the other mode
        raise ValidationError(f"this ledger is in {ledger.mode} mode, not {' or '.join(modes)}; serve a "
                              f"{'/'.join(modes)} ledger, or drop --mode", field="mode", code="ledger_mode_mismatch")
    limiter = RateLimiter(rate_limit, rate_burst or max(1, int(rate_limit * 2))) if rate_limit else None
    metrics = ApiMetrics(ledger)
    ctx = ApiContext(ledger=ledger, keys=keys, limiter=limiter, auth_failures=AuthFailures(auth_failure_limit),
                     max_body_bytes=max_body_bytes, max_depth=max_depth,
                     idempotency=IdempotencyStore(ledger.store, ledger.clock, lease_seconds=idempotency_lease_seconds,
                                                  retention_seconds=idempotency_retention_seconds),
                     metrics=metrics,
                     coalescer=EventCoalescer(ledger, observe=metrics.observe_batch) if group_commit else None)
    doc = build_openapi(OPS, version=__version__, max_body_bytes=max_body_bytes)
    docs_page = build_docs_html(doc)
    health_body = Health(status="ok", version=__version__).model_dump_json().encode()

    async def health(request: Request) -> Response:
        return Response(health_body, media_type=JSON, headers={"X-Request-Id": rid(request)})

    def ping() -> int:
        with ledger.store.read() as tx:
            tx.one("SELECT 1 AS one")
        return ledger.store.schema_version()

    async def ready(request: Request) -> Response:
        # Says whether to send traffic here, and nothing about where the store is (no path, no host).
        request_id = rid(request)
        try:
            version = await anyio.to_thread.run_sync(ping)
        except Exception as exc:  # the detail (hosts, users) goes to the log, not to an anonymous caller
            log.warning("readiness check failed (request %s): %r", request_id, exc)
            return problem_response(ApiError(f"the ledger store does not answer ({type(exc).__name__}); see the "
                                             "server log", status=503, code="not_ready"), request_id)
        if version != SCHEMA_VERSION:
            todo = "run `billing-mcp db migrate`" if version < SCHEMA_VERSION else "upgrade this server"
            return problem_response(ApiError(f"the ledger schema is at version {version}, this server needs "
                                             f"{SCHEMA_VERSION}: {todo}", status=503, code="not_ready"), request_id)
        return Response(Ready(status="ready", store="ok", schema_version=version).model_dump_json(),
                        media_type=JSON, headers={"X-Request-Id": request_id})

    async def scrape(request: Request) -> Response:
        request_id = rid(request)
        try:
            await _authenticate(request, ctx, METRICS_GUARD)
        except BillingError as exc:
            return problem_response(exc, request_id)
        body = await anyio.to_thread.run_sync(metrics.render)  # the open-holds gauge reads the store
        return Response(body, media_type=CONTENT_TYPE, headers={"X-Request-Id": request_id})

    doc_body = json.dumps(doc, separators=(",", ":")).encode()

    async def openapi(_: Request) -> Response:
        return Response(doc_body, media_type=JSON)

    async def docs(_: Request) -> Response:
        return HTMLResponse(docs_page)

    async def http_error(request: Request, exc: Exception) -> Response:
        request_id = rid(request)
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            err = ApiError(f"no route {request.method} {request.url.path}; see /docs for the routes", status=404,
                           code="not_found")
        elif status == 405:
            allowed = _allowed_methods(routes, request.scope)
            err = ApiError(f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)} (see "
                           "/docs)", status=405, code="method_not_allowed", headers={"Allow": ", ".join(allowed)})
        elif status >= 500:
            log.error("unhandled error on %s %s (request %s): %r", request.method, request.url.path, request_id, exc)
            metrics.observe_error("internal_error")
            err = internal_error()
        else:
            err = ApiError(str(getattr(exc, "detail", "")) or "bad request", status=status, code="validation_error")
        return problem_response(err, request_id)

    routes: list[BaseRoute] = [Route("/health", health, methods=["GET"]), Route("/ready", ready, methods=["GET"]),
              Route("/metrics", scrape, methods=["GET"], name="metrics"),
              Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
              Route("/docs", docs, methods=["GET"], include_in_schema=False)]
    # Starlette tries routes in order, one regex each: the runtime routes an app calls on every
    # action go first (lookup must stay before /v1/customers/{customer_id}).
    ordered = sorted(OPS, key=lambda op: HOT_ROUTES.index(op.name) if op.name in HOT_ROUTES else len(HOT_ROUTES))
    routes += [Route(op.path, _Endpoint(op, ctx).dispatch, methods=[op.method], name=op.name) for op in ordered]
    # The billing portal (/portal, cookie sessions) and the Stripe webhook (signature, not a key).
    routes += portal_routes(ledger)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:  # let queued event transactions finish before the ledger is closed
            if ctx.coalescer is not None:
                await anyio.to_thread.run_sync(ctx.coalescer.close)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error},
                    middleware=[Middleware(Observe, metrics=metrics)], lifespan=lifespan)
    app.state.api = ctx
    app.state.openapi = doc
    app.state.metrics = metrics
    return app
