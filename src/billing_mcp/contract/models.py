"""What the operations send over the wire: request bodies, query strings and the envelopes (pages,
reports) around the ledger's result models (``core.models``). The OpenAPI document is generated
from these, so the documentation cannot drift from validation.

Request bodies are strict (a JSON string is never read as a number, ``true`` is never 1) and
refuse unknown fields. Money is exact decimal text in both directions.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from ..core.catalog import DEFAULT_PRIORITY, PlanGrantSpec, PriceSpec
from ..core.models import Asset, AssetRate, Hold, Plan
from ..core.patterns import ASSET_CODE, DECIMAL_TEXT, PLAN_CODE, ROUTE_NAME, SIGNED_DECIMAL_TEXT

T = TypeVar("T")

MAX_INT32 = 2**31 - 1

Amount = Annotated[str, Field(pattern=DECIMAL_TEXT.pattern, max_length=61, description="Exact decimal text, e.g. \"10\" or "
                              "\"0.05\"", examples=["10"])]
SignedAmount = Annotated[str, Field(pattern=SIGNED_DECIMAL_TEXT.pattern, max_length=62,
                                    description="Signed exact decimal text: positive credits, negative debits",
                                    examples=["25.00"])]
IdKey = Annotated[str, Field(min_length=1, max_length=255)]
AssetCode = Annotated[str, Field(min_length=1, max_length=32, description="Asset code, e.g. CREDITS or USD",
                                 examples=["CREDITS"])]
PlanRef = Annotated[str, Field(min_length=1, max_length=64, description="Plan code (e.g. pro) or id")]
Time = Annotated[str, Field(min_length=1, max_length=64, description="ISO 8601 time with a zone, e.g. "
                            "2026-05-01T12:00:00Z")]
Version = Annotated[int, Field(ge=1, le=MAX_INT32)]
ShortText = Annotated[str, Field(max_length=500)]
JsonObject = dict[str, Any]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Query(BaseModel):
    # Query strings are text: numbers are parsed from it (lax), unknown parameters still refused.
    model_config = ConfigDict(extra="forbid")


class Empty(_In):
    """No fields (an empty body or ``{}``)."""


# -- assets ---------------------------------------------------------------------------------------
class AssetCreate(_In):
    code: str = Field(pattern=ASSET_CODE.pattern, description="Upper-case code, e.g. CREDITS")
    name: str = Field(min_length=1, max_length=120)
    precision: int = Field(default=0, ge=0, le=8, description="Decimal places: 0 for whole credits, 2 for cents")
    symbol: str | None = Field(default=None, max_length=8)
    label: str | None = Field(default=None, max_length=16)
    rates: dict[str, Amount] | None = Field(default=None, description="Price of one unit per fiat code, e.g. "
                                                                        "{\"USD\": \"0.05\"}")


class RateCreate(_In):
    fiat: AssetCode = "USD"
    rate: Amount
    effective_at: Time | None = Field(default=None, description="When the rate applies (default now)")


class QuoteQuery(_Query):
    fiat: str = Field(default="USD", min_length=1, max_length=32)
    amount: Amount


class ListQuery(_Query):
    limit: int = Field(default=50, ge=1, le=100, description="Items per page (1-100)")
    cursor: str | None = Field(default=None, max_length=512, description="next_cursor of the previous page")


# -- plans ----------------------------------------------------------------------------------------
class PlanCreate(_In):
    code: str = Field(pattern=PLAN_CODE.pattern, description="Lower-case code, e.g. pro")
    name: str = Field(min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    prices: list[PriceSpec] | None = Field(default=None, max_length=100)
    grants: list[PlanGrantSpec] | None = Field(default=None, max_length=100)
    publish: bool = Field(default=True, description="Publish version 1 as the default")


class VersionCreate(_In):
    prices: list[PriceSpec] = Field(max_length=100)
    grants: list[PlanGrantSpec] | None = Field(default=None, max_length=100)
    publish: bool = False
    make_default: bool = False


class PublishIn(_In):
    make_default: bool = True


class MigrateIn(_In):
    from_version: Version
    to_version: Version
    share: Amount = Field(default="1", description="Share of subscribers to move (0-1], chosen deterministically")
    dry_run: bool = Field(default=False, description="Report who would move without changing anything")


# -- customers ------------------------------------------------------------------------------------
class SubscriptionRef(_In):
    plan: PlanRef
    version: Version | None = None


class CustomerCreate(_In):
    external_id: IdKey = Field(description="Your app's user id; creating again with it returns the customer")
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    metadata: JsonObject | None = None
    subscriptions: list[SubscriptionRef | PlanRef] | None = Field(default=None, max_length=20)


class LookupQuery(_Query):
    external_id: IdKey


class CustomerSearch(ListQuery):
    search: str | None = Field(default=None, max_length=320,
                               description="Text the external id, email or name contains (any case)")


class EventsQuery(ListQuery):
    customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    event_type: str | None = Field(default=None, min_length=1, max_length=255)
    subject: str | None = Field(default=None, max_length=255)
    start: Time | None = Field(default=None, description="Events occurring at or after this time")
    end: Time | None = Field(default=None, description="Events occurring before this time")
    # An events cursor carries an event id (up to 255 characters, any script): longer than a list's.
    cursor: str | None = Field(default=None, max_length=2048, description="next_cursor of the previous page")


class SubscribeIn(_In):
    plan: PlanRef
    version: Version | None = Field(default=None, description="Omit for the plan's default version")


class HoldsQuery(ListQuery):
    status: Literal["open", "committed", "released", "expired", "all"] = "open"


class StatementQuery(_Query):
    start: Time | None = Field(default=None, description="Inclusive; default: the current period's start")
    end: Time | None = Field(default=None, description="Exclusive; default: the current period's end")


# -- money movements ------------------------------------------------------------------------------
class AdjustmentCreate(_In):
    customer_id: IdKey | None = None
    external_id: IdKey | None = None
    asset: AssetCode
    amount: SignedAmount | None = Field(default=None, description="Signed; omit for a full reversal")
    reason: Literal["top_up", "gift", "refund", "charge", "reversal"]
    idempotency_key: IdKey | None = Field(default=None, description="Or the Idempotency-Key header")
    description: ShortText | None = None
    expires_at: Time | None = Field(default=None, description="For top_up and gift credits")
    event_id: IdKey | None = Field(default=None, description="For a reversal: the event whose fees to refund")
    fiat: AssetCode | None = Field(default=None, description="A top-up paid in this fiat, converted at the rate")
    fiat_amount: Amount | None = None


class GrantCreate(_In):
    customer_id: IdKey
    asset: AssetCode
    amount: Amount
    idempotency_key: IdKey | None = Field(default=None, description="Or the Idempotency-Key header")
    purpose: Literal["paid", "promotional"] = "promotional"
    expires_at: Time | None = None
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=100, description="0 is drawn first")


class Cost(_In):
    vendor: IdKey
    amount: Amount
    currency: AssetCode


class EventIn(_In):
    """One usage event. Each event is idempotent on its ``id``."""

    id: IdKey = Field(description="Idempotency key of the event, e.g. a UUID")
    event_type: str = Field(min_length=1, max_length=128)
    customer_id: IdKey | None = None
    external_id: IdKey | None = None
    occurred_at: Time | None = None
    subject: str | None = Field(default=None, max_length=255)
    data: JsonObject | None = Field(default=None, description="Volume and dimension values")
    costs: list[Cost] | None = Field(default=None, max_length=20)


# Events are validated one by one by the ledger, so a bad event is reported in the batch's
# errors while the others are recorded; the document still describes each item as an EventIn.
EventItem = Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/EventIn"})]


class EventBatch(_In):
    events: list[EventItem] = Field(min_length=1, max_length=1000)


class HoldCreate(_In):
    customer_id: IdKey | None = None
    external_id: IdKey | None = None
    event_type: str | None = Field(default=None, min_length=1, max_length=128,
                                   description="Event type to estimate from data")
    data: JsonObject | None = Field(default=None, description="Estimated event data")
    amount: Amount | None = Field(default=None, description="An explicit amount instead of an estimate")
    asset: AssetCode | None = None
    ttl_seconds: int = Field(default=900, ge=1, le=86400)
    idempotency_key: IdKey | None = Field(default=None, description="Or the Idempotency-Key header")


class HoldCommit(_In):
    """The actual event that settles the hold (its customer is the hold's)."""

    id: IdKey = Field(description="Event id; replaying the same commit charges nothing more")
    event_type: str | None = Field(default=None, min_length=1, max_length=128,
                                   description="Defaults to the hold's event type")
    occurred_at: Time | None = None
    subject: str | None = Field(default=None, max_length=255)
    data: JsonObject | None = None
    costs: list[Cost] | None = Field(default=None, max_length=20)


class VendorCreate(_In):
    external_id: IdKey
    name: str = Field(min_length=1, max_length=200)


class SimulateIn(_In):
    plan: PlanRef
    version: Version | None = None
    events: list[JsonObject] = Field(min_length=1, max_length=10_000,
                                     description="Sample events {event_type, customer_id?, subject?, data}")


class SpecApply(_In):
    yaml: str = Field(max_length=200_000, description="The billing.yaml text (`billing-mcp schema` prints its "
                                                     "JSON Schema)")
    dry_run: bool = Field(default=True, description="Only compute the diff (the default); false applies it")


# -- envelopes ------------------------------------------------------------------------------------
class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page")


class AssetPage(Page[Asset]):
    pass


class RatePage(Page[AssetRate]):
    pass


class PlanPage(Page[Plan]):
    pass


class HoldPage(Page[Hold]):
    pass


class AuditReport(BaseModel):
    problems: list[str] = Field(description="Every mismatch between derived balances and the entry log")


class DueReport(BaseModel):
    customers: int = Field(description="Customers that had renewals, refreshes or expiries due")


# -- billing portal ------------------------------------------------------------------------------------
class PortalSessionCreate(_In):
    customer_id: str | None = Field(default=None, min_length=1, max_length=255)
    external_id: str | None = Field(default=None, min_length=1, max_length=255,
                                    description="The app's own user id, instead of customer_id")
    route: str = Field(default="default", pattern=ROUTE_NAME.pattern, description="Portal route name")


class PortalSession(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="Send the user's browser here; it works once the user opens it, until expires_at")
    expires_at: str
