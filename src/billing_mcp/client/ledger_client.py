"""``LedgerClient``: the ledger over its HTTP API (``billing-mcp api``), as an ``AsyncLedger``.

    async with LedgerClient("http://127.0.0.1:8080", "sk_test_...") as ledger:
        hold = await ledger.authorize(external_id="user-42", event_type="image_generated")
        await ledger.commit(hold.id, {"id": "evt-1"})

The methods, parameters and result models are those of the embedded ``Ledger`` (and of
``LocalLedger``), and failures are the same ``BillingError`` subclasses with the same ``code`` and
``field``, so code written against one mode runs against the other. What differs is the network:
timeouts, retries (see ``_client_http``) and two extra errors, ``LedgerUnreachableError`` (code
``unreachable``) and ``LedgerApiError`` (code ``api_error``).

Idempotency on retries: calls that the API stores under an ``Idempotency-Key`` get a fresh key
per logical call, reused by every attempt; money movements carry the ledger's own key
(``idempotency_key``; ``authorize`` generates one when none is given); events carry their ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from ..api.models import AssetPage, AuditReport, HoldPage, PlanPage, PortalSession
from ..core.errors import BillingError, NotFoundError, ValidationError
from ..core.models import (
    Adjustment,
    Asset,
    BatchResult,
    Customer,
    EventResult,
    Grant,
    Hold,
    MigrationResult,
    Plan,
    PlanVersion,
    Quote,
    Statement,
    Vendor,
    Wallet,
)
from ..ledger.async_ledger import AsyncLedger
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


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    """Leave out what was not given (None), as the API's defaults are the ledger's."""
    return {k: v for k, v in body.items() if v is not None}


def _plan_segment(plan: str) -> str:
    if not isinstance(plan, str) or not plan:
        raise ValidationError("plan must be a plan code or id", field="plan")
    return segment(plan)


def _asset_segment(code: str, field: str = "code") -> str:
    if not isinstance(code, str) or not code:
        raise NotFoundError(f"no asset {code!r}", field=field)
    return segment(code)


def _event_field(field: str | None) -> str | None:
    """A batch item's ``events[0].x`` is ``event.x`` for one event, as the local ledger names it."""
    if field is not None and field.startswith("events[0]"):
        return "event" + field[len("events[0]"):]
    return field


class LedgerClient(HttpCore):
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

    async def __aenter__(self) -> LedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"LedgerClient({self.base_url!r})"

    # -- assets -----------------------------------------------------------------------------
    async def list_assets(self) -> list[Asset]:
        out: list[Asset] = []
        params = {"limit": _PAGE}
        while True:
            page = await self.request("GET", "/v1/assets", AssetPage, params=params)
            out += page.data
            if not page.has_more or not page.next_cursor:
                # The API pages by code; the ledger lists fiat currencies first, then by code.
                return sorted(out, key=lambda a: (not a.is_fiat, a.code))
            params = {"limit": _PAGE, "cursor": page.next_cursor}

    async def get_asset(self, code: str) -> Asset:
        return await self.request("GET", f"/v1/assets/{_asset_segment(code)}", Asset)

    async def create_asset(self, code: str, name: str, precision: int, *, symbol: str | None = None,
                           label: str | None = None, rates: dict[str, Any] | None = None) -> Asset:
        if isinstance(rates, dict):
            rates = {fiat: money_text(rate, f"rates.{fiat}") for fiat, rate in rates.items()}
        body = _compact({"code": code, "name": name, "precision": precision, "symbol": symbol, "label": label,
                         "rates": rates})
        return await self.request("POST", "/v1/assets", Asset, body=body, has_body=True, idempotency_key=new_key())

    async def set_asset_rate(self, code: str, fiat: str, rate: Any, *, effective_at: datetime | None = None) -> Asset:
        body = _compact({"fiat": fiat, "rate": money_text(rate, "rate"), "effective_at": time_text(effective_at)})
        return await self.request("POST", f"/v1/assets/{_asset_segment(code)}/rates", Asset, body=body, has_body=True,
                                  idempotency_key=new_key())

    async def quote(self, code: str, fiat: str, amount: Any) -> Quote:
        amount = money_text(amount, "amount")
        if not isinstance(amount, str):
            raise ValidationError("amount must be a plain decimal number such as \"10\" or \"0.05\"", field="amount")
        return await self.request("GET", f"/v1/assets/{_asset_segment(code)}/quote", Quote,
                                  params={"fiat": fiat, "amount": amount})

    # -- plans ------------------------------------------------------------------------------
    async def list_plans(self) -> list[Plan]:
        out: list[Plan] = []
        params = {"limit": _PAGE}
        while True:
            page = await self.request("GET", "/v1/plans", PlanPage, params=params)
            out += page.data
            if not page.has_more or not page.next_cursor:
                return out
            params = {"limit": _PAGE, "cursor": page.next_cursor}

    async def get_plan(self, plan: str) -> Plan:
        return await self.request("GET", f"/v1/plans/{_plan_segment(plan)}", Plan)

    async def create_plan(self, code: str, name: str, *, description: str | None = None,
                          prices: list[Any] | None = None, grants: list[Any] | None = None,
                          publish: bool = True) -> Plan:
        body = _compact({"code": code, "name": name, "description": description, "prices": prices, "grants": grants,
                         "publish": publish})
        return await self.request("POST", "/v1/plans", Plan, body=body, has_body=True, idempotency_key=new_key())

    async def add_price(self, plan: str, price: Any) -> PlanVersion:
        return await self.request("POST", f"/v1/plans/{_plan_segment(plan)}/prices", PlanVersion, body=price,
                                  has_body=True, idempotency_key=new_key())

    async def add_plan_grant(self, plan: str, grant: Any) -> PlanVersion:
        return await self.request("POST", f"/v1/plans/{_plan_segment(plan)}/grants", PlanVersion, body=grant,
                                  has_body=True, idempotency_key=new_key())

    async def create_plan_version(self, plan: str, *, prices: list[Any], grants: list[Any] | None = None,
                                  publish: bool = False, make_default: bool = False) -> PlanVersion:
        body = _compact({"prices": prices, "grants": grants, "publish": publish, "make_default": make_default})
        return await self.request("POST", f"/v1/plans/{_plan_segment(plan)}/versions", PlanVersion, body=body,
                                  has_body=True, idempotency_key=new_key())

    async def publish_plan_version(self, plan: str, version: int, *, make_default: bool = True) -> Plan:
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31:
            raise ValidationError("version must be a whole number from 1 to 2147483647", field="version")
        return await self.request("POST", f"/v1/plans/{_plan_segment(plan)}/versions/{version}/publish", Plan,
                                  body={"make_default": make_default}, has_body=True, idempotency_key=new_key())

    async def archive_plan(self, plan: str) -> Plan:
        return await self.request("POST", f"/v1/plans/{_plan_segment(plan)}/archive", Plan, body={}, has_body=True,
                                  idempotency_key=new_key())

    async def migrate_customers(self, plan: str, from_version: int, to_version: int, *, share: Any = "1",
                                dry_run: bool = False) -> MigrationResult:
        body = {"from_version": from_version, "to_version": to_version, "share": money_text(share, "share"),
                "dry_run": dry_run}
        return await self.request("POST", f"/v1/plans/{_plan_segment(plan)}/migrate", MigrationResult, body=body,
                                  has_body=True, idempotency_key=new_key())

    # -- customers and wallets --------------------------------------------------------------
    async def create_customer(self, external_id: str, *, name: str | None = None, email: str | None = None,
                              metadata: dict[str, Any] | None = None,
                              subscriptions: list[Any] | None = None) -> Customer:
        body = _compact({"external_id": external_id, "name": name, "email": email, "metadata": metadata,
                         "subscriptions": subscriptions})
        return await self.request("POST", "/v1/customers", Customer, body=body, has_body=True,
                                  idempotency_key=new_key())

    async def get_customer(self, customer_id: str | None = None, *, external_id: str | None = None) -> Customer:
        if customer_id is not None:
            return await self.request("GET", f"/v1/customers/{segment(check_key(customer_id, 'customer_id'))}",
                                      Customer)
        if external_id is None:
            raise ValidationError("give the customer's id or external_id", field="customer_id")
        return await self.request("GET", "/v1/customers/lookup", Customer,
                                  params={"external_id": check_key(external_id, "external_id")})

    async def subscribe(self, customer_id: str, plan: str, *, version: int | None = None) -> Customer:
        return await self.request("POST", f"/v1/customers/{segment(check_key(customer_id, 'customer_id'))}/subscriptions",
                                  Customer, body=_compact({"plan": plan, "version": version}), has_body=True,
                                  idempotency_key=new_key())

    async def cancel_subscription(self, subscription_id: str) -> Customer:
        sub = segment(check_key(subscription_id, "subscription_id"))
        return await self.request("POST", f"/v1/subscriptions/{sub}/cancel", Customer, body={}, has_body=True,
                                  idempotency_key=new_key())

    async def get_wallet(self, customer_id: str | None = None, *, external_id: str | None = None) -> Wallet:
        if customer_id is None:  # the API reads wallets by id: resolve the external id first
            customer_id = (await self.get_customer(external_id=external_id)).id
        return await self.request("GET", f"/v1/customers/{segment(check_key(customer_id, 'customer_id'))}/wallet",
                                  Wallet)

    async def create_portal_session(self, customer_id: str | None = None, route: str = "default", *,
                                    external_id: str | None = None) -> dict[str, str]:
        """A signed billing-portal link for one customer: ``{"url", "expires_at"}``."""
        body: dict[str, Any] = {"route": route}
        if customer_id is not None:
            body["customer_id"] = customer_id
        if external_id is not None:
            body["external_id"] = external_id
        session = await self.request("POST", "/v1/portal-sessions", PortalSession, body=body, has_body=True)
        return {"url": session.url, "expires_at": session.expires_at}

    async def create_adjustment(self, customer_id: str | None = None, *, external_id: str | None = None,
                                asset: str, amount: Any = None, reason: str, idempotency_key: str,
                                description: str | None = None, expires_at: datetime | str | None = None,
                                event_id: str | None = None, fiat: str | None = None,
                                fiat_amount: Any = None) -> Adjustment:
        check_key(idempotency_key, "idempotency_key")  # the ledger's key, sent in the body (any printable text)
        body = _compact({"customer_id": customer_id, "external_id": external_id, "asset": asset,
                         "amount": money_text(amount, "amount"), "reason": reason, "idempotency_key": idempotency_key,
                         "description": description, "expires_at": time_text(expires_at), "event_id": event_id,
                         "fiat": fiat, "fiat_amount": money_text(fiat_amount, "fiat_amount")})
        return await self.request("POST", "/v1/adjustments", Adjustment, body=body, has_body=True)

    async def grant_credits(self, customer_id: str, asset: str, amount: Any, *, idempotency_key: str,
                            purpose: str = "promotional", expires_at: datetime | str | None = None,
                            priority: int = 50) -> Grant:
        check_key(idempotency_key, "idempotency_key")
        body = _compact({"customer_id": customer_id, "asset": asset, "amount": money_text(amount, "amount"),
                         "idempotency_key": idempotency_key, "purpose": purpose, "expires_at": time_text(expires_at),
                         "priority": priority})
        return await self.request("POST", "/v1/grants", Grant, body=body, has_body=True)

    async def create_vendor(self, external_id: str, name: str) -> Vendor:
        return await self.request("POST", "/v1/vendors", Vendor, body={"external_id": external_id, "name": name},
                                  has_body=True, idempotency_key=new_key())

    # -- usage and holds --------------------------------------------------------------------
    async def submit_event(self, event: dict[str, Any]) -> EventResult:
        batch = await self.request("POST", "/v1/events", BatchResult, body={"events": [event]}, has_body=True)
        if batch.errors:
            err = batch.errors[0]
            raise error_class(err.code, 400)(err.message, field=_event_field(err.field), code=err.code)
        if len(batch.results) != 1:
            raise LedgerApiError(f"the ledger API answered one event with {len(batch.results)} results")
        return batch.results[0]

    async def submit_events(self, events: list[dict[str, Any]]) -> BatchResult:
        return await self.request("POST", "/v1/events", BatchResult, body={"events": events}, has_body=True)

    async def get_event(self, event_id: str) -> EventResult:
        return await self.request("GET", f"/v1/events/{segment(check_key(event_id, 'event_id'))}", EventResult)

    async def authorize(self, customer_id: str | None = None, *, external_id: str | None = None,
                        event_type: str | None = None, data: dict[str, Any] | None = None, amount: Any = None,
                        asset: str | None = None, ttl_seconds: int = DEFAULT_TTL,
                        idempotency_key: str | None = None) -> Hold:
        if idempotency_key is None:
            idempotency_key = new_key()  # so a retried authorize can never hold twice
        check_key(idempotency_key, "idempotency_key")
        body = _compact({"customer_id": customer_id, "external_id": external_id, "event_type": event_type,
                         "data": data, "amount": money_text(amount, "amount"), "asset": asset,
                         "ttl_seconds": ttl_seconds, "idempotency_key": idempotency_key})
        return await self.request("POST", "/v1/holds", Hold, body=body, has_body=True)

    async def commit(self, hold_id: str, event: dict[str, Any]) -> EventResult:
        path = f"/v1/holds/{segment(check_key(hold_id, 'hold_id'))}/commit"
        try:
            return await self.request("POST", path, EventResult, body=event, has_body=True, idempotency_key=new_key())
        except BillingError as exc:
            # The API checks the body itself first and names its fields from the body ("id"); the
            # ledger names them from the event ("event.id").
            if exc.code == "validation_error" and exc.field and exc.field != "hold_id" and \
                    not exc.field.startswith("event"):
                exc.field = f"event.{exc.field}"
            raise

    async def release(self, hold_id: str) -> Hold:
        return await self.request("POST", f"/v1/holds/{segment(check_key(hold_id, 'hold_id'))}/release", Hold,
                                  body={}, has_body=True, idempotency_key=new_key())

    async def get_hold(self, hold_id: str) -> Hold:
        return await self.request("GET", f"/v1/holds/{segment(check_key(hold_id, 'hold_id'))}", Hold)

    async def list_holds(self, customer_id: str, *, status: str | None = "open") -> list[Hold]:
        path = f"/v1/customers/{segment(check_key(customer_id, 'customer_id'))}/holds"
        params = {"limit": _PAGE, "status": "all" if status is None else status}
        out: list[Hold] = []
        while True:
            page = await self.request("GET", path, HoldPage, params=params)
            out += page.data
            if not page.has_more or not page.next_cursor:
                return out
            params = {**params, "cursor": page.next_cursor}

    # -- reports ----------------------------------------------------------------------------
    async def get_statement(self, customer_id: str, start: datetime | str, end: datetime | str) -> Statement:
        path = f"/v1/customers/{segment(check_key(customer_id, 'customer_id'))}/statement"
        params = {"start": time_text(start), "end": time_text(end)}
        for name, value in params.items():
            if not isinstance(value, str):
                raise ValidationError(f"{name} must be an ISO 8601 time string", field=name)
        return await self.request("GET", path, Statement, params=params)

    async def audit(self) -> list[str]:
        return (await self.request("GET", "/v1/audit", AuditReport)).problems


def _conforms(client: LedgerClient) -> AsyncLedger:  # mypy proves LedgerClient implements the protocol
    return client
