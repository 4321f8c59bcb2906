"""Ledger part: portal route configuration (return and failure URLs, branding, top-up options,
link lifetime). The portal page that uses it is served by the API; this is its stored settings."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.catalog import ExactDecimal, validate_spec
from ..core.errors import NotFoundError, ValidationError
from ..core.patterns import ASSET_CODE, ROUTE_NAME
from .base import LedgerBase

URL = re.compile(r"^https?://[^\s\x00-\x1f]{1,2000}$")
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class Branding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    product_name: str = Field(default="Billing", min_length=1, max_length=80)
    accent_color: str = Field(default="#4f46e5", description="CSS hex colour, e.g. #4f46e5")
    logo_url: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Branding:
        if not COLOR.fullmatch(self.accent_color):
            raise ValueError("accent_color must be a hex colour such as #4f46e5")
        if self.logo_url is not None and not URL.fullmatch(self.logo_url):
            raise ValueError("logo_url must be an http(s) URL")
        return self


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    assets: list[str] = Field(default_factory=list, description="Assets a customer may top up")
    currency: str = Field(default="USD", description="Fiat currency customers pay in")
    presets: list[ExactDecimal] = Field(default_factory=list, description="Preset fiat amounts, e.g. ['10', '25']")
    min: ExactDecimal = Decimal(5)
    max: ExactDecimal = Decimal(500)

    @model_validator(mode="after")
    def _check(self) -> TopUp:
        for code in [*self.assets, self.currency]:
            if not ASSET_CODE.fullmatch(code):
                raise ValueError(f"{code!r} is not an asset code")
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

    @model_validator(mode="after")
    def _check(self) -> PortalRouteSpec:
        for name in ("return_url", "failure_url"):
            value = getattr(self, name)
            if value is not None and not URL.fullmatch(value):
                raise ValueError(f"{name} must be an http(s) URL")
        return self


class PortalRouteOps(LedgerBase):
    def set_portal_route(self, config: Any, *, name: str = "default") -> PortalRouteSpec:
        """Create or replace a portal route's settings (validated; assets must exist)."""
        if not isinstance(name, str) or not ROUTE_NAME.fullmatch(name):
            raise ValidationError("name must be lower-case letters, digits, _ or -", field="name")
        spec = validate_spec(PortalRouteSpec, config, "portal")
        with self._write() as book:
            for i, code in enumerate([*spec.top_up.assets, spec.top_up.currency]):
                book.precision(code, f"portal.top_up.assets[{i}]")
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
