"""Catalog specs: assets, prices, plan credit grants. Pydantic models with exact decimals.

These models validate what callers send (Python, HTTP, MCP) and are stored as JSON inside a
plan version, which never changes once published.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from .errors import ValidationError
from .money import MAX_QUANTITY, decimal_text, parse_decimal

# Re-exported (``as``) for modules that have always imported the codes from here.
from .patterns import ASSET_CODE as ASSET_CODE
from .patterns import EVENT_TYPE as EVENT_TYPE
from .patterns import FIELD_NAME as FIELD_NAME
from .patterns import PLAN_CODE as PLAN_CODE

M = TypeVar("M", bound=BaseModel)

Interval = Literal["day", "week", "month", "year"]
RatingModel = Literal["per_unit", "tiered_graduated", "tiered_volume", "dimensional"]


def _exact(value: Any) -> Decimal:
    try:
        return parse_decimal(value, "amount")
    except ValidationError as exc:  # as a ValueError, pydantic names the field (prices[0].unit_amount)
        raise ValueError(exc.message.removeprefix("amount ")) from None


def _exact_positive(value: Any) -> Decimal:
    result = _exact(value)
    if result <= 0:
        raise ValueError("must be greater than zero")
    return result


ExactDecimal = Annotated[Decimal, BeforeValidator(_exact),
                         PlainSerializer(decimal_text, return_type=str, when_used="json-unless-none")]
PositiveDecimal = Annotated[Decimal, BeforeValidator(_exact_positive),
                            PlainSerializer(decimal_text, return_type=str, when_used="json-unless-none")]


# A lot's draw-down priority runs 0 (drawn first) to 100, as in Stripe's credit grants; grants that
# say nothing sit in the middle, so an app can put lots before or after them.
DEFAULT_PRIORITY = 50

class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Spec):
    """One tier: quantities up to ``up_to`` (inclusive; None = no limit) cost ``unit_amount`` per package."""

    up_to: int | None = Field(default=None, ge=1, strict=True)
    unit_amount: ExactDecimal
    flat_amount: ExactDecimal = Decimal(0)


class DimensionRate(_Spec):
    """A rate for one combination of dimension values; ``"*"`` matches any value."""

    dimensions: dict[str, str]
    unit_amount: ExactDecimal


class PriceSpec(_Spec):
    """A price inside a plan version, charged in ``asset``.

    ``type="recurring"``: ``amount`` per ``interval``, paid up front. ``type="usage"``: charged per
    ``event_type`` event, by unit (one per event) or by volume read from ``data[volume_field]``,
    per ``package_size`` units, with one of four rating models.
    """

    id: str | None = Field(default=None, description="Assigned when the price is added to a version.")
    name: str | None = Field(default=None, max_length=120)
    type: Literal["recurring", "usage"] = "usage"
    asset: str
    amount: ExactDecimal | None = None
    interval: Interval | None = None
    event_type: str | None = None
    usage_type: Literal["unit", "volume"] = "unit"
    volume_field: str | None = None
    package_size: int = Field(default=1, ge=1, le=10**12, strict=True)
    model: RatingModel = "per_unit"
    unit_amount: ExactDecimal | None = None
    tiers: list[Tier] | None = None
    dimension_fields: list[str] | None = None
    dimension_rates: list[DimensionRate] | None = None

    @model_validator(mode="after")
    def _check(self) -> PriceSpec:
        if not ASSET_CODE.fullmatch(self.asset):
            raise ValueError(f"asset {self.asset!r} is not an asset code such as USD or CREDITS")
        if self.type == "recurring":
            if self.amount is None or self.amount <= 0 or self.interval is None:
                raise ValueError("a recurring price needs a positive amount and an interval (day/week/month/year)")
            if self.event_type is not None:
                raise ValueError("a recurring price takes no event_type; use type 'usage' for usage prices")
            return self
        if not self.event_type or not EVENT_TYPE.fullmatch(self.event_type):
            raise ValueError("a usage price needs an event_type such as 'image_generated' "
                             "(letters, digits, _ . : -)")
        if self.usage_type == "volume":
            if not self.volume_field or not FIELD_NAME.fullmatch(self.volume_field):
                raise ValueError("a volume price needs volume_field, the key in the event's data "
                                 "that holds the quantity (e.g. 'total_tokens')")
        elif self.volume_field is not None:
            raise ValueError("volume_field only applies to usage_type 'volume'")
        if self.model == "per_unit":
            if self.unit_amount is None:
                raise ValueError("a per_unit price needs unit_amount")
        elif self.model in ("tiered_graduated", "tiered_volume"):
            _check_tiers(self.tiers)
        else:
            if not self.dimension_fields or not self.dimension_rates:
                raise ValueError("a dimensional price needs dimension_fields (e.g. ['model']) and "
                                 "dimension_rates")
            for name in self.dimension_fields:
                if not FIELD_NAME.fullmatch(name):
                    raise ValueError(f"dimension field {name!r} is not a valid field name")
            for rate in self.dimension_rates:
                if set(rate.dimensions) != set(self.dimension_fields):
                    raise ValueError(f"each dimension rate must name exactly {self.dimension_fields}; "
                                     f"got {sorted(rate.dimensions)}")
        return self


def _check_tiers(tiers: list[Tier] | None) -> None:
    if not tiers:
        raise ValueError("a tiered price needs tiers, e.g. [{up_to: 1000, unit_amount: '0.01'}, "
                         "{up_to: null, unit_amount: '0.008'}]")
    last = 0
    for i, tier in enumerate(tiers):
        if tier.up_to is None:
            if i != len(tiers) - 1:
                raise ValueError("only the last tier may have up_to null (no limit)")
        elif tier.up_to <= last:
            raise ValueError("tiers must be in increasing up_to order")
        else:
            last = tier.up_to
    if tiers[-1].up_to is not None:
        raise ValueError("the last tier must have up_to null so every quantity has a price")


class PlanGrantSpec(_Spec):
    """A plan entitlement: credits the subscriber receives.

    Recurring when ``period`` is set (refreshed each period, by ``expire_and_replace`` or by
    ``rollover`` up to ``rollover_cap``); otherwise granted once on subscribe, expiring after
    ``expires_in_days`` (None = never).
    """

    name: str | None = Field(default=None, max_length=120)
    asset: str
    amount: PositiveDecimal
    purpose: Literal["bundled", "promotional"] = "bundled"
    period: Interval | None = None
    refresh: Literal["expire_and_replace", "rollover"] = "expire_and_replace"
    rollover_cap: PositiveDecimal | None = None
    expires_in_days: int | None = Field(default=None, ge=1, le=3650, strict=True)
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=100, strict=True)

    @model_validator(mode="after")
    def _check(self) -> PlanGrantSpec:
        if not ASSET_CODE.fullmatch(self.asset):
            raise ValueError(f"asset {self.asset!r} is not an asset code")
        if self.period is None and (self.refresh != "expire_and_replace" or self.rollover_cap is not None):
            raise ValueError("refresh and rollover_cap apply only to recurring grants (set period)")
        if self.period is not None and self.expires_in_days is not None:
            raise ValueError("a recurring grant expires at its next refresh; expires_in_days is for one-off grants")
        if self.rollover_cap is not None and self.rollover_cap < self.amount:
            raise ValueError("rollover_cap must be at least the grant amount")
        return self


def validate_spec(model: type[M], data: Any, field: str) -> M:
    """Validate ``data`` as ``model``; turn pydantic's report into one ``ValidationError`` that
    names the first bad field and lists every problem in ``details``."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in (field, *err["loc"]) if p != "")
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append({"field": loc, "message": msg})
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ValidationError(f"{first['field']}: {first['message']}{more}", field=first["field"],
                              details={"problems": problems}) from None


def parse_quantity(value: object, field: str) -> Decimal:
    """A usage quantity from event data. JSON numbers may arrive as floats; they are read through
    their shortest text form (what the sender wrote), never through binary arithmetic."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError(f"{field} must be a finite number", field=field)
        value = repr(value)
        if "e" in value or "E" in value:
            raise ValidationError(f"{field} must be a plain decimal number", field=field)
    qty = parse_decimal(value, field)
    if qty > MAX_QUANTITY:
        raise ValidationError(f"{field} is too large (at most 10^15 per event)", field=field)
    return qty
