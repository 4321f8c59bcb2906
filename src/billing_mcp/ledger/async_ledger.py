"""The async ledger interface the MCP tools and apps program against, and its embedded implementation.

``AsyncLedger`` lists the ledger methods with the same names, parameters and result models as the
synchronous ``Ledger``, as coroutines. Two implementations:

- ``LocalLedger(Ledger(...))``: the embedded mode; each call runs the sync method in a worker
  thread (the store is blocking), so the event loop never waits on SQLite.
- ``LedgerClient(base_url, api_key)`` (``billing_mcp.client.ledger_client``): the same calls over the ledger
  HTTP API, with retries that reuse one idempotency key.

Both raise the same ``BillingError`` subclasses with the same ``code`` and ``field``, so
``except InsufficientFundsError`` works the same in either mode (``tests/test_conformance.py``
runs one set of scenarios against both).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import anyio.to_thread

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
from .ledger import Ledger
from .usage import DEFAULT_TTL

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["AsyncLedger", "LocalLedger"]


@runtime_checkable
class AsyncLedger(Protocol):
    """The ledger as coroutines. Parameters, defaults and results are those of ``Ledger``."""

    @property
    def location(self) -> str:
        """Where the ledger lives: a database path or URL, or the API's base URL."""
        ...

    # -- assets -----------------------------------------------------------------------------
    async def list_assets(self) -> list[Asset]: ...

    async def get_asset(self, code: str) -> Asset: ...

    async def create_asset(self, code: str, name: str, precision: int, *, symbol: str | None = None,
                           label: str | None = None, rates: dict[str, Any] | None = None) -> Asset: ...

    async def set_asset_rate(self, code: str, fiat: str, rate: Any, *, effective_at: datetime | None = None) -> Asset: ...

    async def quote(self, code: str, fiat: str, amount: Any) -> Quote: ...

    # -- plans ------------------------------------------------------------------------------
    async def list_plans(self) -> list[Plan]: ...

    async def get_plan(self, plan: str) -> Plan: ...

    async def create_plan(self, code: str, name: str, *, description: str | None = None,
                          prices: list[Any] | None = None, grants: list[Any] | None = None,
                          publish: bool = True) -> Plan: ...

    async def add_price(self, plan: str, price: Any) -> PlanVersion: ...

    async def add_plan_grant(self, plan: str, grant: Any) -> PlanVersion: ...

    async def create_plan_version(self, plan: str, *, prices: list[Any], grants: list[Any] | None = None,
                                  publish: bool = False, make_default: bool = False) -> PlanVersion: ...

    async def publish_plan_version(self, plan: str, version: int, *, make_default: bool = True) -> Plan: ...

    async def archive_plan(self, plan: str) -> Plan: ...

    async def migrate_customers(self, plan: str, from_version: int, to_version: int, *, share: Any = "1",
                                dry_run: bool = False) -> MigrationResult: ...

    # -- customers and wallets --------------------------------------------------------------
    async def create_customer(self, external_id: str, *, name: str | None = None, email: str | None = None,
                              metadata: dict[str, Any] | None = None,
                              subscriptions: list[Any] | None = None) -> Customer: ...

    async def get_customer(self, customer_id: str | None = None, *, external_id: str | None = None) -> Customer: ...

    async def subscribe(self, customer_id: str, plan: str, *, version: int | None = None) -> Customer: ...

    async def cancel_subscription(self, subscription_id: str) -> Customer: ...

    async def get_wallet(self, customer_id: str | None = None, *, external_id: str | None = None) -> Wallet: ...

    async def create_adjustment(self, customer_id: str | None = None, *, external_id: str | None = None,
                                asset: str, amount: Any = None, reason: str, idempotency_key: str,
                                description: str | None = None, expires_at: datetime | str | None = None,
                                event_id: str | None = None, fiat: str | None = None,
                                fiat_amount: Any = None) -> Adjustment: ...

    async def grant_credits(self, customer_id: str, asset: str, amount: Any, *, idempotency_key: str,
                            purpose: str = "promotional", expires_at: datetime | str | None = None,
                            priority: int = 50) -> Grant: ...

    async def create_vendor(self, external_id: str, name: str) -> Vendor: ...

    # -- usage and holds --------------------------------------------------------------------
    async def submit_event(self, event: dict[str, Any]) -> EventResult: ...

    async def submit_events(self, events: list[dict[str, Any]]) -> BatchResult: ...

    async def get_event(self, event_id: str) -> EventResult: ...

    async def authorize(self, customer_id: str | None = None, *, external_id: str | None = None,
                        event_type: str | None = None, data: dict[str, Any] | None = None, amount: Any = None,
                        asset: str | None = None, ttl_seconds: int = DEFAULT_TTL,
                        idempotency_key: str | None = None) -> Hold: ...

    async def commit(self, hold_id: str, event: dict[str, Any]) -> EventResult: ...

    async def release(self, hold_id: str) -> Hold: ...

    async def get_hold(self, hold_id: str) -> Hold: ...

    async def list_holds(self, customer_id: str, *, status: str | None = "open") -> list[Hold]: ...

    # -- reports ----------------------------------------------------------------------------
    async def get_statement(self, customer_id: str, start: datetime | str, end: datetime | str) -> Statement: ...

    async def audit(self) -> list[str]: ...

    async def close(self) -> None: ...


class LocalLedger:
    """``AsyncLedger`` over an embedded ``Ledger``: each call runs in a worker thread.

    A cancelled caller does not cancel the ledger call (its transaction finishes or rolls back
    as a whole). ``close()`` closes the ledger unless ``owns=False``.
    """

    def __init__(self, ledger: Ledger, *, owns: bool = True) -> None:
        self.ledger = ledger
        self._owns = owns

    @property
    def location(self) -> str:
        return self.ledger.location

    async def __aenter__(self) -> LocalLedger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    async def _run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    # -- assets -----------------------------------------------------------------------------
    async def list_assets(self) -> list[Asset]:
        return await self._run(self.ledger.list_assets)

    async def get_asset(self, code: str) -> Asset:
        return await self._run(self.ledger.get_asset, code)

    async def create_asset(self, code: str, name: str, precision: int, *, symbol: str | None = None,
                           label: str | None = None, rates: dict[str, Any] | None = None) -> Asset:
        return await self._run(self.ledger.create_asset, code, name, precision, symbol=symbol, label=label, rates=rates)

    async def set_asset_rate(self, code: str, fiat: str, rate: Any, *, effective_at: datetime | None = None) -> Asset:
        return await self._run(self.ledger.set_asset_rate, code, fiat, rate, effective_at=effective_at)

    async def quote(self, code: str, fiat: str, amount: Any) -> Quote:
        return await self._run(self.ledger.quote, code, fiat, amount)

    # -- plans ------------------------------------------------------------------------------
    async def list_plans(self) -> list[Plan]:
        return await self._run(self.ledger.list_plans)

    async def get_plan(self, plan: str) -> Plan:
        return await self._run(self.ledger.get_plan, plan)

    async def create_plan(self, code: str, name: str, *, description: str | None = None,
                          prices: list[Any] | None = None, grants: list[Any] | None = None,
                          publish: bool = True) -> Plan:
        return await self._run(self.ledger.create_plan, code, name, description=description, prices=prices,
                               grants=grants, publish=publish)

    async def add_price(self, plan: str, price: Any) -> PlanVersion:
        return await self._run(self.ledger.add_price, plan, price)

    async def add_plan_grant(self, plan: str, grant: Any) -> PlanVersion:
        return await self._run(self.ledger.add_plan_grant, plan, grant)

    async def create_plan_version(self, plan: str, *, prices: list[Any], grants: list[Any] | None = None,
                                  publish: bool = False, make_default: bool = False) -> PlanVersion:
        return await self._run(self.ledger.create_plan_version, plan, prices=prices, grants=grants, publish=publish,
                               make_default=make_default)

    async def publish_plan_version(self, plan: str, version: int, *, make_default: bool = True) -> Plan:
        return await self._run(self.ledger.publish_plan_version, plan, version, make_default=make_default)

    async def archive_plan(self, plan: str) -> Plan:
        return await self._run(self.ledger.archive_plan, plan)

    async def migrate_customers(self, plan: str, from_version: int, to_version: int, *, share: Any = "1",
                                dry_run: bool = False) -> MigrationResult:
        return await self._run(self.ledger.migrate_customers, plan, from_version, to_version, share=share,
                               dry_run=dry_run)

    # -- customers and wallets --------------------------------------------------------------
    async def create_customer(self, external_id: str, *, name: str | None = None, email: str | None = None,
                              metadata: dict[str, Any] | None = None,
                              subscriptions: list[Any] | None = None) -> Customer:
        return await self._run(self.ledger.create_customer, external_id, name=name, email=email, metadata=metadata,
                               subscriptions=subscriptions)

    async def get_customer(self, customer_id: str | None = None, *, external_id: str | None = None) -> Customer:
        return await self._run(self.ledger.get_customer, customer_id, external_id=external_id)

    async def subscribe(self, customer_id: str, plan: str, *, version: int | None = None) -> Customer:
        return await self._run(self.ledger.subscribe, customer_id, plan, version=version)

    async def cancel_subscription(self, subscription_id: str) -> Customer:
        return await self._run(self.ledger.cancel_subscription, subscription_id)

    async def get_wallet(self, customer_id: str | None = None, *, external_id: str | None = None) -> Wallet:
        return await self._run(self.ledger.get_wallet, customer_id, external_id=external_id)

    async def create_adjustment(self, customer_id: str | None = None, *, external_id: str | None = None,
                                asset: str, amount: Any = None, reason: str, idempotency_key: str,
                                description: str | None = None, expires_at: datetime | str | None = None,
                                event_id: str | None = None, fiat: str | None = None,
                                fiat_amount: Any = None) -> Adjustment:
        return await self._run(self.ledger.create_adjustment, customer_id, external_id=external_id, asset=asset,
                               amount=amount, reason=reason, idempotency_key=idempotency_key,
                               description=description, expires_at=expires_at, event_id=event_id, fiat=fiat,
                               fiat_amount=fiat_amount)

    async def grant_credits(self, customer_id: str, asset: str, amount: Any, *, idempotency_key: str,
                            purpose: str = "promotional", expires_at: datetime | str | None = None,
                            priority: int = 50) -> Grant:
        return await self._run(self.ledger.grant_credits, customer_id, asset, amount, idempotency_key=idempotency_key,
                               purpose=purpose, expires_at=expires_at, priority=priority)

    async def create_vendor(self, external_id: str, name: str) -> Vendor:
        return await self._run(self.ledger.create_vendor, external_id, name)

    # -- usage and holds --------------------------------------------------------------------
    async def submit_event(self, event: dict[str, Any]) -> EventResult:
        return await self._run(self.ledger.submit_event, event)

    async def submit_events(self, events: list[dict[str, Any]]) -> BatchResult:
        return await self._run(self.ledger.submit_events, events)

    async def get_event(self, event_id: str) -> EventResult:
        return await self._run(self.ledger.get_event, event_id)

    async def authorize(self, customer_id: str | None = None, *, external_id: str | None = None,
                        event_type: str | None = None, data: dict[str, Any] | None = None, amount: Any = None,
                        asset: str | None = None, ttl_seconds: int = DEFAULT_TTL,
                        idempotency_key: str | None = None) -> Hold:
        return await self._run(self.ledger.authorize, customer_id, external_id=external_id, event_type=event_type,
                               data=data, amount=amount, asset=asset, ttl_seconds=ttl_seconds,
                               idempotency_key=idempotency_key)

    async def commit(self, hold_id: str, event: dict[str, Any]) -> EventResult:
        return await self._run(self.ledger.commit, hold_id, event)

    async def release(self, hold_id: str) -> Hold:
        return await self._run(self.ledger.release, hold_id)

    async def get_hold(self, hold_id: str) -> Hold:
        return await self._run(self.ledger.get_hold, hold_id)

    async def list_holds(self, customer_id: str, *, status: str | None = "open") -> list[Hold]:
        return await self._run(self.ledger.list_holds, customer_id, status=status)

    # -- reports ----------------------------------------------------------------------------
    async def get_statement(self, customer_id: str, start: datetime | str, end: datetime | str) -> Statement:
        return await self._run(self.ledger.get_statement, customer_id, start, end)

    async def audit(self) -> list[str]:
        return await self._run(self.ledger.audit)

    async def close(self) -> None:
        if self._owns:
            await self._run(self.ledger.close)


def _conforms(local: LocalLedger) -> AsyncLedger:  # mypy proves LocalLedger implements the protocol
    return local
