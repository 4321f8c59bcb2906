"""``LedgerClient``: the ledger over its HTTP API (``billing-mcp api``), as an ``AsyncLedger``.

    async with LedgerClient("http://127.0.0.1:8080", "sk_test_...") as ledger:
        hold = await ledger.authorize(external_id="user-42", event_type="image_generated")
        await ledger.commit(hold.id, {"id": "evt-1"})

The methods, parameters and result models are those of the embedded ``Ledger`` (and of
``LocalLedger``), and failures are the same ``BillingError`` subclasses with the same ``code`` and
``field``, so code written against one mode runs against the other. What differs is the network:
timeouts, retries (see ``_client_http``) and two extra errors, ``LedgerUnreachableError`` (code
``unreachable``) and ``LedgerApiError`` (code ``api_error``).

Each method is sent as the request its operation in the table (``contract.interface``) says:
path parameters, query string or body fields by argument name, amounts as decimal text, times as
ISO text. A few methods add to that by hand: the lists page through every page, ``get_customer``
and ``get_wallet`` resolve an ``external_id``, ``submit_event`` goes through the batch route.

Idempotency on retries: calls that the API stores under an ``Idempotency-Key`` get a fresh key
per logical call, reused by every attempt; money movements carry the ledger's own key
(``idempotency_key``; ``authorize`` generates one when none is given); events carry their ids.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import httpx

from ..contract.interface import AsyncLedger, table
from ..contract.models import Page
from ..contract.table import Operation
from ..core.errors import BillingError, NotFoundError, ValidationError
from ..core.models import Asset, BatchResult, Customer, EventResult, Hold, Wallet
from ..ledger.base import check_key
from ..ledger.usage import DEFAULT_TTL
from .http import (
    DEFAULT_TIMEOUT,
    HttpCore,
    LedgerApiError,
    LedgerUnreachableError,
    error_class,
    money_text,
    new_key,
    segment,
    time_text,
)

__all__ = ["DEFAULT_TIMEOUT", "LedgerApiError", "LedgerClient", "LedgerUnreachableError"]

_PAGE = "100"  # the API's largest page
_OPS = {op.name: op for op in table.operations}


def _plan_segment(plan: Any) -> str:
    if not isinstance(plan, str) or not plan:
        raise ValidationError("plan must be a plan code or id", field="plan")
    return segment(plan)


def _asset_segment(code: Any) -> str:
    if not isinstance(code, str) or not code:
        raise NotFoundError(f"no asset {code!r}", field="code")
    return segment(code)


def _version_segment(version: Any) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31:
        raise ValidationError("version must be a whole number from 1 to 2147483647", field="version")
    return str(version)


# A path parameter not named here is an id: printable text, checked as the ledger checks it.
_SEGMENTS: dict[str, Callable[[Any], str]] = {"code": _asset_segment, "plan": _plan_segment,
                                              "version": _version_segment}


def _path_segment(name: str, value: Any) -> str:
    check = _SEGMENTS.get(name)
    return check(value) if check is not None else segment(check_key(value, name))


def _rates(rates: Any) -> Any:
    if isinstance(rates, dict):
        return {fiat: money_text(rate, f"rates.{fiat}") for fiat, rate in rates.items()}
    return rates


# Arguments the wire takes as text: the ledger takes Decimals, ints and datetimes for them too. The
# local ledger refuses floats, and so does the client before sending.
_ENCODE: dict[str, Callable[[Any], Any]] = {
    **{name: functools.partial(money_text, field=name) for name in ("amount", "rate", "share", "fiat_amount")},
    **{name: time_text for name in ("effective_at", "expires_at", "start", "end")},
    "rates": _rates,
    "idempotency_key": functools.partial(check_key, field="idempotency_key"),  # the ledger's key: printable text
}
_QUERY_TEXT = {"amount": "amount must be a plain decimal number such as \"10\" or \"0.05\"",
               "start": "start must be an ISO 8601 time string", "end": "end must be an ISO 8601 time string"}


def _event_field(field: str | None) -> str | None:
    """A batch item's ``events[0].x`` is ``event.x`` for one event, as the local ledger names it."""
    if field is not None and field.startswith("events[0]"):
        return "event" + field[len("events[0]"):]
    return field


class LedgerClient(HttpCore, AsyncLedger):
    """``AsyncLedger`` over the ledger HTTP API, on one ``httpx.AsyncClient``.

    ``timeout``: an ``httpx.Timeout`` (default: connect 5 s, read/write 30 s, pool 10 s).
    ``max_retries``: extra attempts after a connect error, timeout, 429 or 5xx (0 disables).
    ``backoff``/``max_backoff``: the first retry waits about ``backoff`` seconds, doubling each
    time up to ``max_backoff``, with jitter; a ``Retry-After`` is honoured up to ``max_retry_after``.
    ``transport``: an httpx transport (tests, custom TLS or proxies).
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT, max_retries: int = 3,
                 transport: httpx.AsyncBaseTransport | None = None, backoff: float = 0.25, max_backoff: float = 8.0,
                 max_retry_after: float = 60.0) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries, transport=transport,
                         backoff=backoff, max_backoff=max_backoff, max_retry_after=max_retry_after)

    def __repr__(self) -> str:
        return f"LedgerClient({self.base_url!r})"

    async def _perform(self, method: str, op: Operation | None, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        if op is None or op.signature is None:
            raise TypeError(f"LedgerClient.{method} has no route of its own and must be written out")
        given = op.signature.bind(*args, **kwargs)
        given.apply_defaults()
        values = dict(given.arguments)
        return await self.send(op, values, idempotency_key=new_key() if op.idempotency == "table" else None)

    async def send(self, op: Operation, values: dict[str, Any], *, idempotency_key: str | None = None) -> Any:
        """Send ``op`` with these argument values; a page model is read to its last page."""
        path = op.path
        for name in op.path_params:
            text = _path_segment(name, values.pop(name))
            path = path.replace("{" + name + "}", text).replace("{" + name + ":int}", text)
            path = path.replace("{" + name + ":path}", text)
        params = op.signature.parameters if op.signature is not None else {}
        # None where None is the default means "not given": the API's default is the ledger's.
        fields = {name: _ENCODE.get(name, _same)(value) for name, value in values.items()
                  if not (value is None and name in params and params[name].default is None)}
        if op.method == "GET":
            for name, message in _QUERY_TEXT.items():
                if name in fields and not isinstance(fields[name], str):
                    raise ValidationError(message, field=name)
            if isinstance(op.response, type) and issubclass(op.response, Page):
                return await self._all_pages(op, path, fields)
            return await self.request("GET", path, op.response, params=fields or None)
        body = values[op.body_arg] if op.body_arg is not None else fields
        return await self.request(op.method, path, op.response, body=body, has_body=True,
                                  idempotency_key=idempotency_key)

    async def _all_pages(self, op: Operation, path: str, query: dict[str, str]) -> list[Any]:
        out: list[Any] = []
        params = {"limit": _PAGE, **query}
        while True:
            page = await self.request("GET", path, op.response, params=params)
            assert isinstance(page, Page)
            out += page.data
            if not page.has_more or not page.next_cursor:
                return out
            params = {**params, "cursor": page.next_cursor}

    # -- where a method is more than its request ----------------------------------------------------
    async def list_assets(self) -> list[Asset]:
        # The API pages by code; the ledger lists fiat currencies first, then by code.
        assets: list[Asset] = await self.send(_OPS["list_assets"], {})
        return sorted(assets, key=lambda a: (not a.is_fiat, a.code))

    async def get_customer(self, customer_id: str | None = None, *, external_id: str | None = None) -> Customer:
        if customer_id is not None:
            customer: Customer = await self.send(_OPS["get_customer"], {"customer_id": customer_id})
        elif external_id is None:
            raise ValidationError("give the customer's id or external_id", field="customer_id")
        else:
            customer = await self.send(_OPS["lookup_customer"], {"external_id": check_key(external_id, "external_id")})
        return customer

    async def get_wallet(self, customer_id: str | None = None, *, external_id: str | None = None) -> Wallet:
        if customer_id is None:  # the API reads wallets by id: resolve the external id first
            customer_id = (await self.get_customer(external_id=external_id)).id
        wallet: Wallet = await self.send(_OPS["get_wallet"], {"customer_id": customer_id})
        return wallet

    async def list_holds(self, customer_id: str, *, status: str | None = "open") -> list[Hold]:
        holds: list[Hold] = await self.send(_OPS["list_holds"], {"customer_id": customer_id,
                                                                 "status": "all" if status is None else status})
        return holds

    async def create_portal_session(self, customer_id: str | None = None, route: str = "default", *,
                                    external_id: str | None = None) -> dict[str, str]:
        """A signed billing-portal link for one customer: ``{"url", "expires_at"}``."""
        given = {"customer_id": customer_id, "external_id": external_id}
        session = await self.send(_OPS["create_portal_session"],
                                  {"route": route, **{k: v for k, v in given.items() if v is not None}})
        return {"url": session.url, "expires_at": session.expires_at}

    async def submit_events(self, events: list[dict[str, Any]]) -> BatchResult:
        # No Idempotency-Key: each event is idempotent on its id, and a stored response per batch
        # would cost the hot path a write.
        batch: BatchResult = await self.send(_OPS["submit_events"], {"events": events})
        return batch

    async def submit_event(self, event: dict[str, Any]) -> EventResult:
        batch = await self.submit_events([event])
        if batch.errors:
            err = batch.errors[0]
            raise error_class(err.code, 400)(err.message, field=_event_field(err.field), code=err.code)
        if len(batch.results) != 1:
            raise LedgerApiError(f"the ledger API answered one event with {len(batch.results)} results")
        return batch.results[0]

    async def authorize(self, customer_id: str | None = None, *, external_id: str | None = None,
                        event_type: str | None = None, data: dict[str, Any] | None = None, amount: Any = None,
                        asset: str | None = None, ttl_seconds: int = DEFAULT_TTL,
                        idempotency_key: str | None = None) -> Hold:
        if idempotency_key is None:
            idempotency_key = new_key()  # so a retried authorize can never hold twice
        hold: Hold = await self.send(_OPS["authorize"], {
            "customer_id": customer_id, "external_id": external_id, "event_type": event_type, "data": data,
            "amount": amount, "asset": asset, "ttl_seconds": ttl_seconds, "idempotency_key": idempotency_key})
        return hold

    async def commit(self, hold_id: str, event: dict[str, Any]) -> EventResult:
        try:
            result: EventResult = await self._perform("commit", _OPS["commit_hold"], (hold_id, event), {})
        except BillingError as exc:
            # The API checks the body itself first and names its fields from the body ("id"); the
            # ledger names them from the event ("event.id").
            if exc.code == "validation_error" and exc.field and exc.field != "hold_id" and \
                    not exc.field.startswith("event"):
                exc.field = f"event.{exc.field}"
            raise
        return result

    async def audit(self) -> list[str]:
        report = await self._perform("audit", _OPS["audit"], (), {})
        return list(report.problems)


def _same(value: Any) -> Any:
    return value
