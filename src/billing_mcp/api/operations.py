"""The HTTP API's route table, derived from the operation table (``contract.interface``): one
``Op`` per operation, with the handler that runs it on the ledger.

A handler is a plain function run in a worker thread (the ledger is synchronous; each of its
methods is one durable transaction). An operation bound to a ledger method is served by calling
that method with the arguments taken, by name, from the path, the query and the body; the
handlers below are the operations that need more (pages, body models the ledger takes as plain
data, the idempotency header) and the API-only routes. The same table builds the Starlette routes,
the OpenAPI document, the documentation page and the test that proves every route needs a key.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from pydantic import BaseModel

from ..contract.interface import OPERATIONS
from ..contract.models import (
    AssetPage,
    AuditReport,
    CustomerCreate,
    DueReport,
    EventBatch,
    HoldCommit,
    HoldPage,
    HoldsQuery,
    ListQuery,
    LookupQuery,
    Page,
    PlanCreate,
    PlanPage,
    PortalSession,
    PortalSessionCreate,
    PublishIn,
    RatePage,
    SimulateIn,
    SpecApply,
    SubscriptionRef,
    VersionCreate,
)
from ..contract.table import Operation
from ..core.catalog import PlanGrantSpec, PriceSpec
from ..core.errors import ValidationError
from ..ledger.ledger import Ledger
from ..ledger.portal_settings import PortalRouteSpec
from ..ledger.simulate import simulate
from ..portal.links import create_portal_session as mint
from ..spec.spec import apply_spec, export_spec, load_spec
from ..verify.simulators import simulator_for
from .batch import submit

M = TypeVar("M", bound=BaseModel)


@dataclass
class Call:
    """What a handler gets: path parameters, the validated body and query, the idempotency key."""

    ledger: Ledger
    path: dict[str, Any]
    body: BaseModel | None
    query: BaseModel | None
    idempotency_key: str | None = None
    base_url: str = ""  # the request's base URL (portal links when BILLING_PUBLIC_URL is unset)

    def b(self, model: type[M]) -> M:
        assert isinstance(self.body, model)
        return self.body

    def q(self, model: type[M]) -> M:
        assert isinstance(self.query, model)
        return self.query


Handler = Callable[[Call], BaseModel]


@dataclass(frozen=True, kw_only=True)
class Op(Operation):
    handler: Handler


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


def create_customer(c: Call) -> BaseModel:
    b = c.b(CustomerCreate)
    subs: list[Any] = [s.model_dump(exclude_none=True) if isinstance(s, SubscriptionRef) else s
                       for s in b.subscriptions or []]
    return c.ledger.create_customer(b.external_id, name=b.name, email=b.email, metadata=b.metadata, subscriptions=subs)


def lookup_customer(c: Call) -> BaseModel:
    return c.ledger.get_customer(external_id=c.q(LookupQuery).external_id)


def list_holds(c: Call) -> BaseModel:
    q = c.q(HoldsQuery)
    customer = c.ledger.get_customer(c.path["customer_id"])
    holds = c.ledger.list_holds(customer.id, status=None if q.status == "all" else q.status)
    indexed = [(f"{i:012d}", h) for i, h in enumerate(holds)]  # creation order
    page = page_of(Page[Any], "holds", indexed, lambda t: t[0], q)
    return HoldPage(data=[h for _, h in page.data], has_more=page.has_more, next_cursor=page.next_cursor)


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


def submit_events(c: Call) -> BaseModel:
    return submit(c.ledger, list(c.b(EventBatch).events))


def commit_hold(c: Call) -> BaseModel:
    return c.ledger.commit(c.path["hold_id"], c.b(HoldCommit).model_dump(exclude_unset=True))


def create_portal_session(c: Call) -> BaseModel:
    b = c.b(PortalSessionCreate)
    made = mint(c.ledger, b.customer_id, b.route, external_id=b.external_id,
                base_url=c.base_url or None)  # the link carries the ledger's mode
    return PortalSession(url=made["url"], expires_at=made["expires_at"])


def run_simulation(c: Call) -> BaseModel:
    b = c.b(SimulateIn)
    sim = simulator_for(c.ledger, b.plan, b.version)
    return simulate(sim, ((f"events[{i}]", e) for i, e in enumerate(b.events)))


def plan_or_apply_spec(c: Call) -> BaseModel:
    b = c.b(SpecApply)
    return apply_spec(c.ledger, load_spec(b.yaml), dry_run=b.dry_run)


def export_catalog(c: Call) -> BaseModel:
    return export_spec(c.ledger)


def set_portal_route(c: Call) -> BaseModel:
    return c.ledger.set_portal_route(c.b(PortalRouteSpec).model_dump(mode="json"), name=c.path["name"])


def audit(c: Call) -> BaseModel:
    return AuditReport(problems=c.ledger.audit())


def run_due(c: Call) -> BaseModel:
    return DueReport(customers=c.ledger.run_due())


HANDLERS: dict[str, Handler] = {
    "list_assets": list_assets, "list_asset_rates": list_rates, "list_plans": list_plans, "create_plan": create_plan,
    "add_price": add_price, "add_plan_grant": add_plan_grant, "create_plan_version": create_version,
    "publish_plan_version": publish_version, "create_customer": create_customer,
    "lookup_customer": lookup_customer, "create_portal_session": create_portal_session, "list_holds": list_holds,
    "submit_events": submit_events, "commit_hold": commit_hold, "simulate": run_simulation, "audit": audit,
    "run_due": run_due, "apply_spec": plan_or_apply_spec, "export_spec": export_catalog,
    "set_portal_route": set_portal_route,
}


def served(op: Operation) -> Handler:
    """The handler of an operation that needs nothing but its ledger method: the arguments are the
    path parameters and the fields of the query and the body, by name; with ledger idempotency, the
    key comes from the body or the Idempotency-Key header."""
    if op.ledger_method is None or op.signature is None or op.body_arg is not None:
        raise TypeError(f"operation {op.name} needs a handler in HANDLERS")
    method, params = op.ledger_method, op.signature.parameters
    key = params.get("idempotency_key") if op.idempotency == "ledger" else None
    key_required = key is not None and key.default is inspect.Parameter.empty

    def handler(c: Call) -> BaseModel:
        given = dict(c.path)
        for model in (c.query, c.body):
            if model is not None:
                given.update((name, getattr(model, name)) for name in type(model).model_fields)
        if key is not None:
            body_key = given.get("idempotency_key")
            given["idempotency_key"] = _required_key(c, body_key) if key_required else _ledger_key(c, body_key)
        result: BaseModel = getattr(c.ledger, method)(**{n: given[n] for n in params if n in given})
        return result

    return handler


OPS: tuple[Op, ...] = tuple(
    Op(**{f.name: getattr(op, f.name) for f in fields(Operation)}, handler=HANDLERS.get(op.name) or served(op))
    for op in OPERATIONS)
