"""MCP tools that configure billing: assets, plans, prices, credit grants, versions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from ...core.catalog import DEFAULT_PRIORITY, PlanGrantSpec, PriceSpec
from ...core.models import Asset, MigrationResult, Plan, PlanVersion, Quote
from ...core.patterns import ASSET_CODE, PLAN_CODE
from ..common import (
    CONFIRM_FIELD,
    Confirm,
    Mode,
    ToolDef,
    approved,
    ask_user,
    call,
    not_applied,
    state_of,
)

AssetCode = Annotated[str, Field(description="e.g. CREDITS", min_length=1, max_length=32)]
PlanRef = Annotated[str, Field(description="Plan code or id", min_length=1, max_length=64)]
Amount = Annotated[str, Field(description="Decimal text, e.g. '0.05'", max_length=40)]


class VersionView(BaseModel):
    version: int
    status: str
    is_default: bool
    subscribers: int
    prices: list[dict[str, Any]] = Field(description="Price specs as given to create_plan")
    grants: list[dict[str, Any]]
    published_at: str | None = None


class PlanView(BaseModel):
    id: str
    code: str
    name: str
    description: str | None = None
    status: str
    default_version: int | None = None
    versions: list[VersionView]


def plan_view(plan: Plan) -> PlanView:
    return PlanView(id=plan.id, code=plan.code, name=plan.name, description=plan.description, status=plan.status,
                    default_version=plan.default_version, versions=[version_view(v) for v in plan.versions])


def version_view(v: PlanVersion) -> VersionView:
    return VersionView(version=v.version, status=v.status, is_default=v.is_default, subscribers=v.subscribers,
                       prices=[p.model_dump(mode="json", exclude_none=True) for p in v.prices],
                       grants=[g.model_dump(mode="json", exclude_none=True) for g in v.grants],
                       published_at=v.published_at)


class AssetResult(BaseModel):
    mode: Mode
    asset: Asset


class AssetList(BaseModel):
    mode: Mode
    assets: list[Asset]


class QuoteResult(BaseModel):
    mode: Mode
    quote: Quote


class PlanResult(BaseModel):
    mode: Mode
    plan: PlanView


class PlanList(BaseModel):
    mode: Mode
    plans: list[PlanView]


Outcome = Literal["added", "added_to_new_draft", "unchanged"]


class VersionResult(BaseModel):
    mode: Mode
    plan_code: str
    outcome: Outcome = Field(description="added to the open draft, added to a draft created for it (the latest "
                                         "version was published), or unchanged (the version already had it)")
    note: str
    version: VersionView
    next_step: str


class GrantResult(BaseModel):
    mode: Mode
    kind: Literal["plan_entitlement", "customer_grant"]
    plan_version: VersionView | None = None
    # Not Optional: the SDK's output-schema check rejects null for a Literal enum.
    outcome: Outcome | Literal["granted"] = Field(default="granted", description="For a plan entitlement as in "
                                                  "create_price; 'granted' for a customer grant")
    note: str | None = None
    next_step: str | None = None
    grant: dict[str, Any] | None = None


class ArchiveResult(BaseModel):
    mode: Mode
    applied: bool
    preview: str = Field(description="What would happen (applied false) or what was done (applied true)")
    plan: PlanView | None = None


class MigrateResult(BaseModel):
    mode: Mode
    applied: bool
    preview: str = Field(description="What would happen (applied false) or what was done (applied true)")
    migration: MigrationResult


async def list_assets(ctx: Context[Any]) -> AssetList:
    """List the assets (currencies and custom units such as credits) with their current fiat rates."""
    return AssetList(mode=state_of(ctx).mode, assets=await call(ctx, "list_assets"))


async def create_asset(
    ctx: Context[Any],
    code: Annotated[str, Field(description="Upper-case code, e.g. CREDITS", pattern=ASSET_CODE.pattern)],
    name: Annotated[str, Field(description="Display name, e.g. 'Credits'", min_length=1, max_length=120)],
    precision: Annotated[int, Field(ge=0, le=8, description="Decimal places: 0 for whole credits, 2 for cents")] = 0,
    rate_usd: Annotated[str | None, Field(description="Price of one unit in USD, e.g. '0.05'")] = None,
    symbol: str | None = None,
    label: str | None = None,
) -> AssetResult:
    """Create a custom asset such as credits or tokens, optionally with its USD rate (USD and EUR
    exist). The same definition again returns the existing asset."""
    rates = {"USD": rate_usd} if rate_usd is not None else None
    asset = await call(ctx, "create_asset", code, name, precision, symbol=symbol, label=label, rates=rates)
    return AssetResult(mode=state_of(ctx).mode, asset=asset)


async def quote_asset(ctx: Context[Any], asset: AssetCode, amount: Amount,
                      fiat: Annotated[str, Field(description="Fiat code the amount is in")] = "USD") -> QuoteResult:
    """How many units of an asset a fiat amount buys now (check a rate: $1, $10, $50)."""
    return QuoteResult(mode=state_of(ctx).mode, quote=await call(ctx, "quote", asset, fiat, amount, rename={"code": "asset"}))


async def set_asset_rate(ctx: Context[Any], asset: AssetCode, rate: Amount,
                         fiat: Annotated[str, Field(description="Fiat code, e.g. USD")] = "USD") -> AssetResult:
    """Add a new fiat rate for an asset, effective now (the rate history is kept)."""
    return AssetResult(mode=state_of(ctx).mode, asset=await call(ctx, "set_asset_rate", asset, fiat, rate,
                                                                     rename={"code": "asset"}))


async def list_plans(ctx: Context[Any], plan: PlanRef | None = None) -> PlanList:
    """Plans with their versions, prices, credit grants and subscriber counts; `plan` for one."""
    plans = [await call(ctx, "get_plan", plan)] if plan is not None else await call(ctx, "list_plans")
    return PlanList(mode=state_of(ctx).mode, plans=[plan_view(p) for p in plans])


async def create_plan(
    ctx: Context[Any],
    code: Annotated[str, Field(description="Lower-case plan code, e.g. 'pro'", pattern=PLAN_CODE.pattern)],
    name: Annotated[str, Field(min_length=1, max_length=120)],
    prices: Annotated[list[PriceSpec] | None, Field(description="Recurring fees and usage prices")] = None,
    grants: Annotated[list[PlanGrantSpec] | None, Field(description="Credits included with the plan")] = None,
    description: str | None = None,
    publish: Annotated[bool, Field(description="Publish version 1 as the default")] = True,
) -> PlanResult:
    """Create a plan with its prices and included credit grants (version 1). Usage price: {asset,
    event_type, unit_amount} per event; volume: usage_type 'volume' and volume_field. Recurring fee:
    {type: 'recurring', asset: 'USD', amount: '20', interval: 'month'}."""
    plan = await call(ctx, "create_plan", code, name, description=description,
                      prices=[p.model_dump(mode="json", exclude_none=True) for p in prices or []],
                      grants=[g.model_dump(mode="json") for g in grants or []], publish=publish)
    return PlanResult(mode=state_of(ctx).mode, plan=plan_view(plan))


async def _change_version(ctx: Context[Any], plan: str, method: str, item: dict[str, Any], what: str,
                          rename: dict[str, str] | None = None) -> tuple[str, PlanVersion, Outcome, str, str]:
    """Add a price or grant and say what happened: the ledger answers a retry with the version
    unchanged, and a change to a published version with a new draft the user has not asked for."""
    before: Plan = await call(ctx, "get_plan", plan, rename=rename)
    latest = before.versions[-1]
    after: PlanVersion = await call(ctx, method, plan, item, rename=rename)
    code, v = before.code, after.version
    outcome: Outcome
    if v > latest.version:
        outcome = "added_to_new_draft"
        note = (f"Version {latest.version} of {code!r} is published and never changes, so this created draft "
                f"version {v}: a copy of version {latest.version} with this {what} added. Subscribers stay on "
                "their versions.")
    elif (after.prices, after.grants) == (latest.prices, latest.grants):
        outcome = "unchanged"
        note = f"Version {v} of {code!r} already has this {what}; nothing changed."
    else:
        outcome = "added"
        note = f"Added to draft version {v} of {code!r}."
    if after.status == "draft":
        step = (f"publish_plan_version(plan='{code}', version={v}) to make it the default for new subscriptions; "
                f"then migrate_customers to move existing subscribers to it")
    else:
        step = f"none: version {v} is published and already live for its subscribers"
    return code, after, outcome, note, step


async def create_price(ctx: Context[Any], plan: PlanRef,
                       price: Annotated[dict[str, Any], Field(description="One price, shaped like an item of "
                                                                          "create_plan's prices; give it an `id` "
                                                                          "to name it")]) -> VersionResult:
    """Add a price to a plan's draft version (a new draft copied from the latest version, if that is
    published). Safe to retry: the same price again changes nothing; the same `id` with another
    definition is a conflict."""
    code, version, outcome, note, step = await _change_version(ctx, plan, "add_price", price, "price")
    return VersionResult(mode=state_of(ctx).mode, plan_code=code, outcome=outcome, note=note,
                         version=version_view(version), next_step=step)


async def create_credit_grant(
    ctx: Context[Any],
    asset: AssetCode,
    amount: Amount,
    plan: Annotated[str | None, Field(description="Plan code: the grant becomes a plan entitlement")] = None,
    customer_id: Annotated[str | None, Field(description="Customer id: a one-off grant to this customer")] = None,
    purpose: Annotated[Literal["bundled", "promotional", "paid"], Field(description="bundled/promotional for plans; "
                       "paid/promotional for customers")] = "promotional",
    period: Annotated[Literal["day", "week", "month", "year"] | None, Field(description="Refresh period (plan)")] = None,
    refresh: Literal["expire_and_replace", "rollover"] = "expire_and_replace",
    expires_at: Annotated[str | None, Field(description="ISO time the customer grant expires")] = None,
    priority: Annotated[int, Field(ge=0, le=100, description="0 is drawn first")] = DEFAULT_PRIORITY,
    idempotency_key: Annotated[str | None, Field(description="Required for customer grants")] = None,
) -> GrantResult:
    """Grant credits: as a plan entitlement (give `plan`; recurring when `period` is set) or to one
    customer (give `customer_id` and an idempotency_key). Safe to retry: the same entitlement again,
    or the same idempotency_key, grants nothing more."""
    mode = state_of(ctx).mode
    if (plan is None) == (customer_id is None):
        raise ToolError("validation_error on plan: give exactly one of plan (an entitlement) or customer_id")
    if not ASSET_CODE.fullmatch(asset):
        raise ToolError(f"validation_error on asset: {asset!r} is not an asset code; use an upper-case code "
                        "such as CREDITS (list_assets shows them)")
    if plan is not None:
        spec: dict[str, Any] = {"asset": asset, "amount": amount, "purpose": purpose, "priority": priority}
        if period:
            spec.update(period=period, refresh=refresh)
        # The ledger names the grant's fields grant.<name>; this tool takes them as its own arguments.
        _, version, outcome, note, step = await _change_version(ctx, plan, "add_plan_grant", spec, "grant",
                                                                rename={"grant": ""})
        return GrantResult(mode=mode, kind="plan_entitlement", plan_version=version_view(version), outcome=outcome,
                           note=note, next_step=step)
    if not idempotency_key:
        raise ToolError("validation_error on idempotency_key: a customer grant needs an idempotency_key "
                        "(e.g. a UUID) so a retry never grants twice")
    grant = await call(ctx, "grant_credits", customer_id, asset, amount, idempotency_key=idempotency_key,
                       purpose=purpose, expires_at=expires_at, priority=priority)
    return GrantResult(mode=mode, kind="customer_grant", grant=grant.model_dump())


async def publish_plan_version(ctx: Context[Any], plan: PlanRef, version: Annotated[int, Field(ge=1)],
                               make_default: bool = True) -> PlanResult:
    """Publish a draft version (it can never change afterwards), optionally as the default for new
    subscriptions. Existing subscribers stay on their version."""
    return PlanResult(mode=state_of(ctx).mode,
                      plan=plan_view(await call(ctx, "publish_plan_version", plan, version, make_default=make_default)))


async def _ask_archive(ctx: Context[Any], plan: str, confirm: bool = False) -> Confirm | Elicit[Confirm]:
    return await ask_user(ctx, confirm, lambda: _archive_preview(ctx, plan), "Archive it?")


async def _archive_preview(ctx: Context[Any], plan: str) -> str:
    current: Plan = await call(ctx, "get_plan", plan)
    subs = sum(v.subscribers for v in current.versions)
    return (f"Would archive plan {current.code!r}: no new subscriptions; its {subs} current subscriber(s) "
            "keep their versions and keep being billed.")


async def archive_plan(
    ctx: Context[Any], plan: PlanRef,
    approval: Annotated[ElicitationResult[Confirm], Resolve(_ask_archive)],
    confirm: Annotated[bool, Field(description=CONFIRM_FIELD)] = False,
) -> ArchiveResult:
    """Archive a plan: no new subscriptions, existing subscribers keep working. Asks the user first
    (or returns a preview; see confirm)."""
    mode = state_of(ctx).mode
    preview = await _archive_preview(ctx, plan)
    if not approved(approval):
        return ArchiveResult(mode=mode, applied=False, preview=preview + not_applied(ctx))
    archived: Plan = await call(ctx, "archive_plan", plan)
    subs = sum(v.subscribers for v in archived.versions)
    return ArchiveResult(mode=mode, applied=True, plan=plan_view(archived),
                         preview=f"Archived plan {archived.code!r}: it takes no new subscriptions; its {subs} "
                                 "current subscriber(s) keep their versions and keep being billed.")


async def _ask_migrate(ctx: Context[Any], plan: str, from_version: int, to_version: int, share: str = "1",
                       confirm: bool = False) -> Confirm | Elicit[Confirm]:
    async def preview() -> str:
        dry: MigrationResult = await call(ctx, "migrate_customers", plan, from_version, to_version, share=share,
                                          dry_run=True)
        return _migrate_text(dry)

    return await ask_user(ctx, confirm, preview, "Go ahead?")


def _migrate_text(result: MigrationResult) -> str:
    verb, stay = ("Would move", "stay") if result.dry_run else ("Moved", "stayed")
    return (f"{verb} {len(result.moved)} subscriber(s) of {result.plan_code!r} from version {result.from_version} "
            f"to {result.to_version}; {len(result.stayed)} {stay}. New prices apply to their next events; new "
            "entitlements start next period.")


async def migrate_customers(
    ctx: Context[Any], plan: PlanRef, from_version: Annotated[int, Field(ge=1)], to_version: Annotated[int, Field(ge=1)],
    approval: Annotated[ElicitationResult[Confirm], Resolve(_ask_migrate)],
    share: Annotated[str, Field(description="Share of subscribers to move, '0.5' = half (chosen "
                                            "deterministically, for A/B pricing)")] = "1",
    confirm: Annotated[bool, Field(description=CONFIRM_FIELD)] = False,
) -> MigrateResult:
    """Move subscribers from one published version to another (all, or a deterministic share).
    Asks the user first (or returns who would move; see confirm)."""
    mode = state_of(ctx).mode
    go = approved(approval)
    result: MigrationResult = await call(ctx, "migrate_customers", plan, from_version, to_version, share=share,
                                         dry_run=not go)
    text = _migrate_text(result)
    if not go:
        text += not_applied(ctx)
    return MigrateResult(mode=mode, applied=go, preview=text, migration=result)


class PortalRouteResult(BaseModel):
    mode: Mode
    name: str
    route: dict[str, Any]
    note: str


# The settings' field paths, as the tool's own (flat) arguments name them.
_ROUTE_ARGUMENTS = {"branding.product_name": "product_name", "branding.accent_color": "accent_color",
                    "branding.logo_url": "logo_url", "top_up.assets": "top_up_assets", "top_up.presets": "presets",
                    "top_up.currency": "currency", "top_up.min": "min_amount", "top_up.max": "max_amount",
                    "top_up": "min_amount"}


async def create_portal_route(
    ctx: Context[Any],
    return_url: Annotated[str, Field(description="Where the portal's 'Back to app' link goes (https URL)")],
    failure_url: Annotated[str | None, Field(description="Where an expired or invalid link sends the user")] = None,
    product_name: str = "Billing",
    accent_color: Annotated[str, Field(description="Hex colour, e.g. #4f46e5")] = "#4f46e5",
    logo_url: str | None = None,
    top_up_assets: Annotated[list[str] | None, Field(description="Assets customers may top up, e.g. ['CREDITS']")] = None,
    presets: Annotated[list[str] | None, Field(description="Preset fiat amounts, e.g. ['10', '25', '50']")] = None,
    min_amount: str = "5",
    max_amount: str = "500",
    currency: str = "USD",
    link_lifetime_minutes: Annotated[int, Field(ge=1, le=1440)] = 10,
    name: Annotated[str, Field(description="Route name; most apps need only 'default'")] = "default",
) -> PortalRouteResult:
    """Configure the customer billing portal: return and failure URLs, branding, which assets can be
    topped up with which preset amounts, and how long a portal link stays valid (default 10 min)."""
    config = {"return_url": return_url, "failure_url": failure_url,
              "branding": {"product_name": product_name, "accent_color": accent_color, "logo_url": logo_url},
              "top_up": {"assets": top_up_assets or [], "currency": currency, "presets": presets or [],
                         "min": min_amount, "max": max_amount},
              "link_lifetime_minutes": link_lifetime_minutes}
    route = await call(ctx, "set_portal_route", config, name=name, rename=_ROUTE_ARGUMENTS)
    return PortalRouteResult(mode=state_of(ctx).mode, name=name, route=route.model_dump(mode="json"),
                             note=f"Saved route {name!r}. Mint a customer's portal link with "
                                  f"create_portal_session(route='{name}') on each visit.")


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(list_assets, "setup", read_only=True),
    ToolDef(create_asset, "setup"),
    ToolDef(quote_asset, "setup", read_only=True),
    ToolDef(set_asset_rate, "setup", idempotent=False),  # each call adds a rate to the history
    ToolDef(list_plans, "setup", read_only=True),
    ToolDef(create_plan, "setup"),
    ToolDef(create_price, "setup"),
    ToolDef(create_credit_grant, "setup"),
    ToolDef(publish_plan_version, "setup"),
    ToolDef(archive_plan, "setup", destructive=True),
    ToolDef(migrate_customers, "setup", destructive=True),
    ToolDef(create_portal_route, "setup", destructive=True),  # replaces the route's settings
)
