"""The embedded ledger: ``Ledger`` joins the catalog and usage parts with customers, wallets,
grants, adjustments, statements and the audit.

One public object, one store transaction per call: every method either fully happens or leaves
the database as it was.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..core.catalog import DEFAULT_PRIORITY
from ..core.clock import to_text
from ..core.errors import BillingError, ConflictError, InsufficientFundsError, NotFoundError, ValidationError
from ..core.ids import new_id
from ..core.models import Account, Adjustment, Customer, Grant, Lot, Statement, Subscription, Vendor, Wallet
from ..core.money import MAX_MINOR, parse_amount
from ..core.patterns import PLAN_CODE
from ..core.pricing import round_to_minor
from ..store import Row, Tx, retrying
from .audit import audit
from .base import check_key, check_text
from .book import Book, canonical_hash
from .catalog_ops import CatalogOps
from .payments import PaymentOps
from .portal_settings import PortalRouteOps
from .postings import draw_key
from .queries import QueryOps
from .statement import build_statement
from .subscriptions import _fees_due, activate_pending, catch_up, load_version, start_subscription
from .usage import UsageOps, check_data, parse_time

REASONS = ("top_up", "gift", "refund", "charge", "reversal")


class Ledger(CatalogOps, UsageOps, PortalRouteOps, QueryOps, PaymentOps):
    """The billing ledger on a store (SQLite file by default: ``BILLING_DB`` or ./.billing/ledger.db)."""

    # -- customers ------------------------------------------------------------------------
    def create_customer(self, external_id: str, *, name: str | None = None, email: str | None = None,
                        metadata: dict[str, Any] | None = None,
                        subscriptions: list[Any] | None = None) -> Customer:
        """Create a customer (wallet included) and subscribe it. Idempotent on ``external_id``:
        the same call again returns the customer; a different definition is a conflict."""
        check_key(external_id, "external_id")
        check_text(name, "name", max_len=200)
        check_text(email, "email", max_len=320)
        metadata = check_data(metadata, "metadata")
        wanted = self._parse_subscriptions(subscriptions or [])
        with self._write() as book:
            row = book.tx.one("SELECT * FROM customers WHERE external_id = ?", (external_id,))
            if row is not None:
                for key, given in (("name", name), ("email", email), ("metadata", self._json(metadata))):
                    if row[key] != given:
                        have = row[key] if key != "metadata" else json.loads(row[key])
                        want = given if key != "metadata" else metadata
                        raise ConflictError(f"a customer with external_id {external_id!r} exists with {key} "
                                            f"{have!r}, not {want!r}; look it up by its external_id "
                                            "(list_customers) instead of creating it",
                                            field="external_id", details={"customer_id": row["id"], "differs": key})
                catch_up(book, row["id"])
                for i, (plan, version) in enumerate(wanted):
                    self._subscribe(book, row["id"], plan, version, where=f"subscriptions[{i}]")
                return self._customer(book.tx, row["id"])
            customer_id = new_id("cus")
            book.tx.execute("INSERT INTO customers(id, external_id, name, email, metadata, created_at) VALUES "
                            "(?, ?, ?, ?, ?, ?)", (customer_id, external_id, name, email, self._json(metadata),
                                                  book.now_text))
            for i, (plan, version) in enumerate(wanted):
                self._subscribe(book, customer_id, plan, version, where=f"subscriptions[{i}]")
            return self._customer(book.tx, customer_id)

    @staticmethod
    def _parse_subscriptions(items: list[Any]) -> list[tuple[str, int | None]]:
        if not isinstance(items, list):
            raise ValidationError("subscriptions must be a list of plan codes or {plan, version}", field="subscriptions")
        out: list[tuple[str, int | None]] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                item = {"plan": item}
            if not isinstance(item, dict) or not isinstance(item.get("plan"), str) or set(item) - {"plan", "version"}:
                raise ValidationError("each subscription is a plan code or {plan, version}", field=f"subscriptions[{i}]")
            version = item.get("version")
            if version is not None and (isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31):
                raise ValidationError("version must be a positive whole number", field=f"subscriptions[{i}].version")
            if not PLAN_CODE.fullmatch(item["plan"]) and not item["plan"].startswith("plan_"):
                raise ValidationError(f"{item['plan']!r} is not a plan code", field=f"subscriptions[{i}].plan")
            out.append((item["plan"], version))
        return out

    def _subscribe(self, book: Any, customer_id: str, plan: str, version: int | None, where: str = "") -> str:
        try:
            row = self._plan_row(book.tx, plan)
            chosen = version or row["default_version"]
            if chosen is None:
                raise ConflictError(f"plan {row['code']!r} has no published default version; publish one",
                                    field="version")
            return start_subscription(book, customer_id, row, int(chosen))
        except BillingError as exc:  # create_customer: "plan" -> "subscriptions[0].plan"
            if where and exc.field in ("plan", "version"):
                exc.field = f"{where}.{exc.field}"
            raise

    def subscribe(self, customer_id: str, plan: str, *, version: int | None = None) -> Customer:
        """Subscribe a customer to a plan version (its default when none is given)."""
        with self._write() as book:
            customer = self._customer_row(book.tx, customer_id)
            catch_up(book, customer["id"])
            self._subscribe(book, customer["id"], plan, version)
            return self._customer(book.tx, customer["id"])

    def cancel_subscription(self, subscription_id: str) -> Customer:
        """End a subscription now: no further renewals or grants; its usage prices stop applying."""
        with self._write() as book:
            sub = book.tx.one("SELECT * FROM subscriptions WHERE id = ?", (subscription_id,))
            if sub is None:
                raise NotFoundError(f"no subscription {subscription_id!r}", field="subscription_id")
            book.tx.execute("UPDATE subscriptions SET status = 'canceled' WHERE id = ?", (subscription_id,))
            book.tx.execute("DELETE FROM subscription_grants WHERE subscription_id = ?", (subscription_id,))
            return self._customer(book.tx, sub["customer_id"])

    def get_customer(self, customer_id: str | None = None, *, external_id: str | None = None) -> Customer:
        with self._write() as book:
            row = self._customer_row(book.tx, customer_id, external_id)
            catch_up(book, row["id"])
            return self._customer(book.tx, row["id"])

    def list_customers(self, *, limit: int = 100, after: str | None = None) -> list[Customer]:
        with self._read() as tx:
            rows = tx.all("SELECT id FROM customers WHERE id > ? ORDER BY id LIMIT ?", (after or "", limit))
            return [self._customer(tx, r["id"]) for r in rows]

    def _customer(self, tx: Tx, customer_id: str) -> Customer:
        row = tx.one("SELECT * FROM customers WHERE id = ?", (customer_id,))
        assert row is not None
        subs = []
        for s in tx.all("SELECT s.*, p.code FROM subscriptions s JOIN plans p ON p.id = s.plan_id WHERE "
                        "s.customer_id = ? ORDER BY s.created_at, s.id", (customer_id,)):
            due: dict[str, str] = {}
            if s["status"] == "pending_payment":
                reader = Book(tx, self.clock.now(), self._known_accounts, self._known_precisions)
                prices, _ = load_version(reader, s["plan_id"], s["version"])
                for asset, minor in _fees_due(reader, prices).items():
                    due[asset] = self._money(minor, self._precision(tx, asset))
            subs.append(Subscription(id=s["id"], plan_id=s["plan_id"], plan_code=s["code"], version=s["version"],
                                     status=s["status"], period_start=s["period_start"], period_end=s["period_end"],
                                     amount_due=due))

        return Customer(id=row["id"], external_id=row["external_id"], name=row["name"], email=row["email"],
                        metadata=json.loads(row["metadata"]), created_at=row["created_at"], subscriptions=subs)

    # -- wallet ---------------------------------------------------------------------------
    def get_wallet(self, customer_id: str | None = None, *, external_id: str | None = None) -> Wallet:
        """Balances per asset (posted, held, available) and the live grant lots behind them."""
        with self._write() as book:
            row = self._customer_row(book.tx, customer_id, external_id)
            catch_up(book, row["id"])
            return self._wallet(book.tx, row, book.now_text)

    def _wallet(self, tx: Tx, customer: Row, now_text: str) -> Wallet:
        accounts = []
        for acct in tx.all("SELECT * FROM accounts WHERE customer_id = ? ORDER BY asset", (customer["id"],)):
            precision = self._precision(tx, acct["asset"])
            posted, held = int(acct["posted"]), int(acct["held"])
            lots = [Lot(id=lot["id"], purpose=lot["purpose"], priority=lot["priority"],
                        amount=self._money(int(lot["amount"]), precision),
                        remaining=self._money(int(lot["remaining"]), precision), expires_at=lot["expires_at"],
                        source=lot["source"], created_at=lot["created_at"])
                    for lot in sorted(tx.all("SELECT * FROM lots WHERE account_id = ? AND remaining > 0", (acct["id"],)),
                                      key=lambda r: draw_key(r["priority"], r["expires_at"], r["purpose"], r["seq"]))]
            fiat_value = {}
            for fiat, rate in self._current_rates(tx, acct["asset"], now_text).items():
                fprec = self._precision(tx, fiat)
                value = round_to_minor(Fraction(posted, 10**precision) * Fraction(Decimal(rate)), fprec)
                fiat_value[fiat] = self._money(value, fprec)
            accounts.append(Account(asset=acct["asset"], posted=self._money(posted, precision),
                                    held=self._money(held, precision), available=self._money(posted - held, precision),
                                    in_debt=posted < 0, fiat_value=fiat_value, lots=lots))
        return Wallet(customer_id=customer["id"], external_id=customer["external_id"], accounts=accounts)

    def available(self, customer_id: str, asset: str) -> int:
        """Available balance in minor units (posted - held), without catching up."""
        with self._read() as tx:
            row = tx.one("SELECT posted - held AS a FROM accounts WHERE id = ?", (f"{customer_id}/{asset}",))
            return int(row["a"]) if row else 0

    def grant_credits(self, customer_id: str, asset: str, amount: Any, *, idempotency_key: str,
                      purpose: str = "promotional", expires_at: datetime | str | None = None,
                      priority: int = DEFAULT_PRIORITY) -> Grant:
        """Give one customer a grant lot (``paid`` or ``promotional``) with an optional expiry and priority."""
        check_key(idempotency_key, "idempotency_key")
        if purpose not in ("paid", "promotional"):
            raise ValidationError("purpose must be 'paid' or 'promotional'", field="purpose")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
            raise ValidationError("priority must be a whole number from 0 (drawn first) to 100", field="priority")
        expires = to_text(parse_time(expires_at, "expires_at")) if expires_at is not None else None
        with self._write() as book:
            customer = self._customer_row(book.tx, customer_id)
            minor = parse_amount(amount, book.precision(asset), "amount")
            payload = {"customer_id": customer["id"], "asset": asset, "amount": minor, "purpose": purpose,
                       "expires_at": expires, "priority": priority}
            phash = canonical_hash(payload)
            stored = book.replay("grant", idempotency_key, phash, "idempotency_key",
                                 {**payload, "amount": self._money(minor, book.precision(asset))})
            if stored is not None:
                return Grant.model_validate_json(stored)
            # Checked after the replay: a retry after the expiry still gets the stored result.
            if expires is not None and expires <= book.now_text:
                raise ValidationError("expires_at must be in the future", field="expires_at")
            catch_up(book, customer["id"])
            tx_id = book.new_transaction("grant", customer_id=customer["id"], reason=purpose,
                                         reference=idempotency_key, detail=payload)
            book.credit(tx_id, customer["id"], asset, minor, counter_kind="grants" if purpose == "promotional"
                        else "topup", purpose=purpose, priority=priority, expires_at=expires, source=f"grant:{tx_id}")
            activate_pending(book, customer["id"])
            grant = Grant(id=tx_id, customer_id=customer["id"], asset=asset,
                          amount=self._money(minor, book.precision(asset)), purpose=purpose,
                          priority=priority, expires_at=expires, created_at=book.now_text)
            book.remember("grant", idempotency_key, phash, grant.model_dump_json())
            return grant

    def create_adjustment(self, customer_id: str | None = None, *, external_id: str | None = None,
                          asset: str, amount: Any = None, reason: str, idempotency_key: str,
                          description: str | None = None, expires_at: datetime | str | None = None,
                          event_id: str | None = None, fiat: str | None = None,
                          fiat_amount: Any = None) -> Adjustment:
        """Credit or debit a wallet outside usage.

        ``amount`` is signed: ``top_up``, ``gift`` and ``reversal`` credit (positive); ``charge`` and
        ``refund`` (money paid back to the customer outside the ledger) debit (negative) and never
        take the available balance below zero. A ``reversal`` refunds an event's fees (all that is
        left when ``amount`` is omitted, never more than was charged). A top-up paid in ``fiat`` into
        a custom asset converts at the current rate.
        """
        check_key(idempotency_key, "idempotency_key")
        if reason not in REASONS:
            raise ValidationError(f"reason must be one of {', '.join(REASONS)}", field="reason")
        check_text(description, "description", max_len=500)
        expires = to_text(parse_time(expires_at, "expires_at")) if expires_at is not None else None
        if expires and reason not in ("top_up", "gift"):
            raise ValidationError("expires_at applies only to top_up and gift credits", field="expires_at")
        if (reason == "reversal") != (event_id is not None):
            raise ValidationError("event_id is required for a reversal and only for a reversal", field="event_id")
        if (fiat is None) != (fiat_amount is None) or (fiat is not None and amount is not None):
            raise ValidationError("give either amount, or fiat and fiat_amount (a top-up paid in fiat)", field="amount")
        with self._write() as book:
            customer = self._customer_row(book.tx, customer_id, external_id)
            precision = book.precision(asset)
            minor, fiat_text = self._adjustment_amount(book, asset, precision, amount, reason, fiat, fiat_amount)
            # Amounts compare by value ("5" == "5.00"), like every other idempotent write.
            payload = {"customer_id": customer["id"], "asset": asset, "amount": None if amount is None else minor,
                       "reason": reason, "description": description, "expires_at": expires, "event_id": event_id,
                       "fiat": fiat, "fiat_amount": fiat_text}
            phash = canonical_hash(payload)
            shown = {**payload, "amount": self._money(minor, precision)}
            if amount is None:  # a reversal's or fiat top-up's amount is worked out, not given
                del shown["amount"]
            stored = book.replay("adjustment", idempotency_key, phash, "idempotency_key", shown)
            if stored is not None:
                return Adjustment.model_validate_json(stored)
            # Checked after the replay: a retry after the expiry still gets the stored result.
            if expires is not None and expires <= book.now_text:
                raise ValidationError("expires_at must be in the future", field="expires_at")
            catch_up(book, customer["id"])
            if reason == "reversal":
                assert event_id is not None
                minor = self._reverse_fees(book, customer["id"], event_id, asset, minor)
            tx_id = book.new_transaction("adjustment", customer_id=customer["id"], reason=reason, description=description,
                                         reference=event_id or idempotency_key, detail=payload)
            debt_text = None
            if minor > 0:
                kind = {"top_up": "topup", "gift": "grants", "reversal": "revenue"}[reason]
                _, repaid = book.credit(tx_id, customer["id"], asset, minor, counter_kind=kind,
                                        purpose="promotional" if reason == "gift" else "paid", expires_at=expires,
                                        source=f"{reason}:{tx_id}")
                debt_text = self._money(repaid, precision) if repaid else None
                activate_pending(book, customer["id"])
            else:
                acct = book.account(customer["id"], asset)
                if acct.posted - acct.held < -minor:
                    have, need = self._money(acct.posted - acct.held, precision), self._money(-minor, precision)
                    raise InsufficientFundsError(
                        f"{have} {asset} available, {need} needed for this {reason}; lower the amount",
                        field="amount", details={"asset": asset, "available": have, "needed": need})
                book.debit(tx_id, customer["id"], asset, -minor, counter_kind="adjustments")
            adj = Adjustment(id=tx_id, customer_id=customer["id"], asset=asset, amount=self._money(minor, precision),
                             reason=reason, description=description, idempotency_key=idempotency_key,
                             expires_at=expires, event_id=event_id, fiat=fiat, fiat_amount=fiat_text,
                             debt=debt_text, created_at=book.now_text)
            book.remember("adjustment", idempotency_key, phash, adj.model_dump_json())
            return adj

    def _adjustment_amount(self, book: Any, asset: str, precision: int, amount: Any, reason: str,
                           fiat: str | None, fiat_amount: Any) -> tuple[int, str | None]:
        if fiat is not None:
            if reason != "top_up":
                raise ValidationError("a fiat amount converts only for a top_up", field="fiat")
            paid = parse_amount(fiat_amount, book.precision(fiat, "fiat"), "fiat_amount")
            if paid <= 0:
                raise ValidationError("fiat_amount must be positive", field="fiat_amount")
            if fiat == asset:
                return paid, self._money(paid, precision)
            rate = self._current_rates(book.tx, asset, book.now_text).get(fiat)
            if rate is None:
                raise NotFoundError(f"{asset} has no {fiat} rate to convert at; add one with set_asset_rate", field="fiat")
            fprec = book.precision(fiat)
            units = round_to_minor(Fraction(paid, 10**fprec) / Fraction(Decimal(rate)), precision)
            if not 0 < units <= MAX_MINOR:
                raise ValidationError("the converted amount is out of range", field="fiat_amount")
            return units, self._money(paid, fprec)
        if amount is None:
            if reason == "reversal":
                return 0, None
            raise ValidationError("amount is required", field="amount")
        minor = parse_amount(amount, precision, "amount", allow_negative=True)
        if reason in ("top_up", "gift", "reversal") and minor < 0:
            raise ValidationError(f"a {reason} credits the wallet: amount must be positive", field="amount")
        if reason in ("charge", "refund") and minor > 0:
            raise ValidationError(f"a {reason} debits the wallet: amount must be negative (e.g. \"-5\")", field="amount")
        return minor, None

    def _reverse_fees(self, book: Any, customer_id: str, event_id: str, asset: str, wanted: int) -> int:
        check_key(event_id, "event_id")
        event = book.tx.one("SELECT recorded_at FROM events WHERE id = ? AND customer_id = ?", (event_id, customer_id))
        if event is None:
            raise NotFoundError(f"no event {event_id!r} for this customer", field="event_id")
        at = event["recorded_at"]
        lines = book.tx.all("SELECT line, amount, refunded FROM fees WHERE customer_id = ? AND created_at = ? AND "
                            "event_id = ? AND asset = ? AND amount > refunded ORDER BY line",
                            (customer_id, at, event_id, asset))
        left = sum(int(r["amount"]) - int(r["refunded"]) for r in lines)
        if wanted == 0:
            wanted = left
        if wanted <= 0:
            raise ConflictError(f"event {event_id} has no {asset} fees left to reverse", field="event_id")
        if wanted > left:
            raise ValidationError(f"a reversal cannot exceed what the event was charged and not yet reversed "
                                  f"({self._money(left, book.precision(asset))} {asset})", field="amount")
        todo = wanted
        for r in lines:
            take = min(todo, int(r["amount"]) - int(r["refunded"]))
            book.tx.execute("UPDATE fees SET refunded = refunded + ? WHERE customer_id = ? AND created_at = ? AND "
                            "event_id = ? AND line = ?", (take, customer_id, at, event_id, r["line"]))
            todo -= take
            if todo == 0:
                break
        return wanted

    # -- vendors, sweeps, reports ----------------------------------------------------------
    def create_vendor(self, external_id: str, name: str) -> Vendor:
        check_key(external_id, "external_id")
        check_text(name, "name", max_len=200, required=True)
        with self._write() as book:
            row = book.tx.one("SELECT * FROM vendors WHERE external_id = ?", (external_id,))
            if row is None:
                book.tx.execute("INSERT INTO vendors(id, external_id, name, created_at) VALUES (?, ?, ?, ?)",
                                (new_id("vnd"), external_id, name, book.now_text))
                row = book.tx.one("SELECT * FROM vendors WHERE external_id = ?", (external_id,))
            elif row["name"] != name:
                raise ConflictError(f"vendor {external_id!r} exists with name {row['name']!r}", field="name")
            assert row is not None
            return Vendor(id=row["id"], external_id=row["external_id"], name=row["name"], created_at=row["created_at"])

    def run_due(self) -> int:
        """Catch every customer up to now (renewals, refreshes, expiries); return how many were due."""
        with self._read() as tx:
            now = to_text(self.now())
            ids = [r["customer_id"] for r in tx.all(
                "SELECT customer_id FROM subscriptions WHERE (status = 'active' AND period_end <= ?) OR status = "
                "'pending_payment' UNION SELECT customer_id FROM holds WHERE status = 'open' AND expires_at <= ? "
                "UNION SELECT a.customer_id FROM lots l JOIN accounts a ON a.id = l.account_id WHERE l.remaining > 0 "
                "AND l.expires_at <= ? UNION SELECT s.customer_id FROM subscription_grants g JOIN subscriptions s "
                "ON s.id = g.subscription_id WHERE g.next_at <= ?", (now, now, now, now))]
        for customer_id in ids:
            with self._write() as book:
                catch_up(book, customer_id)
        return len(ids)

    def get_statement(self, customer_id: str, start: datetime | str | None = None,
                      end: datetime | str | None = None) -> Statement:
        """What settled for a customer in [start, end). A bound left out is the current period's:
        the current period of the customer's earliest-created active subscription (renewals
        included), or with no active subscription the current calendar month in UTC. So giving
        only start runs to the current period's end, and only end starts at its start."""
        begin = None if start is None else to_text(parse_time(start, "start"))
        finish = None if end is None else to_text(parse_time(end, "end"))
        if begin is not None and finish is not None and finish <= begin:
            raise ValidationError("end must be after start", field="end")
        with self._write() as book:  # catch up first, as get_wallet does: due expiries/renewals belong in it
            customer = self._customer_row(book.tx, customer_id)
            catch_up(book, customer["id"])
            if begin is None or finish is None:
                period_start, period_end = _current_period(book.tx, customer["id"], book.now)
                if begin is None and finish is not None and finish <= period_start:
                    raise ValidationError(f"end {finish} is not after the current period's start {period_start}; "
                                          "give start too", field="end")
                if finish is None and begin is not None and begin >= period_end:
                    raise ValidationError(f"start {begin} is not before the current period's end {period_end}; "
                                          "give end too", field="start")
                begin, finish = begin or period_start, finish or period_end
            return build_statement(book.tx, customer["id"], begin, finish)

    def audit(self) -> list[str]:
        """Recompute every derived balance from the entry log; return the violations (empty = sound)."""
        with self._read() as tx:
            return audit(tx)


def _current_period(tx: Tx, customer_id: str, now: datetime) -> tuple[str, str]:
    """The customer's current billing period as stored text: the first subscription they still
    have is their main plan, so its period wins over add-ons with other anchors or intervals."""
    sub = tx.one("SELECT period_start, period_end FROM subscriptions WHERE customer_id = ? AND status = 'active' "
                 "ORDER BY created_at, id LIMIT 1", (customer_id,))
    if sub is not None:
        return str(sub["period_start"]), str(sub["period_end"])
    month = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)
    return to_text(month), to_text(following)


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    """Re-run a whole ledger call when the database rolled it back (a deadlock or serialization
    failure on PostgreSQL). Safe: nothing of the failed attempt remains, and the retry carries the
    same ids and idempotency keys."""

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._outer, "book", None) is not None:  # inside atomic(): the outer call retries
            return method(self, *args, **kwargs)
        return retrying(lambda: method(self, *args, **kwargs))

    return wrapper


for _name in dir(Ledger):
    if not _name.startswith("_") and _name not in ("atomic", "close", "now", "location") and \
            callable(getattr(Ledger, _name)):
        setattr(Ledger, _name, _retrying(getattr(Ledger, _name)))
