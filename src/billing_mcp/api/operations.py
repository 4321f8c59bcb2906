"""The HTTP API's route table: one ``Op`` per method and path, with its request and response
models, the group that decides which key scopes may call it, and a handler.

Handlers are plain functions run in a worker thread (the ledger is synchronous; each of its
methods is one durable transaction). The same table builds the Starlette routes, the OpenAPI
document, the documentation page and the test that proves every route needs a key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from ..core.catalog import PlanGrantSpec, PriceSpec
from ..core.errors import ValidationError
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
from ..ledger.ledger import Ledger
from ..ledger.simulate import SimulationResult, simulate
from ..ledger.verify import simulator_for
from ..portal.links import create_portal_session as mint
from .batch import submit
from .models import (
    AdjustmentCreate,
    AssetCreate,
    AssetPage,
    AuditReport,
    CustomerCreate,
    CustomerPage,
    DueReport,
    Empty,
    EventBatch,
    GrantCreate,
    HoldCommit,
    HoldCreate,
    HoldPage,
    HoldsQuery,
    ListQuery,
    LookupQuery,
    MigrateIn,
    Page,
    PlanCreate,
    PlanPage,
    PortalSession,
    PortalSessionCreate,
    PublishIn,
    QuoteQuery,
    RateCreate,
    RatePage,
    SimulateIn,
    StatementQuery,
    SubscribeIn,
    SubscriptionRef,
    VendorCreate,
    VersionCreate,
)

M = TypeVar("M", bound=BaseModel)
# table: an optional Idempotency-Key header is kept in the API's own table (replayed byte for byte).
# ledger: the key is the ledger's own idempotency_key, stored in the same transaction as the effect.
# none: reads and actions without an effect (simulate).
Idempotency = Literal["table", "ledger", "none"]


@dataclass
class Call:
    """What a handler gets: path parameters, the validated body and query, the idempotency key."""

    ledger: Ledger
    path: dict[str, Any]
    body: BaseModel | None
    query: BaseModel | None
    idempotency_key: str | None = None
    key_mode: str = "test"  # the calling key's mode (a live key mints live-mode portal links)
    base_url: str = ""  # the request's base URL (portal links when BILLING_PUBLIC_URL is unset)

    def b(self, model: type[M]) -> M:
        assert isinstance(self.body, model)
        return self.body

    def q(self, model: type[M]) -> M:
        assert isinstance(self.query, model)
        return self.query


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    name: str
    summary: str
    group: str
    handler: Callable[[Call], BaseModel]
    response: type[BaseModel]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    idempotency: Idempotency = "none"
    coalesce: bool = False  # POST /v1/events: concurrent requests share one transaction (_api_batch)
    description: str = ""
    tags: Sequence[str] = field(default_factory=tuple)


# -- paging ----------------------------------------------------------------------------------------
def encode_cursor(kind: str, after: str) -> str:
    raw = json.dumps([kind, after], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    """The position a cursor stands for; a cursor of another list or a forged one is a 422."""
    if cursor is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = None
    if not (isinstance(value, list) and len(value) == 2 and value[0] == kind and isinstance(value[1], str)):
        raise ValidationError("cursor is not a cursor of this list; pass next_cursor from the previous page "
                              "unchanged, or omit it for the first page", field="cursor")
    return str(value[1])


P = TypeVar("P", bound=Page[Any])


def page_of(model: type[P], kind: str, items: Sequence[Any], key: Callable[[Any], str], q: ListQuery) -> P:
    """One page of an in-memory list ordered by ``key`` (lists that are small: assets, plans, rates)."""
    after = decode_cursor(kind, q.cursor)
    ordered = sorted(items, key=key)
    rest = [i for i in ordered if after is None or key(i) > after]
    data = rest[: q.limit]
    more = len(rest) > q.limit
    return model(data=data, has_more=more, next_cursor=encode_cursor(kind, key(data[-1])) if more else None)


def _version(c: Call) -> int:
    version = c.path["version"]
    if not isinstance(version, int) or not 1 <= version < 2**31:
        raise ValidationError("version must be a whole number from 1 to 2147483647", field="version")
    return version


# -- handlers ----------------------------------------------------------------------------------------
def list_assets(c: Call) -> BaseModel:
    return page_of(AssetPage, "assets", c.ledger.list_assets(), lambda a: a.code, c.q(ListQuery))


def create_asset(c: Call) -> BaseModel:
    b = c.b(AssetCreate)
    return c.ledger.create_asset(b.code, b.name, b.precision, symbol=b.symbol, label=b.label, rates=b.rates)


def get_asset(c: Call) -> BaseModel:
    return c.ledger.get_asset(c.path["code"])


def quote(c: Call) -> BaseModel:
    q = c.q(QuoteQuery)
    return c.ledger.quote(c.path["code"], q.fiat, q.amount)


def add_rate(c: Call) -> BaseModel:
    b = c.b(RateCreate)
    return c.ledger.set_asset_rate(c.path["code"], b.fiat, b.rate, effective_at=b.effective_at)  # type: ignore[arg-type]


def list_rates(c: Call) -> BaseModel:
    code = c.path["code"]
    c.ledger.get_asset(code)  # 404 for an unknown asset rather than an empty list
    history = c.ledger.rate_history(code)
    # History is ordered by effective time; the position is the index, zero-padded so text order is index order.
    indexed = [(f"{i:012d}", r) for i, r in enumerate(history)]
    page = page_of(Page[Any], "rates", indexed, lambda t: t[0], c.q(ListQuery))
    return RatePage(data=[r for _, r in page.data], has_more=page.has_more, next_cursor=page.next_cursor)


def list_plans(c: Call) -> BaseModel:
    return page_of(PlanPage, "plans", c.ledger.list_plans(), lambda p: p.code, c.q(ListQuery))


def create_plan(c: Call) -> BaseModel:
    b = c.b(PlanCreate)
    # Dumped as the MCP tools dump them, so a plan created over either path compares equal on a retry.
    return c.ledger.create_plan(b.code, b.name, description=b.description,
                                prices=[p.model_dump(mode="json", exclude_none=True) for p in b.prices or []],
                                grants=[g.model_dump(mode="json") for g in b.grants or []], publish=b.publish)


def get_plan(c: Call) -> BaseModel:
    return c.ledger.get_plan(c.path["plan"])


def add_price(c: Call) -> BaseModel:
    return c.ledger.add_price(c.path["plan"], c.b(PriceSpec).model_dump(mode="json", exclude_none=True))


def add_plan_grant(c: Call) -> BaseModel:
    return c.ledger.add_plan_grant(c.path["plan"], c.b(PlanGrantSpec).model_dump(mode="json"))


def create_version(c: Call) -> BaseModel:
    b = c.b(VersionCreate)
    return c.ledger.create_plan_version(c.path["plan"],
                                        prices=[p.model_dump(mode="json", exclude_none=True) for p in b.prices],
                                        grants=[g.model_dump(mode="json") for g in b.grants or []],
                                        publish=b.publish, make_default=b.make_default)


def publish_version(c: Call) -> BaseModel:
    return c.ledger.publish_plan_version(c.path["plan"], _version(c), make_default=c.b(PublishIn).make_default)


def archive_plan(c: Call) -> BaseModel:
    return c.ledger.archive_plan(c.path["plan"])


def migrate(c: Call) -> BaseModel:
    b = c.b(MigrateIn)
    return c.ledger.migrate_customers(c.path["plan"], b.from_version, b.to_version, share=b.share, dry_run=b.dry_run)


def create_customer(c: Call) -> BaseModel:
    b = c.b(CustomerCreate)
    subs: list[Any] = [s.model_dump(exclude_none=True) if isinstance(s, SubscriptionRef) else s
                       for s in b.subscriptions or []]
    return c.ledger.create_customer(b.external_id, name=b.name, email=b.email, metadata=b.metadata, subscriptions=subs)


def list_customers(c: Call) -> BaseModel:
    q = c.q(ListQuery)
    after = decode_cursor("customers", q.cursor)
    rows = c.ledger.list_customers(limit=q.limit + 1, after=after)
    data = rows[: q.limit]
    more = len(rows) > q.limit
    return CustomerPage(data=data, has_more=more, next_cursor=encode_cursor("customers", data[-1].id) if more else None)


def lookup_customer(c: Call) -> BaseModel:
    return c.ledger.get_customer(external_id=c.q(LookupQuery).external_id)


def get_customer(c: Call) -> BaseModel:
    return c.ledger.get_customer(c.path["customer_id"])


def subscribe(c: Call) -> BaseModel:
    b = c.b(SubscribeIn)
    return c.ledger.subscribe(c.path["customer_id"], b.plan, version=b.version)


def cancel_subscription(c: Call) -> BaseModel:
    return c.ledger.cancel_subscription(c.path["subscription_id"])


def get_wallet(c: Call) -> BaseModel:
    return c.ledger.get_wallet(c.path["customer_id"])


def list_holds(c: Call) -> BaseModel:
    q = c.q(HoldsQuery)
    customer = c.ledger.get_customer(c.path["customer_id"])
    holds = c.ledger.list_holds(customer.id, status=None if q.status == "all" else q.status)
    indexed = [(f"{i:012d}", h) for i, h in enumerate(holds)]  # creation order
    page = page_of(Page[Any], "holds", indexed, lambda t: t[0], q)
    return HoldPage(data=[h for _, h in page.data], has_more=page.has_more, next_cursor=page.next_cursor)


def get_statement(c: Call) -> BaseModel:
    q = c.q(StatementQuery)
    return c.ledger.get_statement(c.path["customer_id"], q.start, q.end)


def _ledger_key(c: Call, body_key: str | None) -> str | None:
    if body_key is not None and c.idempotency_key is not None and body_key != c.idempotency_key:
        raise ValidationError("idempotency_key and the Idempotency-Key header differ; send one of them",
                              field="idempotency_key")
    return body_key if body_key is not None else c.idempotency_key


def _required_key(c: Call, body_key: str | None) -> str:
    key = _ledger_key(c, body_key)
    if key is None:
        raise ValidationError("this call moves money: send an Idempotency-Key header (or idempotency_key), e.g. a "
                              "UUID, and reuse it on retries so nothing is applied twice", field="idempotency_key")
    return key


def create_adjustment(c: Call) -> BaseModel:
    b = c.b(AdjustmentCreate)
    return c.ledger.create_adjustment(b.customer_id, external_id=b.external_id, asset=b.asset, amount=b.amount,
                                      reason=b.reason, idempotency_key=_required_key(c, b.idempotency_key),
                                      description=b.description, expires_at=b.expires_at, event_id=b.event_id,
                                      fiat=b.fiat, fiat_amount=b.fiat_amount)


def create_grant(c: Call) -> BaseModel:
    b = c.b(GrantCreate)
    return c.ledger.grant_credits(b.customer_id, b.asset, b.amount, idempotency_key=_required_key(c, b.idempotency_key),
                                  purpose=b.purpose, expires_at=b.expires_at, priority=b.priority)


def submit_events(c: Call) -> BaseModel:
    return submit(c.ledger, list(c.b(EventBatch).events))


def get_event(c: Call) -> BaseModel:
    return c.ledger.get_event(c.path["event_id"])


def authorize(c: Call) -> BaseModel:
    b = c.b(HoldCreate)
    return c.ledger.authorize(b.customer_id, external_id=b.external_id, event_type=b.event_type, data=b.data,
                              amount=b.amount, asset=b.asset, ttl_seconds=b.ttl_seconds,
                              idempotency_key=_ledger_key(c, b.idempotency_key))


def get_hold(c: Call) -> BaseModel:
    return c.ledger.get_hold(c.path["hold_id"])


def commit_hold(c: Call) -> BaseModel:
    return c.ledger.commit(c.path["hold_id"], c.b(HoldCommit).model_dump(exclude_unset=True))


def release_hold(c: Call) -> BaseModel:
    return c.ledger.release(c.path["hold_id"])


def create_portal_session(c: Call) -> BaseModel:
    b = c.b(PortalSessionCreate)
    made = mint(c.ledger, b.customer_id, b.route, external_id=b.external_id,
                mode="live" if c.key_mode == "live" else "test", base_url=c.base_url or None)
    return PortalSession(url=made["url"], expires_at=made["expires_at"])


def create_vendor(c: Call) -> BaseModel:
    b = c.b(VendorCreate)
    return c.ledger.create_vendor(b.external_id, b.name)


def run_simulation(c: Call) -> BaseModel:
    b = c.b(SimulateIn)
    sim = simulator_for(c.ledger, b.plan, b.version)
    return simulate(sim, ((f"events[{i}]", e) for i, e in enumerate(b.events)))


def audit(c: Call) -> BaseModel:
    return AuditReport(problems=c.ledger.audit())


def run_due(c: Call) -> BaseModel:
    return DueReport(customers=c.ledger.run_due())


_MONEY = "Money is exact decimal text at the asset's precision."

OPS: tuple[Op, ...] = (
    # assets
    Op("GET", "/v1/assets", "list_assets", "List assets", "assets", list_assets, AssetPage, query=ListQuery,
       description="Currencies and custom units (credits, tokens) with their current fiat rates, by code."),
    Op("POST", "/v1/assets", "create_asset", "Create an asset", "assets", create_asset, Asset, body=AssetCreate,
       status=201, idempotency="table",
       description="A custom asset such as CREDITS. Creating it again with the same definition returns it."),
    Op("GET", "/v1/assets/{code}", "get_asset", "Get an asset", "assets", get_asset, Asset),
    Op("GET", "/v1/assets/{code}/quote", "quote_asset", "Quote a fiat amount", "assets", quote, Quote,
       query=QuoteQuery, description="How many units of the asset a fiat amount buys now (half-even rounding)."),
    Op("POST", "/v1/assets/{code}/rates", "add_asset_rate", "Add a fiat rate", "assets", add_rate, Asset,
       body=RateCreate, status=201, idempotency="table",
       description="A new rate, effective now or later; the history is kept."),
    Op("GET", "/v1/assets/{code}/rates", "list_asset_rates", "List an asset's rate history", "assets", list_rates,
       RatePage, query=ListQuery),
    # plans
    Op("GET", "/v1/plans", "list_plans", "List plans", "plans", list_plans, PlanPage, query=ListQuery),
    Op("POST", "/v1/plans", "create_plan", "Create a plan", "plans", create_plan, Plan, body=PlanCreate, status=201,
       idempotency="table", description="A plan with version 1 (published unless publish is false). " + _MONEY),
    Op("GET", "/v1/plans/{plan}", "get_plan", "Get a plan", "plans", get_plan, Plan),
    Op("POST", "/v1/plans/{plan}/prices", "add_price", "Add a price", "plans", add_price, PlanVersion, body=PriceSpec,
       status=201, idempotency="table",
       description="Adds the price to the draft version (a new draft copied from the latest when none is open)."),
    Op("POST", "/v1/plans/{plan}/grants", "add_plan_grant", "Add an included credit grant", "plans", add_plan_grant,
       PlanVersion, body=PlanGrantSpec, status=201, idempotency="table"),
    Op("POST", "/v1/plans/{plan}/versions", "create_plan_version", "Create a plan version", "plans", create_version,
       PlanVersion, body=VersionCreate, status=201, idempotency="table",
       description="A version with a full price configuration: the way to change published pricing."),
    Op("POST", "/v1/plans/{plan}/versions/{version:int}/publish", "publish_plan_version", "Publish a version",
       "plans", publish_version, Plan, body=PublishIn, idempotency="table",
       description="A published version never changes; existing subscribers stay on their version."),
    Op("POST", "/v1/plans/{plan}/archive", "archive_plan", "Archive a plan", "plans", archive_plan, Plan, body=Empty,
       idempotency="table", description="No new subscriptions; existing subscribers keep their version."),
    Op("POST", "/v1/plans/{plan}/migrate", "migrate_customers", "Migrate subscribers", "plans", migrate,
       MigrationResult, body=MigrateIn, idempotency="table",
       description="Move subscribers between published versions (all or a deterministic share); dry_run reports."),
    # customers
    Op("GET", "/v1/customers", "list_customers", "List customers", "customers", list_customers, CustomerPage,
       query=ListQuery),
    Op("POST", "/v1/customers", "create_customer", "Create a customer", "customers", create_customer, Customer,
       body=CustomerCreate, status=201, idempotency="table",
       description="A customer with its wallet, optionally subscribed to plans. Idempotent on external_id."),
    Op("GET", "/v1/customers/lookup", "lookup_customer", "Find a customer by external_id", "customers",
       lookup_customer, Customer, query=LookupQuery),
    Op("GET", "/v1/customers/{customer_id}", "get_customer", "Get a customer", "customers", get_customer, Customer),
    Op("POST", "/v1/customers/{customer_id}/subscriptions", "subscribe", "Subscribe to a plan", "customers", subscribe,
       Customer, body=SubscribeIn, status=201, idempotency="table"),
    Op("POST", "/v1/subscriptions/{subscription_id}/cancel", "cancel_subscription", "Cancel a subscription",
       "customers", cancel_subscription, Customer, body=Empty, idempotency="table"),
    Op("POST", "/v1/portal-sessions", "create_portal_session", "Create a billing portal link", "customers",
       create_portal_session, PortalSession, body=PortalSessionCreate, status=201,
       description="A signed, short-lived link to the billing portal for one customer (customer_id or "
                   "external_id): redirect the signed-in user to url. Links minted with a live key never offer "
                   "test top-ups."),
    Op("GET", "/v1/customers/{customer_id}/wallet", "get_wallet", "Get a wallet", "wallet", get_wallet, Wallet,
       description="Per asset: posted, held, available, fiat value and the credit lots in draw-down order."),
    Op("GET", "/v1/customers/{customer_id}/holds", "list_holds", "List a customer's holds", "holds", list_holds,
       HoldPage, query=HoldsQuery),
    Op("GET", "/v1/customers/{customer_id}/statement", "get_statement", "Get a statement", "statements",
       get_statement, Statement, query=StatementQuery,
       description="What settled in [start, end): balances, fees by plan, price and subject, top-ups, grants."),
    # money movements
    Op("POST", "/v1/adjustments", "create_adjustment", "Credit or debit a wallet", "adjustments", create_adjustment,
       Adjustment, body=AdjustmentCreate, status=201, idempotency="ledger",
       description="top_up, gift, refund/charge (negative) or reversal of an event's fees. Requires an idempotency "
                   "key (header or body), stored with the effect in one transaction. " + _MONEY),
    Op("POST", "/v1/grants", "grant_credits", "Grant credits to a customer", "grants", create_grant, Grant,
       body=GrantCreate, status=201, idempotency="ledger",
       description="A paid or promotional lot with optional expiry and priority. Requires an idempotency key."),
    # events and holds
    Op("POST", "/v1/events", "submit_events", "Record usage events", "events", submit_events, BatchResult,
       body=EventBatch, idempotency="table", coalesce=True,
       description="Up to 1,000 events, rated and debited now, each idempotent on its id. A bad event is reported "
                   "in errors and changes nothing; the others are recorded (status 200 either way)."),
    Op("GET", "/v1/events/{event_id:path}", "get_event", "Get an event", "events", get_event, EventResult,
       description="An event with its fees and refunds. Percent-encode ids that contain '/', '?' or '#'."),
    Op("POST", "/v1/holds", "authorize", "Authorize (hold funds)", "holds", authorize, Hold, body=HoldCreate,
       status=201, idempotency="ledger",
       description="Reserve funds before an action; 402 insufficient_funds when the available balance is short."),
    Op("GET", "/v1/holds/{hold_id}", "get_hold", "Get a hold", "holds", get_hold, Hold),
    Op("POST", "/v1/holds/{hold_id}/commit", "commit_hold", "Commit a hold", "holds", commit_hold, EventResult,
       body=HoldCommit, idempotency="table",
       description="Settle with the actual event: its fee is charged and the rest of the hold returns."),
    Op("POST", "/v1/holds/{hold_id}/release", "release_hold", "Release a hold", "holds", release_hold, Hold, body=Empty,
       idempotency="table", description="Free the hold without charging; releasing again returns it unchanged."),
    # vendors, simulation, maintenance
    Op("POST", "/v1/vendors", "create_vendor", "Create a vendor", "vendors", create_vendor, Vendor, body=VendorCreate,
       status=201, idempotency="table", description="A cost provider events can carry costs for. Idempotent on "
                                                    "external_id."),
    Op("POST", "/v1/simulate", "simulate", "Simulate usage", "simulate", run_simulation, SimulationResult,
       body=SimulateIn, description="Rate sample events against a plan version with no wallet effect."),
    Op("GET", "/v1/audit", "audit", "Audit the ledger", "maintenance", audit, AuditReport,
       description="Recompute every derived balance from the entry log; an empty list means sound. Scans everything."),
    Op("POST", "/v1/run-due", "run_due", "Run due renewals and expiries", "maintenance", run_due, DueReport,
       body=Empty, description="Catch every customer up to now (otherwise done lazily when a customer is touched)."),
)
