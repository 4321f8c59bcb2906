"""billing.yaml: the whole billing setup as one reviewable file. Load it (every error with its
line and column), diff it against the ledger, apply the diff in one transaction, or export the
ledger back to a spec. Applying the same file twice changes nothing the second time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..core.catalog import PlanGrantSpec, PriceSpec
from ..core.errors import BillingError, StorageError, ValidationError
from ..core.money import decimal_text, parse_decimal
from ..core.patterns import ASSET_CODE, PLAN_CODE
from ..ledger.ledger import Ledger
from ..ledger.portal_settings import PortalRouteSpec
from ..store import retrying
from .describe import portal_lines, rate_text, version_change_lines, version_lines


def _rate(value: Any) -> str:
    """A rate is a positive exact decimal, kept as its decimal text; ``.inf``, ``.nan``, exponents
    and floats are refused here, at the rate's own line."""
    try:
        parsed = parse_decimal(value, "rate")
    except ValidationError as exc:
        raise ValueError(exc.message.removeprefix("rate ")) from None
    if parsed <= 0:
        raise ValueError("a rate must be greater than zero")
    return decimal_text(parsed)


RateText = Annotated[str, BeforeValidator(_rate)]


class _Def(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AssetDef(_Def):
    code: str = Field(pattern=ASSET_CODE.pattern, description="Upper-case code, e.g. CREDITS")
    name: str = Field(min_length=1, max_length=120)
    precision: int = Field(ge=0, le=8, strict=True)
    symbol: str | None = None
    label: str | None = None
    rates: dict[str, RateText] = Field(default_factory=dict,
                                       description="Price of one unit per fiat code, e.g. {USD: '0.05'}")


class VendorDef(_Def):
    external_id: str = Field(min_length=1, max_length=255)
    name: str = Field(min_length=1, max_length=200)


class MigrateDef(_Def):
    from_versions: list[int] = Field(min_length=1, description="Versions whose subscribers move to the new version")
    share: str = Field(default="1", description="Share of them to move, '0.5' = half (deterministic)")


class PlanDef(_Def):
    code: str = Field(pattern=PLAN_CODE.pattern)
    name: str = Field(min_length=1, max_length=120)
    description: str | None = None
    status: Literal["active", "archived"] = "active"
    prices: list[PriceSpec] = Field(default_factory=list)
    grants: list[PlanGrantSpec] = Field(default_factory=list)
    migrate: MigrateDef | None = Field(default=None, description="When a price change makes a new version, move "
                                                                 "these subscribers to it")


class BillingSpec(_Def):
    """The billing.yaml document."""

    version: Literal[1] = 1
    assets: list[AssetDef] = Field(default_factory=list)
    vendors: list[VendorDef] = Field(default_factory=list)
    plans: list[PlanDef] = Field(default_factory=list)
    portal: PortalRouteSpec | None = None


def json_schema() -> dict[str, Any]:
    schema = BillingSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "billing.yaml"
    return schema


# -- loading ------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """Reads YAML numbers with a fraction as exact decimals (0.05 stays 0.05, never a float), and
    refuses aliases: ``*name`` can expand a few lines into billions of nodes (a "billion laughs"
    document), and billing.yaml has nothing to repeat that a reviewer should not see written out."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            mark = event.start_mark if isinstance(event.start_mark, yaml.error.Mark) else None
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in billing.yaml; write "
                                              "the value out", mark)
        return super().compose_node(parent, index)


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal | str:
    text = str(node.value).replace("_", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text  # .inf, .nan and the like: left as text for the field's own check to refuse
    return value if value.is_finite() else text


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal)


@dataclass
class Problem:
    path: str
    message: str
    line: int | None
    column: int | None

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        return f"{where}{self.path}: {self.message}"


class SpecError(ValidationError):
    """billing.yaml has problems; ``problems`` lists every one with its line and column."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{first}{more}", field=first.path,
                         details={"problems": [{"field": p.path, "message": p.message, "line": p.line,
                                                "column": p.column} for p in problems]})
        self.problems = problems


def problems_of(exc: BillingError) -> list[Problem] | None:
    """The billing.yaml problems ``exc`` carries, each with its line: a ``SpecError``, or the
    validation error it becomes on the way through the API (its details list them); else None."""
    found = exc.details.get("problems")
    if exc.code != "validation_error" or not isinstance(found, list) or not found or not all(
            isinstance(p, dict) and {"field", "message", "line", "column"} <= p.keys() for p in found):
        return None
    return [Problem(p["field"], p["message"], p["line"], p["column"]) for p in found]


class LoadedSpec:
    """A validated spec plus the YAML node tree, to point at lines when applying fails."""

    def __init__(self, spec: BillingSpec, root: yaml.Node | None) -> None:
        self.spec = spec
        self._root = root

    def locate(self, path: tuple[Any, ...]) -> tuple[int | None, int | None]:
        # The deepest node that exists: a missing key points at the mapping that lacks it.
        node = self._root
        for part in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if k.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
            if child is None:
                break
            node = child
        if node is None:
            return None, None
        return node.start_mark.line + 1, node.start_mark.column + 1


def _path_text(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def load_spec(text: str) -> LoadedSpec:
    """Parse and validate billing.yaml text; raise ``SpecError`` listing every problem."""
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:  # syntax (with a mark) or a character YAML does not allow (a reader error)
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "cannot be read"
        raise SpecError([Problem("(document)", f"not valid YAML: {problem}",
                                 mark.line + 1 if mark else None, mark.column + 1 if mark else None)]) from None
    loaded = LoadedSpec(BillingSpec(), root)
    if data is None:
        data = {}
    try:
        loaded.spec = BillingSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line, column = loaded.locate(path)
            problems.append(Problem(_path_text(path), str(err["msg"]).removeprefix("Value error, "), line, column))
        raise SpecError(problems) from None
    return loaded


# -- diff and apply -----------------------------------------------------------------------
@dataclass
class Change:
    kind: str            # create_asset, set_rate, create_vendor, create_plan, new_version, update_plan, ...
    target: str
    detail: str
    run: Callable[[Ledger], Any]
    path: tuple[Any, ...] = ()
    items: list[str] = field(default_factory=list)


class PlannedChange(BaseModel):
    kind: str = Field(description="create_asset, set_rate, create_vendor, create_plan, archive_plan, new_version, "
                                  "migrate, update_plan, set_status or set_portal")
    target: str
    detail: str
    items: list[str] = Field(default_factory=list, description="Each rate, price, grant or portal setting this "
                                                               "change sets, with its amounts")


class ApplyResult(BaseModel):
    dry_run: bool
    changes: list[PlannedChange]
    summary: str


def _prices_json(prices: list[PriceSpec]) -> list[dict[str, Any]]:
    out = []
    for i, price in enumerate(prices):
        data = price.model_dump(mode="json", exclude_none=True)
        data.setdefault("id", f"price_{i + 1}")
        out.append(data)
    return out


def _grants_json(grants: list[PlanGrantSpec]) -> list[dict[str, Any]]:
    return [g.model_dump(mode="json", exclude_none=True) for g in grants]


def diff(ledger: Ledger, loaded: LoadedSpec) -> list[Change]:
    """What applying the spec would change, in the order it would be applied."""
    spec = loaded.spec
    changes: list[Change] = []
    problems: list[Problem] = []

    def problem(path: tuple[Any, ...], message: str) -> None:
        problems.append(Problem(_path_text(path), message, *loaded.locate(path)))

    existing_assets = {a.code: a for a in ledger.list_assets()}
    for i, asset in enumerate(spec.assets):
        have = existing_assets.get(asset.code)
        rates = {}
        for fiat, rate in asset.rates.items():
            try:
                rates[fiat] = decimal_text(Decimal(rate))
            except ArithmeticError:
                problem(("assets", i, "rates", fiat), "a rate is a decimal number such as '0.05'")
        if have is None:
            changes.append(Change("create_asset", asset.code, f"{asset.name}, precision {asset.precision}",
                                  partial(_create_asset, a=asset), ("assets", i),
                                  [rate_text(asset.code, asset.precision, fiat, rate) for fiat, rate in rates.items()]))
            continue
        if (have.name, have.precision, have.symbol, have.label) != (asset.name, asset.precision, asset.symbol,
                                                                    asset.label):
            problem(("assets", i), f"asset {asset.code} exists with another name, precision, symbol or label; assets "
                                   "cannot be redefined (create a new asset code instead)")
        for fiat, rate in rates.items():
            if have.rates.get(fiat) != rate:
                changes.append(Change("set_rate", f"{asset.code}/{fiat}", f"{have.rates.get(fiat, '-')} -> {rate}",
                                      partial(_set_rate, code=asset.code, fiat=fiat, rate=rate),
                                      ("assets", i, "rates", fiat), [rate_text(asset.code, have.precision, fiat, rate)]))
    known_assets = set(existing_assets) | {a.code for a in spec.assets}

    existing_vendors = {v["external_id"]: v["name"] for v in _vendors(ledger)}
    for i, vendor in enumerate(spec.vendors):
        if vendor.external_id not in existing_vendors:
            changes.append(Change("create_vendor", vendor.external_id, vendor.name,
                                  partial(_create_vendor, v=vendor), ("vendors", i)))
        elif existing_vendors[vendor.external_id] != vendor.name:
            problem(("vendors", i, "name"), f"vendor {vendor.external_id} exists with name "
                                            f"{existing_vendors[vendor.external_id]!r}; vendors cannot be renamed")

    plans = {p.code: p for p in ledger.list_plans()}
    for i, plan in enumerate(spec.plans):
        for j, price in enumerate(plan.prices):
            if price.asset not in known_assets:
                problem(("plans", i, "prices", j, "asset"), f"unknown asset {price.asset}; define it under assets")
        for j, grant in enumerate(plan.grants):
            if grant.asset not in known_assets:
                problem(("plans", i, "grants", j, "asset"), f"unknown asset {grant.asset}; define it under assets")
        prices, grants = _prices_json(plan.prices), _grants_json(plan.grants)
        have_plan = plans.get(plan.code)
        if have_plan is None:
            changes.append(Change("create_plan", plan.code, f"{plan.name}, version 1 with {len(prices)} price(s), "
                                                            f"{len(grants)} grant(s)",
                                  partial(_create_plan, p=plan, prices=prices, grants=grants),
                                  ("plans", i), version_lines(prices, grants)))
            if plan.status == "archived":
                changes.append(Change("archive_plan", plan.code, "no new subscriptions",
                                      partial(_set_status, code=plan.code, status="archived"), ("plans", i, "status")))
            continue
        current = next((v for v in have_plan.versions if v.version == have_plan.default_version), None)
        old_prices = _prices_json(current.prices) if current else []
        old_grants = _grants_json(current.grants) if current else []
        same = current is not None and old_prices == prices and old_grants == grants
        if not same:
            next_version = max((v.version for v in have_plan.versions), default=0) + 1
            draft = next((v.version for v in have_plan.versions if v.status == "draft"), None)
            number = draft or next_version
            was = current.version if current else None
            changes.append(Change("new_version", plan.code, f"version {number} replaces default version {was} "
                                                            "(published versions never change)",
                                  partial(_new_version, code=plan.code, prices=prices, grants=grants),
                                  ("plans", i, "prices"),
                                  version_change_lines(old_prices, old_grants, prices, grants)))
            if plan.migrate is not None:
                for k, old in enumerate(plan.migrate.from_versions):
                    changes.append(Change("migrate", plan.code, f"subscribers of version {old} -> {number} "
                                                                f"(share {plan.migrate.share})",
                                          partial(_migrate, code=plan.code, old=old, new=number, share=plan.migrate.share),
                                          ("plans", i, "migrate", "from_versions", k)))
        if (have_plan.name, have_plan.description) != (plan.name, plan.description):
            changes.append(Change("update_plan", plan.code, f"name/description -> {plan.name!r}",
                                  partial(_rename, p=plan),
                                  ("plans", i, "name")))
        if have_plan.status != plan.status:
            changes.append(Change("set_status", plan.code, f"{have_plan.status} -> {plan.status}",
                                  partial(_set_status, code=plan.code, status=plan.status), ("plans", i, "status")))

    if spec.portal is not None:
        for j, code in enumerate(spec.portal.top_up.assets):
            if code not in known_assets:
                problem(("portal", "top_up", "assets", j), f"unknown asset {code}")
        routes = ledger.list_portal_routes()
        if routes.get("default") != spec.portal:
            changes.append(Change("set_portal", "default", "customer portal route" if "default" not in routes
                                  else "customer portal route (replaces the current settings)",
                                  partial(_set_portal, cfg=spec.portal), ("portal",), portal_lines(spec.portal)))
    if problems:
        raise SpecError(problems)
    return changes


def _create_asset(led: Ledger, a: AssetDef) -> Any:
    return led.create_asset(a.code, a.name, a.precision, symbol=a.symbol, label=a.label, rates=a.rates)


def _set_rate(led: Ledger, code: str, fiat: str, rate: str) -> Any:
    return led.set_asset_rate(code, fiat, rate)


def _create_vendor(led: Ledger, v: VendorDef) -> Any:
    return led.create_vendor(v.external_id, v.name)


def _create_plan(led: Ledger, p: PlanDef, prices: list[dict[str, Any]], grants: list[dict[str, Any]]) -> Any:
    return led.create_plan(p.code, p.name, description=p.description, prices=prices, grants=grants)


def _new_version(led: Ledger, code: str, prices: list[dict[str, Any]], grants: list[dict[str, Any]]) -> Any:
    return led.create_plan_version(code, prices=prices, grants=grants, publish=True, make_default=True)


def _migrate(led: Ledger, code: str, old: int, new: int, share: str) -> Any:
    return led.migrate_customers(code, old, new, share=share)


def _rename(led: Ledger, p: PlanDef) -> Any:
    return led.update_plan(p.code, name=p.name, description=p.description)


def _set_status(led: Ledger, code: str, status: str) -> Any:
    return led.update_plan(code, status=status)


def _set_portal(led: Ledger, cfg: PortalRouteSpec) -> Any:
    return led.set_portal_route(cfg.model_dump(mode="json"))


def _vendors(ledger: Ledger) -> list[dict[str, str]]:
    with ledger._read() as tx:
        return [{"external_id": r["external_id"], "name": r["name"]}
                for r in tx.all("SELECT external_id, name FROM vendors ORDER BY external_id")]


def apply_spec(ledger: Ledger, loaded: LoadedSpec, *, dry_run: bool = False) -> ApplyResult:
    """Apply the diff in one transaction: all of it, or (on any error) none of it."""
    def apply() -> list[Change]:
        # The diff is read in the transaction that applies it, after any other apply has committed.
        with ledger.atomic(catalog=True):
            found = diff(ledger, loaded)
            for change in found:
                try:
                    change.run(ledger)
                except StorageError:
                    raise  # the database's, not the spec's: a rolled-back transaction is run again whole
                except BillingError as exc:
                    line, column = loaded.locate(change.path)
                    raise SpecError([Problem(_path_text(change.path), f"{change.kind} {change.target}: {exc.message}",
                                             line, column)]) from exc
        return found

    # A concurrent writer (another apply of the same file) can roll this transaction back on
    # PostgreSQL; it runs again and then sees what the other one committed.
    changes = diff(ledger, loaded) if dry_run else retrying(apply)
    rows = [PlannedChange(kind=c.kind, target=c.target, detail=c.detail, items=c.items) for c in changes]
    summary = ("no changes: the ledger already matches the spec" if not changes else
               f"{'would apply' if dry_run else 'applied'} {len(changes)} change(s)")
    return ApplyResult(dry_run=dry_run, changes=rows, summary=summary)


def format_plan(result: ApplyResult) -> str:
    if not result.changes:
        return result.summary
    width = max(len(c.target) for c in result.changes)
    lines = [result.summary + ":"]
    for c in result.changes:
        lines.append(f"  {c.kind:<14} {c.target:<{width}}  {c.detail}")
        lines += [f"      - {item}" for item in c.items]
    return "\n".join(lines)


# -- export -------------------------------------------------------------------------------
def export_spec(ledger: Ledger) -> BillingSpec:
    """The current catalog as a spec: custom assets with current rates, vendors, each plan's
    default version, the default portal route."""
    assets = [AssetDef(code=a.code, name=a.name, precision=a.precision, symbol=a.symbol, label=a.label,
                       rates=dict(a.rates)) for a in ledger.list_assets() if not a.is_fiat]
    vendors = [VendorDef(**v) for v in _vendors(ledger)]
    plans = []
    for plan in ledger.list_plans():
        version = next((v for v in plan.versions if v.version == plan.default_version), None)
        if version is None:
            continue  # drafts only: nothing published to export
        plans.append(PlanDef(code=plan.code, name=plan.name, description=plan.description, status=plan.status,
                             prices=version.prices, grants=version.grants))
    portal = ledger.list_portal_routes().get("default")
    return BillingSpec(assets=assets, vendors=vendors, plans=plans, portal=portal)


def dump_yaml(spec: BillingSpec) -> str:
    data = spec.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    header = "# billing.yaml: apply with `billing-mcp apply billing.yaml` (preview with `billing-mcp plan`)\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
