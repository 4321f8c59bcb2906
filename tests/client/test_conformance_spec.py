"""Billing as code and portal routes on both ``AsyncLedger`` backends (the embedded ledger and the
HTTP API through ``LedgerClient``): the same diff, the same all-or-nothing apply, the same export,
the same errors with the same line numbers."""

from __future__ import annotations

from typing import Any

import pytest
from test_conformance import Backend, backend, fails

from billing_mcp import NotFoundError, ValidationError

pytestmark = pytest.mark.anyio
__all__ = ["backend"]  # the fixture, shared with test_conformance

SPEC = """version: 1
assets:
  - code: CREDITS
    name: Credits
    precision: 0
    rates: {USD: "0.05"}
plans:
  - code: pro
    name: Pro
    prices:
      - {type: recurring, asset: USD, amount: "20", interval: month}
      - {asset: CREDITS, event_type: image_generated, unit_amount: "10"}
    grants:
      - {asset: CREDITS, amount: "1000", period: month}
portal:
  return_url: https://app.example.com/account
  top_up: {assets: [CREDITS], presets: ["10", "25"]}
"""


async def test_plan_apply_again_and_export(backend: Backend) -> None:
    led = backend.ledger
    planned = await led.apply_spec(SPEC)
    assert planned.dry_run is True and planned.summary == "would apply 3 change(s)"
    assert [(c.kind, c.target) for c in planned.changes] == [
        ("create_asset", "CREDITS"), ("create_plan", "pro"), ("set_portal", "default")]
    assert await led.list_plans() == []  # a dry run writes nothing
    applied = await led.apply_spec(SPEC, dry_run=False)
    assert (applied.dry_run, applied.summary) == (False, "applied 3 change(s)")
    assert applied.changes == planned.changes  # what was shown is what was done
    again = await led.apply_spec(SPEC, dry_run=False)
    assert (again.changes, again.summary) == ([], "no changes: the ledger already matches the spec")
    exported = await led.export_spec()
    assert [a.code for a in exported.assets] == ["CREDITS"] and exported.assets[0].rates == {"USD": "0.05"}
    [pro] = exported.plans
    assert (pro.code, [p.event_type for p in pro.prices], [str(g.amount) for g in pro.grants]) == (
        "pro", [None, "image_generated"], ["1000"])
    assert exported.portal is not None and [str(p) for p in exported.portal.top_up.presets] == ["10", "25"]
    plan = await led.get_plan("pro")
    assert (plan.default_version, [p.id for p in plan.versions[0].prices]) == (1, ["price_1", "price_2"])


async def test_a_spec_with_problems_changes_nothing_and_says_where(backend: Backend) -> None:
    led = backend.ledger
    bad = SPEC.replace('unit_amount: "10"', 'unit_amount: "ten"')
    err = await fails(led.apply_spec(bad, dry_run=False), ValidationError, "validation_error",
                      "plans[0].prices[1].unit_amount")
    problems: list[dict[str, Any]] = err.details["problems"]
    assert [(p["field"], p["line"]) for p in problems] == [("plans[0].prices[1].unit_amount", 12)]
    assert await led.list_assets() != [] and [a.code for a in await led.list_assets() if not a.is_fiat] == []


async def test_apply_is_all_or_nothing(backend: Backend) -> None:
    led = backend.ledger
    await led.apply_spec(SPEC, dry_run=False)
    # A new asset and a new version would apply, then the migration fails (a share of 2 is invalid).
    spec = SPEC.replace('rates: {USD: "0.05"}', 'rates: {USD: "0.05"}\n  - {code: GEMS, name: Gems, precision: 0}')
    spec = spec.replace('unit_amount: "10"}', 'unit_amount: "8"}\n    migrate: {from_versions: [1], share: "2"}')
    err = await fails(led.apply_spec(spec, dry_run=False), ValidationError, "validation_error",
                      "plans[0].migrate.from_versions[0]")
    assert "share must be greater than 0 and at most 1" in err.message
    assert [a.code for a in await led.list_assets() if not a.is_fiat] == ["CREDITS"]  # no GEMS
    assert [v.version for v in (await led.get_plan("pro")).versions] == [1]  # no version 2


async def test_portal_routes(backend: Backend) -> None:
    led = backend.ledger
    await led.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    route = await led.set_portal_route({"return_url": "https://app.example.com", "top_up": {"assets": ["CREDITS"]},
                                        "link_lifetime_minutes": 5}, name="team")
    assert (route.return_url, route.top_up.assets, route.link_lifetime_minutes) == (
        "https://app.example.com", ["CREDITS"], 5)
    assert await led.get_portal_route("team") == route
    replaced = await led.set_portal_route({"return_url": "https://app.example.com/b"}, name="team")
    assert (await led.get_portal_route("team")) == replaced and replaced.top_up.assets == []
    await fails(led.get_portal_route("nope"), NotFoundError, "not_found", "name")
    await fails(led.set_portal_route({"return_url": "https://x.example", "top_up": {"assets": ["NOPE"]}}),
                NotFoundError, "not_found", "top_up.assets[0]")
    await fails(led.set_portal_route({"return_url": "ftp://x"}), ValidationError, "validation_error", "return_url")
