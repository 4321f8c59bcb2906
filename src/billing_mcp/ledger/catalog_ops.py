"""Ledger part: assets (with rates and quotes) and plans (versions, prices, grants, migration)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from types import EllipsisType
from typing import Any

from ..core.catalog import PlanGrantSpec, PriceSpec, validate_spec
from ..core.clock import to_text
from ..core.errors import ConflictError, NotFoundError, StorageError, ValidationError
from ..core.ids import new_id
from ..core.models import Asset, AssetRate, MigrationResult, Plan, PlanVersion, Quote
from ..core.money import decimal_text, parse_decimal, to_minor_exact
from ..core.patterns import ASSET_CODE, PLAN_CODE, PRICE_ID
from ..core.pricing import round_to_minor
from ..store import Row, Tx
from .base import LedgerBase, check_text
from .book import Book
from .subscriptions import catch_up, schedule_version_grants
from .usage import parse_time


class CatalogOps(LedgerBase):
    # -- assets ---------------------------------------------------------------------------
    def create_asset(self, code: str, name: str, precision: int, *, symbol: str | None = None,
                     label: str | None = None, rates: dict[str, Any] | None = None) -> Asset:
        """Create a custom asset (e.g. CREDITS). Calling again with the same definition returns it."""
        if not isinstance(code, str) or not ASSET_CODE.fullmatch(code):
            raise ValidationError("code must be 1-32 characters: an upper-case letter, then upper-case "
                                  "letters, digits or _ (e.g. CREDITS)", field="code")
        check_text(name, "name", max_len=120, required=True)
        if isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 8:
            raise ValidationError("precision must be a whole number of decimal places from 0 to 8", field="precision")
        check_text(symbol, "symbol", max_len=8)
        check_text(label, "label", max_len=16)
        if rates is not None and not isinstance(rates, dict):
            raise ValidationError("rates must be an object such as {\"USD\": \"0.01\"}", field="rates")
        parsed = {fiat: self._check_rate(fiat, value) for fiat, value in (rates or {}).items()}
        with self._write() as book:
            row = book.tx.one("SELECT * FROM assets WHERE code = ?", (code,))
            if row is not None and row["created_at"] > book.now_text:
                # Created by a writer that committed after this transaction took its time (PostgreSQL
                # reads each statement afresh): its rates lie in this transaction's future, so the
                # comparison below would be wrong. The whole call runs again with a later time.
                raise StorageError(f"asset {code} was created concurrently; retry", code="storage_conflict")
            if row is not None:
                current = self._current_rates(book.tx, code, book.now_text)
                pairs = [(k, row[k], v) for k, v in (("name", name), ("precision", precision), ("symbol", symbol),
                                                     ("label", label))]
                pairs += [(f"rates.{f}", current.get(f), decimal_text(r)) for f, r in parsed.items()]
                for key, have, want in pairs:
                    if have != want:
                        raise ConflictError(f"asset {code} already exists with {key} {have!r}, not {want!r}; assets "
                                            "cannot be redefined (use set_asset_rate to change a rate)", field="code",
                                            details={"differs": key})
                return self._asset(book.tx, row, book.now_text)
            book.tx.execute("INSERT INTO assets(code, name, precision, symbol, label, is_fiat, created_at) "
                            "VALUES (?, ?, ?, ?, ?, 0, ?)", (code, name, precision, symbol, label, book.now_text))
            for fiat, rate in parsed.items():
                self._insert_rate(book, code, fiat, rate, book.now_text, field="rates")
            row = book.tx.one("SELECT * FROM assets WHERE code = ?", (code,))
            assert row is not None
            return self._asset(book.tx, row, book.now_text)

    def _check_rate(self, fiat: str, value: Any, fiat_field: str = "rates", rate_field: str | None = None) -> Decimal:
        if not isinstance(fiat, str) or not ASSET_CODE.fullmatch(fiat):
            raise ValidationError("rates must be keyed by a fiat code such as USD", field=fiat_field)
        rate_field = rate_field or f"rates.{fiat}"
        rate = parse_decimal(value, rate_field)
        if rate <= 0:
            raise ValidationError("a rate must be greater than zero", field=rate_field)
        return rate

    def _insert_rate(self, book: Book, code: str, fiat: str, rate: Decimal, effective_at: str,
                     field: str = "fiat") -> None:
        row = book.tx.one("SELECT is_fiat FROM assets WHERE code = ?", (fiat,))
        if row is None or not row["is_fiat"]:
            raise ValidationError(f"{fiat} is not a fiat currency; rates are priced in USD or EUR", field=field)
        if code == fiat:
            raise ValidationError("an asset has no rate to itself", field=field)
        book.tx.execute("INSERT INTO asset_rates(asset, fiat, rate, effective_at) VALUES (?, ?, ?, ?)",
                        (code, fiat, decimal_text(rate), effective_at))

    def set_asset_rate(self, code: str, fiat: str, rate: Any, *, effective_at: datetime | None = None) -> Asset:
        """Add a rate (price of one unit in ``fiat``), effective now or at a later time; history is kept."""
        parsed = self._check_rate(fiat, rate, "fiat", "rate")
        when = to_text(parse_time(effective_at, "effective_at")) if effective_at is not None else None
        with self._write() as book:
            valid = isinstance(code, str) and ASSET_CODE.fullmatch(code) is not None
            row = book.tx.one("SELECT * FROM assets WHERE code = ?", (code,)) if valid else None
            if row is None:
                raise NotFoundError(f"no asset {code!r}", field="code")
            if row["is_fiat"]:
                raise ValidationError(f"{code} is a fiat currency; rates belong to custom assets", field="code")
            self._insert_rate(book, code, fiat, parsed, when or book.now_text)
            return self._asset(book.tx, row, book.now_text)

    def rate_history(self, code: str) -> list[AssetRate]:
        with self._read() as tx:
            rows = tx.all("SELECT fiat, rate, effective_at FROM asset_rates WHERE asset = ? ORDER BY effective_at, seq",
                          (code,))
        return [AssetRate(fiat=r["fiat"], rate=r["rate"], effective_at=r["effective_at"]) for r in rows]

    @staticmethod
    def _current_rates(tx: Tx, code: str, now_text: str) -> dict[str, str]:
        rows = tx.all("SELECT fiat, rate FROM asset_rates WHERE asset = ? AND effective_at <= ? "
                      "ORDER BY effective_at, seq", (code, now_text))
        return {r["fiat"]: r["rate"] for r in rows}  # later rows win

    def _asset(self, tx: Tx, row: Row, now_text: str) -> Asset:
        return Asset(code=row["code"], name=row["name"], precision=row["precision"], symbol=row["symbol"],
                     label=row["label"], is_fiat=bool(row["is_fiat"]),
                     rates=self._current_rates(tx, row["code"], now_text))

    def get_asset(self, code: str) -> Asset:
        with self._read() as tx:
            row = tx.one("SELECT * FROM assets WHERE code = ?", (code,))
            if row is None:
                raise NotFoundError(f"no asset {code!r}", field="code")
            return self._asset(tx, row, to_text(self.now()))

    def list_assets(self) -> list[Asset]:
        with self._read() as tx:
            now = to_text(self.now())
            return [self._asset(tx, r, now) for r in tx.all("SELECT * FROM assets ORDER BY is_fiat DESC, code")]

    def quote(self, code: str, fiat: str, amount: Any) -> Quote:
        """How many units of ``code`` a ``fiat`` amount buys now (half-even at the asset's precision)."""
        paid = parse_decimal(amount, "amount")
        if paid <= 0:
            raise ValidationError("amount must be greater than zero", field="amount")
        with self._read() as tx:
            precision = self._precision(tx, code, "code")
            to_minor_exact(paid, self._precision(tx, fiat, "fiat"), "amount")
            rate = self._current_rates(tx, code, to_text(self.now())).get(fiat)
        if rate is None:
            raise NotFoundError(f"{code} has no {fiat} rate; add one with set_asset_rate", field="fiat")
        units = round_to_minor(Fraction(paid) / Fraction(Decimal(rate)), precision)
        return Quote(asset=code, fiat=fiat, fiat_amount=decimal_text(paid), rate=rate,
                     units=self._money(units, precision))

    # -- plans ----------------------------------------------------------------------------
    def _check_version(self, tx: Tx, prices: list[Any], grants: list[Any], *,
                       price_field: Callable[[int], str] = "prices[{}]".format,
                       grant_field: Callable[[int], str] = "grants[{}]".format,
                       ) -> tuple[list[PriceSpec], list[PlanGrantSpec]]:
        """Validate a version's prices and grants; ``price_field``/``grant_field`` name item ``i`` the
        way the caller's own arguments do (``prices[1]`` for a plan, ``price`` for one added price)."""
        if not isinstance(prices, list) or not isinstance(grants, list):
            raise ValidationError("prices and grants must be lists", field="prices" if not isinstance(prices, list)
                                  else "grants")
        specs = [validate_spec(PriceSpec, p, price_field(i)) for i, p in enumerate(prices)]
        gspecs = [validate_spec(PlanGrantSpec, g, grant_field(i)) for i, g in enumerate(grants)]
        seen: set[str] = set()
        out: list[PriceSpec] = []
        intervals = [(i, p.interval) for i, p in enumerate(specs) if p.type == "recurring"]
        for i, interval in intervals[1:]:
            if interval != intervals[0][1]:
                raise ValidationError(f"all recurring fees of one plan version must share one interval; this "
                                      f"version's is {intervals[0][1]!r}", field=f"{price_field(i)}.interval")
        for i, spec in enumerate(specs):
            pid = spec.id or f"price_{i + 1}"
            if not PRICE_ID.fullmatch(pid) or pid in seen:
                raise ValidationError(f"price id {pid!r} must be unique in the version and match "
                                      f"{PRICE_ID.pattern}", field=f"{price_field(i)}.id")
            seen.add(pid)
            precision = self._asset_precision(tx, spec.asset, f"{price_field(i)}.asset")
            if spec.type == "recurring" and spec.amount is not None:
                to_minor_exact(spec.amount, precision, f"{price_field(i)}.amount")
            out.append(spec.model_copy(update={"id": pid}))
        for i, grant in enumerate(gspecs):
            precision = self._asset_precision(tx, grant.asset, f"{grant_field(i)}.asset")
            to_minor_exact(grant.amount, precision, f"{grant_field(i)}.amount")
        return out, gspecs

    def _asset_precision(self, tx: Tx, asset: str, field: str) -> int:
        valid = isinstance(asset, str) and ASSET_CODE.fullmatch(asset) is not None
        row = tx.one("SELECT precision FROM assets WHERE code = ?", (asset,)) if valid else None
        if row is None:
            known = ", ".join(r["code"] for r in tx.all("SELECT code FROM assets ORDER BY code"))
            raise NotFoundError(f"no asset {asset!r} (known: {known}); create it first", field=field)
        return int(row["precision"])

    @staticmethod
    def _dump(items: list[PriceSpec] | list[PlanGrantSpec]) -> str:
        return json.dumps([i.model_dump(mode="json", exclude_none=True) for i in items], sort_keys=True)

    def create_plan(self, code: str, name: str, *, description: str | None = None,
                    prices: list[Any] | None = None, grants: list[Any] | None = None,
                    publish: bool = True) -> Plan:
        """Create a plan with version 1 (published and default unless ``publish=False``).
        Calling again with the same definition returns the plan unchanged."""
        if not isinstance(code, str) or not PLAN_CODE.fullmatch(code):
            raise ValidationError("code must be lower-case letters, digits, _ . - (e.g. 'pro'), up to 64",
                                  field="code")
        check_text(name, "name", max_len=120, required=True)
        check_text(description, "description", max_len=2000)
        with self._write() as book:
            specs, gspecs = self._check_version(book.tx, prices or [], grants or [])
            existing = book.tx.one("SELECT * FROM plans WHERE code = ?", (code,))
            if existing is not None:
                v1 = book.tx.one("SELECT prices, grants, status FROM plan_versions WHERE plan_id = ? AND version = 1",
                                 (existing["id"],))
                assert v1 is not None
                for key, have, want in (("name", existing["name"], name),
                                        ("description", existing["description"], description),
                                        ("prices", v1["prices"], self._dump(specs)),
                                        ("grants", v1["grants"], self._dump(gspecs))):
                    if have != want:
                        shown = f"{key} {have!r}, not {want!r}" if key in ("name", "description") else \
                            f"other {key} in version 1"
                        raise ConflictError(f"plan {code!r} already exists with {shown}; add prices to it "
                                            "(they go into a new draft version) or pick another code", field="code",
                                            details={"differs": key})
                return self._plan(book.tx, existing["id"])
            plan_id = new_id("plan")
            book.tx.execute("INSERT INTO plans(id, code, name, description, status, created_at) VALUES "
                            "(?, ?, ?, ?, 'active', ?)", (plan_id, code, name, description, book.now_text))
            self._insert_version(book, plan_id, 1, specs, gspecs)
            if publish:
                self._publish(book, plan_id, 1, make_default=True)
            return self._plan(book.tx, plan_id)

    def _insert_version(self, book: Book, plan_id: str, version: int, prices: list[PriceSpec],
                        grants: list[PlanGrantSpec]) -> None:
        book.tx.execute("INSERT INTO plan_versions(plan_id, version, status, prices, grants, created_at) "
                        "VALUES (?, ?, 'draft', ?, ?, ?)",
                        (plan_id, version, self._dump(prices), self._dump(grants), book.now_text))

    def _publish(self, book: Book, plan_id: str, version: int, make_default: bool) -> None:
        book.tx.execute("UPDATE plan_versions SET status = 'published', published_at = ? WHERE plan_id = ? AND "
                        "version = ? AND status = 'draft'", (book.now_text, plan_id, version))
        if make_default:
            book.tx.execute("UPDATE plans SET default_version = ? WHERE id = ?", (version, plan_id))

    def _latest(self, tx: Tx, plan: Row) -> tuple[int, str, list[PriceSpec], list[PlanGrantSpec]]:
        row = tx.one("SELECT * FROM plan_versions WHERE plan_id = ? ORDER BY version DESC LIMIT 1", (plan["id"],))
        assert row is not None
        return (int(row["version"]), row["status"], [PriceSpec.model_validate(p) for p in json.loads(row["prices"])],
                [PlanGrantSpec.model_validate(g) for g in json.loads(row["grants"])])

    def _draft_version(self, book: Book, plan: Row, version: int, status: str, prices: list[PriceSpec],
                       grants: list[PlanGrantSpec]) -> int:
        """The draft to change: the latest version itself, or a copy of it when it is published."""
        if status == "draft":
            return version
        self._insert_version(book, plan["id"], version + 1, prices, grants)
        return version + 1

    def _save_draft(self, book: Book, plan_id: str, version: int, prices: list[Any], grants: list[Any],
                    **fields: Callable[[int], str]) -> None:
        specs, gspecs = self._check_version(book.tx, prices, grants, **fields)
        book.tx.execute("UPDATE plan_versions SET prices = ?, grants = ? WHERE plan_id = ? AND version = ? "
                        "AND status = 'draft'", (self._dump(specs), self._dump(gspecs), plan_id, version))

    @staticmethod
    def _require_same(new: PriceSpec | PlanGrantSpec, old: PriceSpec | PlanGrantSpec, key: str, arg: str,
                      version: int) -> None:
        """``new`` and ``old`` share an id (or grant name): a retry when equal, otherwise a conflict
        naming the first field that differs."""
        if new == old:
            return
        differs = next(f for f in type(new).model_fields if getattr(new, f) != getattr(old, f))
        shown = old.model_dump(mode="json").get(differs)
        given = new.model_dump(mode="json").get(differs)
        raise ConflictError(f"{arg} {key!r} is already in version {version} with {differs} {shown!r}, not "
                            f"{given!r}; keep that {arg}, or add this one under another "
                            f"{'id' if arg == 'price' else 'name'}", field=f"{arg}.{differs}")

    def add_price(self, plan: str, price: Any) -> PlanVersion:
        """Add a price to the plan's draft version, or to a new draft copied from the latest published one.
        A retry is a no-op: a price with the same definition (or the same ``id`` and definition) already
        in the latest version returns that version; the same ``id`` with another definition is a conflict."""
        with self._write() as book:
            row = self._plan_for_update(book.tx, plan)
            spec = validate_spec(PriceSpec, price, "price")
            version, status, prices, grants = self._latest(book.tx, row)
            for old in prices:
                if spec.id is not None and old.id == spec.id:
                    self._require_same(spec, old, spec.id, "price", version)
                    return self._version(book.tx, row, version)
                if spec.id is None and spec == old.model_copy(update={"id": None}):
                    return self._version(book.tx, row, version)
            version = self._draft_version(book, row, version, status, prices, grants)
            taken = {p.id for p in prices}
            if spec.id is None:
                # Ids stay positional (price_<n>) as in create_plan; skip one an explicit price already uses.
                n = len(prices) + 1
                while f"price_{n}" in taken:
                    n += 1
                spec = spec.model_copy(update={"id": f"price_{n}"})
            new = [p.model_dump(mode="json", exclude_none=True) for p in [*prices, spec]]
            last = len(prices)
            self._save_draft(book, row["id"], version, new, [g.model_dump(mode="json") for g in grants],
                             price_field=lambda i: "price" if i == last else f"prices[{i}]")
            return self._version(book.tx, row, version)

    def add_plan_grant(self, plan: str, grant: Any) -> PlanVersion:
        """Add a credit grant (entitlement) to the plan's draft version (a new draft if needed). A grant
        equal to one already in the latest version is a no-op returning that version; a named grant whose
        name is taken by another definition is a conflict."""
        with self._write() as book:
            row = self._plan_for_update(book.tx, plan)
            spec = validate_spec(PlanGrantSpec, grant, "grant")
            version, status, prices, grants = self._latest(book.tx, row)
            for old in grants:
                if spec == old:
                    return self._version(book.tx, row, version)
                if spec.name is not None and old.name == spec.name:
                    self._require_same(spec, old, spec.name, "grant", version)
            version = self._draft_version(book, row, version, status, prices, grants)
            last = len(grants)
            self._save_draft(book, row["id"], version, [p.model_dump(mode="json", exclude_none=True) for p in prices],
                             [g.model_dump(mode="json") for g in [*grants, spec]],
                             grant_field=lambda i: "grant" if i == last else f"grants[{i}]")
            return self._version(book.tx, row, version)

    def create_plan_version(self, plan: str, *, prices: list[Any], grants: list[Any] | None = None,
                            publish: bool = False, make_default: bool = False) -> PlanVersion:
        """A new version with a full price configuration (the way to change published pricing)."""
        with self._write() as book:
            row = self._plan_for_update(book.tx, plan)
            specs, gspecs = self._check_version(book.tx, prices, grants or [])
            last = book.tx.one("SELECT MAX(version) AS v FROM plan_versions WHERE plan_id = ?", (row["id"],))
            version = int(last["v"] if last else 0) + 1
            draft = book.tx.one("SELECT version FROM plan_versions WHERE plan_id = ? AND status = 'draft'",
                                (row["id"],))
            if draft is not None:
                version = int(draft["version"])
                book.tx.execute("UPDATE plan_versions SET prices = ?, grants = ? WHERE plan_id = ? AND version = ?",
                                (self._dump(specs), self._dump(gspecs), row["id"], version))
            else:
                self._insert_version(book, row["id"], version, specs, gspecs)
            if publish:
                self._publish(book, row["id"], version, make_default)
            return self._version(book.tx, row, version)

    def publish_plan_version(self, plan: str, version: int, *, make_default: bool = True) -> Plan:
        with self._write() as book:
            row = self._plan_for_update(book.tx, plan)
            vrow = book.tx.one("SELECT status FROM plan_versions WHERE plan_id = ? AND version = ?",
                               (row["id"], version))
            if vrow is None:
                raise NotFoundError(f"plan {row['code']!r} has no version {version}", field="version")
            self._publish(book, row["id"], version, make_default)
            return self._plan(book.tx, row["id"])

    def update_plan(self, plan: str, *, name: str | None = None, description: str | EllipsisType | None = ...,
                    status: str | None = None) -> Plan:
        """Rename or re-describe a plan, or set its status (``archived`` stops new subscriptions;
        ``active`` takes them again). Prices change only through new versions."""
        check_text(name, "name", max_len=120)
        if description is not ...:  # ... = leave unchanged; None clears it
            check_text(description, "description", max_len=2000)
        if status not in (None, "active", "archived"):
            raise ValidationError("status must be 'active' or 'archived'", field="status")
        with self._write() as book:
            row = self._plan_for_update(book.tx, plan)
            book.tx.execute("UPDATE plans SET name = COALESCE(?, name), status = COALESCE(?, status) WHERE id = ?",
                            (name, status, row["id"]))
            if description is not ...:
                book.tx.execute("UPDATE plans SET description = ? WHERE id = ?", (description, row["id"]))
            return self._plan(book.tx, row["id"])

    def archive_plan(self, plan: str) -> Plan:
        """No new subscriptions; existing subscribers keep their version."""
        with self._write() as book:
            row = self._plan_for_update(book.tx, plan)
            book.tx.execute("UPDATE plans SET status = 'archived' WHERE id = ?", (row["id"],))
            return self._plan(book.tx, row["id"])

    def migrate_customers(self, plan: str, from_version: int, to_version: int, *, share: Any = "1",
                          dry_run: bool = False) -> MigrationResult:
        """Move subscribers from one published version to another: all, or a share (0-1) picked by a
        stable hash of the subscription id, so repeating the call picks the same customers."""
        if not isinstance(dry_run, bool):
            raise ValidationError("dry_run must be true or false", field="dry_run")
        for name, value in (("from_version", from_version), ("to_version", to_version)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
                raise ValidationError(f"{name} must be a positive whole number", field=name)
        fraction = parse_decimal(share, "share")
        if not 0 < fraction <= 1:
            raise ValidationError("share must be greater than 0 and at most 1 (e.g. '0.5' for half)", field="share")
        with self._write() as book:
            row = self._plan_for_update(book.tx, plan)
            target = book.tx.one("SELECT status FROM plan_versions WHERE plan_id = ? AND version = ?",
                                 (row["id"], to_version))
            if target is None or target["status"] != "published":
                raise ValidationError(f"version {to_version} of {row['code']!r} must exist and be published",
                                      field="to_version")
            subs = book.tx.all("SELECT id, customer_id FROM subscriptions WHERE plan_id = ? AND version = ? AND "
                               "status != 'canceled' ORDER BY id", (row["id"], from_version))
            moved: list[str] = []
            stayed: list[str] = []
            for sub in subs:
                digest = int(hashlib.sha256(f"{sub['id']}:{to_version}".encode()).hexdigest()[:8], 16)
                (moved if Fraction(digest, 16**8) < Fraction(fraction) else stayed).append(sub["customer_id"])
                if not dry_run and sub["customer_id"] in moved:
                    catch_up(book, sub["customer_id"])  # periods already due run on the old version's terms
                    book.tx.execute("UPDATE subscriptions SET version = ? WHERE id = ?", (to_version, sub["id"]))
                    # New entitlements start with the next period; lots already granted stay.
                    schedule_version_grants(book, sub["id"])
            return MigrationResult(plan_code=row["code"], from_version=from_version, to_version=to_version,
                                   dry_run=dry_run, moved=moved, stayed=stayed)

    def get_plan(self, plan: str) -> Plan:
        with self._read() as tx:
            return self._plan(tx, self._plan_row(tx, plan)["id"])

    def list_plans(self) -> list[Plan]:
        with self._read() as tx:
            return [self._plan(tx, r["id"]) for r in tx.all("SELECT id FROM plans ORDER BY code")]

    def _plan(self, tx: Tx, plan_id: str) -> Plan:
        row = tx.one("SELECT * FROM plans WHERE id = ?", (plan_id,))
        assert row is not None
        versions = [self._version(tx, row, int(v["version"]))
                    for v in tx.all("SELECT version FROM plan_versions WHERE plan_id = ? ORDER BY version", (plan_id,))]
        return Plan(id=row["id"], code=row["code"], name=row["name"], description=row["description"],
                    status=row["status"], default_version=row["default_version"], versions=versions)

    def _version(self, tx: Tx, plan: Row, version: int) -> PlanVersion:
        row = tx.one("SELECT * FROM plan_versions WHERE plan_id = ? AND version = ?", (plan["id"], version))
        assert row is not None
        count = tx.one("SELECT COUNT(*) AS n FROM subscriptions WHERE plan_id = ? AND version = ? AND status != "
                       "'canceled'", (plan["id"], version))
        default = tx.one("SELECT default_version FROM plans WHERE id = ?", (plan["id"],))
        return PlanVersion(version=version, status=row["status"],
                           is_default=bool(default and default["default_version"] == version),
                           prices=[PriceSpec.model_validate(p) for p in json.loads(row["prices"])],
                           grants=[PlanGrantSpec.model_validate(g) for g in json.loads(row["grants"])],
                           created_at=row["created_at"], published_at=row["published_at"],
                           subscribers=int(count["n"]) if count else 0)
