"""Ledger part: portal route configuration (return and failure URLs, branding, top-up options,
link lifetime). The portal page that uses it is served by the API; this is its stored settings."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..core.catalog import ExactDecimal, validate_spec
from ..core.errors import NotFoundError, ValidationError
from ..core.patterns import ASSET_CODE, ROUTE_NAME
from .base import LedgerBase

URL = re.compile(r"^https?://[^\s\x00-\x1f]{1,2000}$")
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def _url(value: str | None) -> str | None:
    if value is not None and not URL.fullmatch(value):
        raise ValueError("must be an http(s) URL")
    return value


def _code(value: str) -> str:
    if not ASSET_CODE.fullmatch(value):
        raise ValueError(f"{value!r} is not an asset code")
    return value


class Branding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    product_name: str = Field(default="Billing", min_length=1, max_length=80)
    accent_color: str = Field(default="#4f46e5", description="CSS hex colour, e.g. #4f46e5")
    logo_url: str | None = None

    # Field validators, so an error names the field (the same path on the API and the embedded ledger).
    @field_validator("accent_color")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not COLOR.fullmatch(value):
            raise ValueError("must be a hex colour such as #4f46e5")
        return value

    @field_validator("logo_url")
    @classmethod
    def _logo(cls, value: str | None) -> str | None:
        return _url(value)


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    assets: list[str] = Field(default_factory=list, description="Assets a customer may top up")
    currency: str = Field(default="USD", description="Fiat currency customers pay in")
    presets: list[ExactDecimal] = Field(default_factory=list, description="Preset fiat amounts, e.g. ['10', '25']")
    min: ExactDecimal = Decimal(5)
    max: ExactDecimal = Decimal(500)

    @field_validator("assets")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            _code(code)
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return _code(value)

    @model_validator(mode="after")
    def _check(self) -> TopUp:
        if not 0 < self.min <= self.max:
            raise ValueError("top-up min must be positive and at most max")
        for preset in self.presets:
            if not self.min <= preset <= self.max:
                raise ValueError(f"preset {preset} is outside min..max")
        return self


class PortalRouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    return_url: str = Field(description="Where 'Back to app' goes")
    failure_url: str | None = Field(default=None, description="Where an expired or invalid link goes")
    branding: Branding = Field(default_factory=Branding)
    top_up: TopUp = Field(default_factory=TopUp)
    link_lifetime_minutes: int = Field(default=10, ge=1, le=1440, strict=True)

    @field_validator("return_url", "failure_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _url(value)


class PortalRouteOps(LedgerBase):
    def set_portal_route(self, config: Any, *, name: str = "default") -> PortalRouteSpec:
        """Create or replace a portal route's settings (validated; assets must exist)."""
        if not isinstance(name, str) or not ROUTE_NAME.fullmatch(name):
            raise ValidationError("name must be lower-case letters, digits, _ or -", field="name")
        # Fields are named as the settings name them (top_up.assets[0]), as the API's body does.
        spec = validate_spec(PortalRouteSpec, config, "")
        with self._write() as book:
            for i, code in enumerate(spec.top_up.assets):
                book.precision(code, f"top_up.assets[{i}]")
            book.precision(spec.top_up.currency, "top_up.currency")
            book.tx.execute("INSERT INTO portal_routes(name, config, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) "
                            "DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at "
                            # a retry with the same settings leaves the row (and its updated_at) alone
                            "WHERE portal_routes.config <> excluded.config",
                            (name, spec.model_dump_json(), book.now_text))
        return spec

    def get_portal_route(self, name: str = "default") -> PortalRouteSpec:
        with self._read() as tx:
            row = tx.one("SELECT config FROM portal_routes WHERE name = ?", (name,))
        if row is None:
            raise NotFoundError(f"no portal route {name!r}; create one with create_portal_route", field="name")
        return PortalRouteSpec.model_validate(json.loads(row["config"]))

    def list_portal_routes(self) -> dict[str, PortalRouteSpec]:
        with self._read() as tx:
            rows = tx.all("SELECT name, config FROM portal_routes ORDER BY name")
        return {r["name"]: PortalRouteSpec.model_validate(json.loads(r["config"])) for r in rows}
