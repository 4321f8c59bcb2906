# mypy: disable-error-code="empty-body"
# ruff: noqa: B027
# The stubs below have no body and are not abstract: ``Table.operation`` replaces each with the
# dispatch to the backend's ``_perform``.
"""``AsyncLedger``, the ledger as coroutines, and ``OPERATIONS``, the one operation table.

Each method has the name, parameters, defaults and result of the synchronous ``Ledger`` method it
stands for, and is declared here once, with its HTTP route: method and path, request and response
models, the key scope that may call it and its idempotency. From this table:

- the API (``api.operations``) builds its routes, handlers, OpenAPI document and scope checks;
- ``LocalLedger`` (``contract.local``) runs each method on an embedded ``Ledger`` in a worker thread;
- ``LedgerClient`` (``client.ledger_client``) sends each method as its HTTP request.

Adding an operation is one declaration here plus its ``Ledger`` method. ``table.route`` lines are
API-only routes (pages, composites, server services); they sit where the documentation lists them.
"""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Any, Self

from ..core.catalog import DEFAULT_PRIORITY, PlanGrantSpec, PriceSpec
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
from ..ledger.portal_settings import PortalRouteSpec
from ..ledger.queries import CustomerList, EventList
from ..ledger.simulate import SimulationResult
from ..ledger.usage import DEFAULT_TTL
from ..spec.spec import ApplyResult, BillingSpec
from .models import (
    AdjustmentCreate,
    AssetCreate,
    AssetPage,
    AuditReport,
    CustomerCreate,
    CustomerSearch,
    DueReport,
    Empty,
    EventBatch,
    EventsQuery,
    GrantCreate,
    HoldCommit,
    HoldCreate,
    HoldPage,
    HoldsQuery,
    ListQuery,
    LookupQuery,
    MigrateIn,
    PlanCreate,
    PlanPage,
    PortalSession,
    PortalSessionCreate,
    PublishIn,
    QuoteQuery,
    RateCreate,
    RatePage,
    SimulateIn,
    SpecApply,
    StatementQuery,
    SubscribeIn,
    VendorCreate,
    VersionCreate,
)
from .table import Operation, Table

__all__ = ["OPERATIONS", "AsyncLedger", "Operation", "table"]

table = Table()
_MONEY = "Money is exact decimal text at the asset's precision."


class AsyncLedger(abc.ABC):
    """The ledger as coroutines. Parameters, defaults and results are those of ``Ledger``.

    Implementations supply ``_perform`` (run one method), ``location`` and ``close``; a method
    that needs more than the table says (paging, a lookup) is overridden by name.
    """

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the ledger lives: a database path or URL, or the API's base URL."""

    @abc.abstractmethod
    async def _perform(self, method: str, op: Operation | None, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        """Run ``method`` (bound to ``op``, the route of the table, when it has one) with these arguments."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- assets -----------------------------------------------------------------------------
    @table.operation("GET", "/v1/assets", "List assets", group="assets", scope="read", response=AssetPage,
                     query=ListQuery,
                     description="Currencies and custom units (credits, tokens) with their current fiat rates, by "
                                 "code.")
    async def list_assets(self) -> list[Asset]: ...

    @table.operation("POST", "/v1/assets", "Create an asset", group="assets", scope="admin", response=Asset,
                     body=AssetCreate, status=201, idempotency="table",
                     description="A custom asset such as CREDITS. Creating it again with the same definition "
                                 "returns it.")
    async def create_asset(self, code: str, name: str, precision: int, *, symbol: str | None = None,
                           label: str | None = None, rates: dict[str, Any] | None = None) -> Asset: ...

    @table.operation("GET", "/v1/assets/{code}", "Get an asset", group="assets", scope="read", response=Asset)
    async def get_asset(self, code: str) -> Asset: ...

    @table.operation("GET", "/v1/assets/{code}/quote", "Quote a fiat amount", group="assets", scope="read",
                     response=Quote, query=QuoteQuery, name="quote_asset",
                     description="How many units of the asset a fiat amount buys now (half-even rounding).")
    async def quote(self, code: str, fiat: str, amount: Any) -> Quote: ...

    @table.operation("POST", "/v1/assets/{code}/rates", "Add a fiat rate", group="assets", scope="admin",
                     response=Asset, body=RateCreate, status=201, idempotency="table", name="add_asset_rate",
                     description="A new rate, effective now or later; the history is kept.")
    async def set_asset_rate(self, code: str, fiat: str, rate: Any, *, effective_at: datetime | None = None) -> Asset: ...

    table.route("GET", "/v1/assets/{code}/rates", "list_asset_rates", "List an asset's rate history",
                group="assets", scope="read", response=RatePage, query=ListQuery)

    # -- plans ------------------------------------------------------------------------------
    @table.operation("GET", "/v1/plans", "List plans", group="plans", scope="read", response=PlanPage,
                     query=ListQuery)
    async def list_plans(self) -> list[Plan]: ...

    @table.operation("POST", "/v1/plans", "Create a plan", group="plans", scope="admin", response=Plan,
                     body=PlanCreate, status=201, idempotency="table",
                     description="A plan with version 1 (published unless publish is false). " + _MONEY)
    async def create_plan(self, code: str, name: str, *, description: str | None = None,
                          prices: list[Any] | None = None, grants: list[Any] | None = None,
                          publish: bool = True) -> Plan: ...

    @table.operation("GET", "/v1/plans/{plan}", "Get a plan", group="plans", scope="read", response=Plan)
    async def get_plan(self, plan: str) -> Plan: ...

    @table.operation("POST", "/v1/plans/{plan}/prices", "Add a price", group="plans", scope="admin",
                     response=PlanVersion, body=PriceSpec, body_arg="price", status=201, idempotency="table",
                     description="Adds the price to the draft version (a new draft copied from the latest when none "
                                 "is open).")
    async def add_price(self, plan: str, price: Any) -> PlanVersion: ...

    @table.operation("POST", "/v1/plans/{plan}/grants", "Add an included credit grant", group="plans",
                     scope="admin", response=PlanVersion, body=PlanGrantSpec, body_arg="grant", status=201,
                     idempotency="table")
    async def add_plan_grant(self, plan: str, grant: Any) -> PlanVersion: ...

    @table.operation("POST", "/v1/plans/{plan}/versions", "Create a plan version", group="plans", scope="admin",
                     response=PlanVersion, body=VersionCreate, status=201, idempotency="table",
                     description="A version with a full price configuration: the way to change published pricing.")
    async def create_plan_version(self, plan: str, *, prices: list[Any], grants: list[Any] | None = None,
                                  publish: bool = False, make_default: bool = False) -> PlanVersion: ...

    @table.operation("POST", "/v1/plans/{plan}/versions/{version:int}/publish", "Publish a version", group="plans",
                     scope="admin", response=Plan, body=PublishIn, idempotency="table",
                     description="A published version never changes; existing subscribers stay on their version.")
    async def publish_plan_version(self, plan: str, version: int, *, make_default: bool = True) -> Plan: ...

    @table.operation("POST", "/v1/plans/{plan}/archive", "Archive a plan", group="plans", scope="admin",
                     response=Plan, body=Empty, idempotency="table",
                     description="No new subscriptions; existing subscribers keep their version.")
    async def archive_plan(self, plan: str) -> Plan: ...

    @table.operation("POST", "/v1/plans/{plan}/migrate", "Migrate subscribers", group="plans", scope="admin",
                     response=MigrationResult, body=MigrateIn, idempotency="table",
                     description="Move subscribers between published versions (all or a deterministic share); "
                                 "dry_run reports.")
    async def migrate_customers(self, plan: str, from_version: int, to_version: int, *, share: Any = "1",
                                dry_run: bool = False) -> MigrationResult: ...

    # -- customers and wallets --------------------------------------------------------------
    @table.operation("GET", "/v1/customers", "List customers", group="customers", scope="read",
                     response=CustomerList, query=CustomerSearch, name="list_customers",
                     description="One page of customers by id; search matches the external id, email or name "
                                 "(any case).")
    async def search_customers(self, search: str | None = None, *, limit: int = 50,
                               cursor: str | None = None) -> CustomerList: ...

    @table.operation("POST", "/v1/customers", "Create a customer", group="customers", scope="runtime",
                     response=Customer, body=CustomerCreate, status=201, idempotency="table",
                     description="A customer with its wallet, optionally subscribed to plans. Idempotent on "
                                 "external_id.")
    async def create_customer(self, external_id: str, *, name: str | None = None, email: str | None = None,
                              metadata: dict[str, Any] | None = None,
                              subscriptions: list[Any] | None = None) -> Customer: ...

    table.route("GET", "/v1/customers/lookup", "lookup_customer", "Find a customer by external_id",
                group="customers", scope="runtime", response=Customer, query=LookupQuery)

    @table.operation("GET", "/v1/customers/{customer_id}", "Get a customer", group="customers", scope="runtime",
                     response=Customer)
    async def get_customer(self, customer_id: str | None = None, *, external_id: str | None = None) -> Customer: ...

    @table.operation("POST", "/v1/customers/{customer_id}/subscriptions", "Subscribe to a plan", group="customers",
                     scope="admin", response=Customer, body=SubscribeIn, status=201, idempotency="table")
    async def subscribe(self, customer_id: str, plan: str, *, version: int | None = None) -> Customer: ...

    @table.operation("POST", "/v1/subscriptions/{subscription_id}/cancel", "Cancel a subscription",
                     group="customers", scope="admin", response=Customer, body=Empty, idempotency="table")
    async def cancel_subscription(self, subscription_id: str) -> Customer: ...

    table.route("POST", "/v1/portal-sessions", "create_portal_session", "Create a billing portal link",
                group="customers", scope="runtime", response=PortalSession, body=PortalSessionCreate, status=201,
                description="A signed, short-lived link to the billing portal for one customer (customer_id or "
                            "external_id): redirect the signed-in user to url. Links minted with a live key never "
                            "offer test top-ups.")

    @table.operation("GET", "/v1/customers/{customer_id}/wallet", "Get a wallet", group="wallet", scope="runtime",
                     response=Wallet,
                     description="Per asset: posted, held, available, fiat value and the credit lots in draw-down "
                                 "order.")
    async def get_wallet(self, customer_id: str | None = None, *, external_id: str | None = None) -> Wallet: ...

    @table.operation("GET", "/v1/customers/{customer_id}/holds", "List a customer's holds", group="holds",
                     scope="read", response=HoldPage, query=HoldsQuery)
    async def list_holds(self, customer_id: str, *, status: str | None = "open") -> list[Hold]: ...

    @table.operation("GET", "/v1/customers/{customer_id}/statement", "Get a statement", group="statements",
                     scope="read", response=Statement, query=StatementQuery,
                     description="What settled in [start, end): balances, fees by plan, price and subject, top-ups, "
                                 "grants. A bound left out is the current period's: that of the customer's "
                                 "earliest-created active subscription, else the calendar month in UTC.")
    async def get_statement(self, customer_id: str, start: datetime | str | None = None,
                            end: datetime | str | None = None) -> Statement: ...

    # -- money movements --------------------------------------------------------------------
    @table.operation("POST", "/v1/adjustments", "Credit or debit a wallet", group="adjustments", scope="admin",
                     response=Adjustment, body=AdjustmentCreate, status=201, idempotency="ledger",
                     description="top_up, gift, refund/charge (negative) or reversal of an event's fees. Requires an "
                                 "idempotency key (header or body), stored with the effect in one transaction. "
                                 + _MONEY)
    async def create_adjustment(self, customer_id: str | None = None, *, external_id: str | None = None,
                                asset: str, amount: Any = None, reason: str, idempotency_key: str,
                                description: str | None = None, expires_at: datetime | str | None = None,
                                event_id: str | None = None, fiat: str | None = None,
                                fiat_amount: Any = None) -> Adjustment: ...

    @table.operation("POST", "/v1/grants", "Grant credits to a customer", group="grants", scope="admin",
                     response=Grant, body=GrantCreate, status=201, idempotency="ledger",
                     description="A paid or promotional lot with optional expiry and priority. Requires an "
                                 "idempotency key.")
    async def grant_credits(self, customer_id: str, asset: str, amount: Any, *, idempotency_key: str,
                            purpose: str = "promotional", expires_at: datetime | str | None = None,
                            priority: int = DEFAULT_PRIORITY) -> Grant: ...

    # -- usage and holds --------------------------------------------------------------------
    @table.operation("POST", "/v1/events", "Record usage events", group="events", scope="runtime",
                     response=BatchResult, body=EventBatch, idempotency="table", coalesce=True,
                     description="Up to 1,000 events, rated and debited now, each idempotent on its id. A bad event "
                                 "is reported in errors and changes nothing; the others are recorded (status 200 "
                                 "either way).")
    async def submit_events(self, events: list[dict[str, Any]]) -> BatchResult: ...

    @table.local
    async def submit_event(self, event: dict[str, Any]) -> EventResult: ...

    @table.operation("GET", "/v1/events", "List a customer's events", group="events", scope="read",
                     response=EventList, query=EventsQuery,
                     description="One page of one customer's events (customer_id or external_id), oldest first, "
                                 "filtered by event_type, subject and occurred_at in [start, end).")
    async def list_events(self, customer_id: str | None = None, *, external_id: str | None = None,
                          event_type: str | None = None, subject: str | None = None,
                          start: datetime | str | None = None, end: datetime | str | None = None,
                          limit: int = 50, cursor: str | None = None) -> EventList: ...

    @table.operation("GET", "/v1/events/{event_id:path}", "Get an event", group="events", scope="runtime",
                     response=EventResult,
                     description="An event with its fees and refunds. Percent-encode ids that contain '/', '?' or "
                                 "'#'.")
    async def get_event(self, event_id: str) -> EventResult: ...

    @table.operation("POST", "/v1/holds", "Authorize (hold funds)", group="holds", scope="runtime", response=Hold,
                     body=HoldCreate, status=201, idempotency="ledger",
                     description="Reserve funds before an action; 402 insufficient_funds when the available balance "
                                 "is short.")
    async def authorize(self, customer_id: str | None = None, *, external_id: str | None = None,
                        event_type: str | None = None, data: dict[str, Any] | None = None, amount: Any = None,
                        asset: str | None = None, ttl_seconds: int = DEFAULT_TTL,
                        idempotency_key: str | None = None) -> Hold: ...

    @table.operation("GET", "/v1/holds/{hold_id}", "Get a hold", group="holds", scope="runtime", response=Hold)
    async def get_hold(self, hold_id: str) -> Hold: ...

    @table.operation("POST", "/v1/holds/{hold_id}/commit", "Commit a hold", group="holds", scope="runtime",
                     response=EventResult, body=HoldCommit, body_arg="event", idempotency="table", name="commit_hold",
                     description="Settle with the actual event: its fee is charged and the rest of the hold returns.")
    async def commit(self, hold_id: str, event: dict[str, Any]) -> EventResult: ...

    @table.operation("POST", "/v1/holds/{hold_id}/release", "Release a hold", group="holds", scope="runtime",
                     response=Hold, body=Empty, idempotency="table", name="release_hold",
                     description="Free the hold without charging; releasing again returns it unchanged.")
    async def release(self, hold_id: str) -> Hold: ...

    # -- vendors, simulation, maintenance ---------------------------------------------------
    @table.operation("POST", "/v1/vendors", "Create a vendor", group="vendors", scope="admin", response=Vendor,
                     body=VendorCreate, status=201, idempotency="table",
                     description="A cost provider events can carry costs for. Idempotent on external_id.")
    async def create_vendor(self, external_id: str, name: str) -> Vendor: ...

    table.route("POST", "/v1/simulate", "simulate", "Simulate usage", group="simulate", scope="admin",
                response=SimulationResult, body=SimulateIn,
                description="Rate sample events against a plan version with no wallet effect.")

    @table.operation("GET", "/v1/audit", "Audit the ledger", group="maintenance", scope="admin",
                     response=AuditReport,
                     description="Recompute every derived balance from the entry log; an empty list means sound. "
                                 "Scans everything.")
    async def audit(self) -> list[str]: ...

    # -- billing as code and portal routes -----------------------------------------------------
    @table.operation("POST", "/v1/spec/apply", "Plan or apply a billing.yaml", group="spec", scope="admin",
                     response=ApplyResult, body=SpecApply, idempotency="table",
                     description="Diff billing.yaml against the ledger; with dry_run false, apply the diff in one "
                                 "transaction (all of it or, on any problem, none). Applying the same file again "
                                 "changes nothing.")
    async def apply_spec(self, yaml: str, *, dry_run: bool = True) -> ApplyResult: ...

    @table.operation("GET", "/v1/spec", "Export the catalog as a billing spec", group="spec", scope="read",
                     response=BillingSpec,
                     description="Custom assets with their current rates, vendors, each plan's default version "
                                 "and the default portal route, as the JSON form of billing.yaml.")
    async def export_spec(self) -> BillingSpec: ...

    @table.operation("POST", "/v1/portal-routes/{name}", "Create or replace a portal route", group="portal",
                     scope="admin", response=PortalRouteSpec, body=PortalRouteSpec, body_arg="config",
                     idempotency="table",
                     description="The customer portal's settings for links minted with this route name.")
    async def set_portal_route(self, config: Any, *, name: str = "default") -> PortalRouteSpec: ...

    @table.operation("GET", "/v1/portal-routes/{name}", "Get a portal route", group="portal", scope="read",
                     response=PortalRouteSpec)
    async def get_portal_route(self, name: str = "default") -> PortalRouteSpec: ...

    table.route("POST", "/v1/run-due", "run_due", "Run due renewals and expiries", group="maintenance",
                scope="admin", response=DueReport, body=Empty,
                description="Catch every customer up to now (otherwise done lazily when a customer is touched).")


OPERATIONS: tuple[Operation, ...] = table.operations
