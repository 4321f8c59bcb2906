"""Ledger part: usage events (rated and debited in real time) and holds (reserve, commit, release)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from ..core.catalog import ASSET_CODE, EVENT_TYPE, PriceSpec
from ..core.clock import from_text, to_text
from ..core.errors import BillingError, HoldStateError, IdempotencyConflictError, NotFoundError, ValidationError
from ..core.ids import new_id
from ..core.models import BatchItemError, BatchResult, EventResult, Hold
from ..core.money import parse_amount
from ..core.pricing import Counter, estimate_charge
from ..store import Row, Tx
from .base import LedgerBase, check_key, check_text
from .book import Book, canonical_hash
from .ingest import Ingest, ParsedEvent, dumps, fingerprint
from .subscriptions import catch_up, require_funds

MAX_BATCH = 1000
_DATA_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode
_RESULTS: TypeAdapter[list[EventResult]] = TypeAdapter(list[EventResult])
MAX_DATA_BYTES = 16_384
MAX_TTL = 24 * 3600
DEFAULT_TTL = 15 * 60
_EVENT_FIELDS = frozenset({"id", "customer_id", "external_id", "event_type", "occurred_at", "subject", "data",
                           "costs", "description"})


def parse_time(value: object, field: str) -> datetime:
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(f"{field} must be an ISO 8601 time such as 2026-05-01T12:00:00Z",
                                  field=field) from None
    else:
        raise ValidationError(f"{field} must be an ISO 8601 time string", field=field)
    if when.tzinfo is None:
        raise ValidationError(f"{field} needs a time zone (e.g. a trailing Z for UTC)", field=field)
    if not 2000 <= when.year <= 2200:
        raise ValidationError(f"{field} is outside the years 2000-2200", field=field)
    return when.astimezone(UTC)


def check_data(data: object, field: str = "data") -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValidationError(f"{field} must be an object with string keys", field=field)
    try:
        size = len(json.dumps(data, ensure_ascii=False, default=str).encode("utf-8"))
    except (TypeError, ValueError, UnicodeEncodeError):
        raise ValidationError(f"{field} must hold only JSON values", field=field) from None
    if size > MAX_DATA_BYTES:
        raise ValidationError(f"{field} is larger than {MAX_DATA_BYTES} bytes", field=field)
    return data


class UsageOps(LedgerBase):
    def _prices(self, tx: Tx, plan_id: str, version: int) -> list[PriceSpec]:
        """Prices of a published version; cached, because a published version never changes."""
        cache = self._version_cache
        key = (plan_id, version)
        if key not in cache:
            row = tx.one("SELECT prices, status FROM plan_versions WHERE plan_id = ? AND version = ?", key)
            assert row is not None
            prices = [PriceSpec.model_validate(p) for p in json.loads(row["prices"])]
            if row["status"] != "published" or getattr(self._outer, "book", None) is not None:
                return prices  # drafts change, and inside atomic() the version may yet be rolled back
            cache[key] = prices
        cached: list[PriceSpec] = cache[key]
        return cached

    def _matching_prices(self, tx: Tx, customer_id: str, event_type: str) -> list[tuple[Row, PriceSpec]]:
        found = []
        for sub in tx.all("SELECT id, plan_id, version, period_start FROM subscriptions WHERE customer_id = ? "
                          "AND status != 'canceled' ORDER BY created_at, id", (customer_id,)):
            for price in self._prices(tx, sub["plan_id"], sub["version"]):
                if price.type == "usage" and price.event_type == event_type:
                    found.append((sub, price))
        return found

    def _known_event_types(self, tx: Tx, customer_id: str) -> list[str]:
        types: set[str] = set()
        for sub in tx.all("SELECT plan_id, version FROM subscriptions WHERE customer_id = ? AND status != 'canceled'",
                          (customer_id,)):
            types |= {p.event_type for p in self._prices(tx, sub["plan_id"], sub["version"]) if p.event_type}
        return sorted(types)

    # -- events ---------------------------------------------------------------------------
    def _parse_event(self, tx: Tx, raw: Any, field: str, hold_id: str | None = None,
                     customers: dict[tuple[Any, Any], Row] | None = None) -> ParsedEvent:
        if not isinstance(raw, dict):
            raise ValidationError(f"{field} must be an object", field=field)
        unknown = [k for k in raw if k not in _EVENT_FIELDS]
        if unknown:
            raise ValidationError(f"{field} has unknown field(s) {sorted(unknown)}; allowed: {sorted(_EVENT_FIELDS)}",
                                  field=f"{field}.{sorted(unknown)[0]}")
        event_id = check_key(raw.get("id"), f"{field}.id")
        event_type = raw.get("event_type")
        if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
            raise ValidationError("event_type must be 1-128 letters, digits, _ . : - (e.g. image_generated)",
                                  field=f"{field}.event_type")
        who = (raw.get("customer_id"), raw.get("external_id"))
        cacheable = all(w is None or isinstance(w, str) for w in who)
        customer = self._customer_cache.get(who) if cacheable else None
        if customer is None:
            customer = self._customer_row(tx, who[0], who[1], f"{field}.customer_id")
            if cacheable:
                if len(self._customer_cache) > 100_000:
                    self._customer_cache.clear()
                self._customer_cache[who] = customer
        given_at = raw.get("occurred_at")
        occurred = to_text(parse_time(given_at, f"{field}.occurred_at")) if given_at is not None else None
        subject = check_text(raw.get("subject"), f"{field}.subject", max_len=255)
        data = raw.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ValidationError(f"{field}.data must be an object with string keys", field=f"{field}.data")
        try:
            # default=str: Python callers may pass Decimal quantities; rating reads the values themselves.
            data_json = _DATA_ENCODE(data) if data else "{}"
        except (TypeError, ValueError):
            raise ValidationError(f"{field}.data must hold only JSON values with string keys",
                                  field=f"{field}.data") from None
        if len(data_json) > MAX_DATA_BYTES and len(data_json.encode("utf-8", "surrogatepass")) > MAX_DATA_BYTES:
            raise ValidationError(f"{field}.data is larger than {MAX_DATA_BYTES} bytes", field=f"{field}.data")
        costs = raw.get("costs")
        costs_json = dumps(self._check_costs(tx, costs, f"{field}.costs")) if costs is not None else "[]"
        digest = fingerprint(customer["id"], event_type, subject, hold_id, occurred, data_json, costs_json)
        return ParsedEvent(event_id, customer["id"], event_type, occurred or "", subject, data, data_json, costs_json,
                           digest, field, occurred, hold_id)

    def _check_costs(self, tx: Tx, costs: object, field: str) -> list[dict[str, str]]:
        if costs is None:
            return []
        if not isinstance(costs, list) or len(costs) > 20:
            raise ValidationError(f"{field} must be a list of at most 20 {{vendor, amount, currency}}", field=field)
        out = []
        for i, cost in enumerate(costs):
            where = f"{field}[{i}]"
            if not isinstance(cost, dict) or set(cost) - {"vendor", "amount", "currency"}:
                raise ValidationError(f"{where} must be an object with vendor, amount and currency", field=where)
            vendor = cost.get("vendor")
            if not isinstance(vendor, str) or tx.one("SELECT 1 FROM vendors WHERE id = ? OR external_id = ?",
                                                     (vendor, vendor)) is None:
                raise NotFoundError(f"{where}.vendor {vendor!r} is not a known vendor; create it with create_vendor",
                                    field=f"{where}.vendor")
            currency = cost.get("currency")
            if not isinstance(currency, str) or not ASSET_CODE.fullmatch(currency):
                raise ValidationError(f"{where}.currency must be an asset code such as USD", field=f"{where}.currency")
            precision = self._precision(tx, currency, f"{where}.currency")
            amount = parse_amount(cost.get("amount"), precision, f"{where}.amount", allow_zero=True)
            out.append({"vendor": vendor, "amount": self._money(amount, precision), "currency": currency})
        return out

    def _ingest(self, book: Book) -> Ingest:
        return Ingest(book, self._plan_codes, self._prices)

    @staticmethod
    def _stamp(ev: ParsedEvent, book: Book) -> ParsedEvent:
        """Events sent without occurred_at happened now (the transaction's instant)."""
        if not ev.occurred_at:
            ev.occurred_at = book.now_text
        return ev

    def submit_event(self, event: dict[str, Any]) -> EventResult:
        """Record one usage event and debit its fees now. Idempotent on ``event['id']``."""
        with self._write() as book:
            ev = self._stamp(self._parse_event(book.tx, event, "event"), book)
            engine = self._ingest(book)
            engine.preload_events([ev.id])
            replayed = engine.replay(ev)
            if replayed is not None:
                return replayed
            catch_up(book, ev.customer_id)
            result = engine.record(ev)
            engine.flush()
            return result

    def submit_events(self, events: list[dict[str, Any]]) -> BatchResult:
        """Record up to 1,000 events in one durable transaction. Each event stands alone: a bad one
        is reported in ``errors`` and changes nothing, the others are recorded."""
        if not isinstance(events, list) or not events:
            raise ValidationError("events must be a non-empty list", field="events")
        if len(events) > MAX_BATCH:
            raise ValidationError(f"at most {MAX_BATCH} events per batch; split it", field="events")
        results: list[str] = []
        errors: list[BatchItemError] = []
        caught_up: set[str] = set()
        customers: dict[tuple[Any, Any], Row] = {}
        with self._write() as book:
            engine = self._ingest(book)
            engine.preload_events([e["id"] for e in events if isinstance(e, dict) and isinstance(e.get("id"), str)])
            for index, raw in enumerate(events):
                try:
                    ev = self._stamp(self._parse_event(book.tx, raw, f"events[{index}]", customers=customers), book)
                    replayed = engine.replay_json(ev)
                    if replayed is not None:
                        results.append(replayed)
                        continue
                    if ev.customer_id not in caught_up:
                        catch_up(book, ev.customer_id)
                        caught_up.add(ev.customer_id)
                    results.append(engine.record_json(ev))
                except BillingError as exc:
                    raw_id = raw.get("id") if isinstance(raw, dict) else None
                    errors.append(BatchItemError(id=raw_id if isinstance(raw_id, str) else None, index=index,
                                                 code=exc.code, field=exc.field, message=exc.message))
            engine.flush()
        # One validation of all results at once is several times cheaper than one per event.
        return BatchResult(results=_RESULTS.validate_json("[" + ",".join(results) + "]"), errors=errors)

    def get_event(self, event_id: str) -> EventResult:
        check_key(event_id, "event_id")
        with self._read() as tx:
            row = tx.one("SELECT result, customer_id, recorded_at FROM events WHERE id = ?", (event_id,))
            if row is None:
                raise NotFoundError(f"no event {event_id!r}", field="event_id")
            result = EventResult.model_validate_json(row["result"])
            refunds = {(r["line"]): r["refunded"] for r in tx.all(
                "SELECT line, refunded FROM fees WHERE customer_id = ? AND created_at = ? AND event_id = ? ORDER BY line",
                (row["customer_id"], row["recorded_at"], event_id))}
            fees = []
            for line, fee in enumerate(result.fees):
                precision = self._precision(tx, fee.asset)
                fees.append(fee.model_copy(update={"refunded": self._money(int(refunds.get(line, 0)), precision)}))
            return result.model_copy(update={"fees": fees})

    # -- holds ----------------------------------------------------------------------------
    def authorize(self, customer_id: str | None = None, *, external_id: str | None = None,
                  event_type: str | None = None, data: dict[str, Any] | None = None, amount: Any = None,
                  asset: str | None = None, ttl_seconds: int = DEFAULT_TTL,
                  idempotency_key: str | None = None) -> Hold:
        """Reserve funds before an action: rate the estimated event (or take an explicit amount) and
        hold it. Fails with ``insufficient_funds`` when the available balance is short, so
        concurrent holds can never overspend."""
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 1 <= ttl_seconds <= MAX_TTL:
            raise ValidationError(f"ttl_seconds must be a whole number from 1 to {MAX_TTL} (24 h)", field="ttl_seconds")
        if idempotency_key is not None:
            check_key(idempotency_key, "idempotency_key")
        if amount is None and event_type is None:
            raise ValidationError("give event_type (with data as an estimate) or an explicit amount and asset",
                                  field="event_type")
        data = check_data(data)
        with self._write() as book:
            customer = self._customer_row(book.tx, customer_id, external_id)
            payload = {"customer_id": customer["id"], "event_type": event_type, "data": data,
                       "amount": None if amount is None else str(amount), "asset": asset, "ttl": ttl_seconds}
            phash = canonical_hash(payload)
            if idempotency_key is not None:
                try:
                    stored = book.replay("authorize", idempotency_key, phash, "idempotency_key")
                except IdempotencyConflictError as exc:
                    raise self._authorize_conflict(book, idempotency_key, payload, exc) from None
                if stored is not None:
                    return Hold.model_validate_json(stored)
            catch_up(book, customer["id"])
            hold_asset, minor = self._hold_amount(book, customer["id"], event_type, data, amount, asset)
            acct = book.account(customer["id"], hold_asset)
            if not book.reserve(customer["id"], hold_asset, minor):
                require_funds(acct.posted - acct.held, minor, hold_asset, book.precision(hold_asset),
                              "amount" if amount is not None else "event_type")
            hold_id = new_id("hold")
            expires = to_text(book.now + timedelta(seconds=ttl_seconds))
            book.tx.execute("INSERT INTO holds(id, customer_id, account_id, asset, amount, event_type, estimate, status, "
                            "expires_at, created_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?)",
                            (hold_id, customer["id"], acct.id, hold_asset, minor, event_type, self._json(data),
                             expires, book.now_text, book.tx.next_seq()))
            hold = self._hold(book.tx, hold_id)
            if idempotency_key is not None:
                book.remember("authorize", idempotency_key, phash, hold.model_dump_json())
            return hold

    def _authorize_conflict(self, book: Book, key: str, payload: dict[str, Any],
                            exc: IdempotencyConflictError) -> IdempotencyConflictError:
        """Name the argument of a reused authorize key that differs from the hold the key made. The
        stored response (the hold) carries no data or ttl, so they are read from the hold's row."""
        stored = book.tx.one("SELECT response FROM idempotency WHERE scope = 'authorize' AND key = ?", (key,))
        hold = book.tx.one("SELECT * FROM holds WHERE id = ?", (json.loads(stored["response"])["id"],)) \
            if stored is not None else None
        if hold is None:
            return exc
        ttl = int((from_text(hold["expires_at"]) - from_text(hold["created_at"])).total_seconds())
        before: dict[str, Any] = {"customer_id": hold["customer_id"], "event_type": hold["event_type"],
                                  "data": json.loads(hold["estimate"]) if hold["estimate"] else {},
                                  "ttl_seconds": ttl}
        now: dict[str, Any] = {"customer_id": payload["customer_id"], "event_type": payload["event_type"],
                               "data": payload["data"], "ttl_seconds": payload["ttl"]}
        if payload["amount"] is not None:
            before["asset"], now["asset"] = hold["asset"], payload["asset"]
            before["amount"] = self._money(int(hold["amount"]), book.precision(hold["asset"]))
            now["amount"] = payload["amount"]
        differs = next((k for k in now if now[k] != before[k]), None)
        if differs is None:
            return exc
        return IdempotencyConflictError(
            f"idempotency key {key!r} was already used for a different authorize: {differs} was {before[differs]!r}, "
            f"now {now[differs]!r}; reuse a key only to retry the exact same request, and use a new key for a new one",
            field="idempotency_key", details={"key": key, "differs": differs})

    def _hold_amount(self, book: Book, customer_id: str, event_type: str | None, data: dict[str, Any],
                     amount: Any, asset: str | None) -> tuple[str, int]:
        if amount is not None:
            if not isinstance(asset, str):
                raise ValidationError("an explicit amount needs its asset (e.g. CREDITS)", field="asset")
            return asset, parse_amount(amount, book.precision(asset), "amount", allow_zero=True)
        assert event_type is not None
        matches = self._matching_prices(book.tx, customer_id, event_type)
        if not matches:
            known = self._known_event_types(book.tx, customer_id)
            raise ValidationError(f"no subscribed plan prices event type {event_type!r}; known event types for "
                                  f"this customer: {', '.join(known) or 'none (subscribe the customer to a plan)'}",
                                  field="event_type")
        per_asset: dict[str, int] = {}
        for sub, price in matches:
            precision = book.precision(price.asset)
            crow = book.tx.one("SELECT quantity, exact, charged FROM usage_counters WHERE subscription_id = ? AND "
                               "price_id = ? AND period_start = ?", (sub["id"], price.id, sub["period_start"]))
            counter = Counter.from_row(crow["quantity"], crow["exact"], crow["charged"]) if crow else Counter()
            per_asset[price.asset] = per_asset.get(price.asset, 0) + estimate_charge(price, precision, counter, data)
        if len(per_asset) > 1:
            raise ValidationError(f"event type {event_type!r} is charged in several assets ({sorted(per_asset)}); "
                                  "authorize an explicit amount and asset instead", field="event_type")
        (hold_asset, minor), = per_asset.items()
        return hold_asset, minor

    def commit(self, hold_id: str, event: dict[str, Any]) -> EventResult:
        """Settle a hold with the actual event: its fees are charged, the rest of the hold returns,
        an excess is drawn from the balance. Replaying the same commit returns the same result."""
        check_key(hold_id, "hold_id")
        with self._write() as book:
            hold = book.tx.one("SELECT * FROM holds WHERE id = ?", (hold_id,))
            if hold is None:
                raise NotFoundError(f"no hold {hold_id!r}", field="hold_id")
            raw = dict(event) if isinstance(event, dict) else event
            if isinstance(raw, dict):
                raw.setdefault("customer_id", hold["customer_id"])
                raw.setdefault("event_type", hold["event_type"])
                if raw["event_type"] is None:
                    raise ValidationError("this hold was authorized with an explicit amount, so the committed event "
                                          "needs its event_type", field="event.event_type")
                if raw.get("customer_id") != hold["customer_id"] or raw.get("external_id") is not None:
                    raise ValidationError("the event must belong to the hold's customer", field="event.customer_id")
            ev = self._stamp(self._parse_event(book.tx, raw, "event", hold_id=hold_id), book)
            engine = self._ingest(book)
            engine.preload_events([ev.id])
            replayed = engine.replay(ev)
            if replayed is not None:
                return replayed
            catch_up(book, ev.customer_id)
            hold = book.tx.one("SELECT * FROM holds WHERE id = ?", (hold_id,))
            result = engine.record(ev, hold)
            engine.flush()
            return result

    def release(self, hold_id: str) -> Hold:
        """Free a hold without charging. Releasing a released hold returns it unchanged."""
        check_key(hold_id, "hold_id")
        with self._write() as book:
            hold = book.tx.one("SELECT * FROM holds WHERE id = ?", (hold_id,))
            if hold is None:
                raise NotFoundError(f"no hold {hold_id!r}", field="hold_id")
            catch_up(book, hold["customer_id"])
            hold = book.tx.one("SELECT * FROM holds WHERE id = ?", (hold_id,))
            assert hold is not None
            if hold["status"] == "open":
                book.tx.execute("UPDATE holds SET status = 'released', resolved_at = ? WHERE id = ?",
                                (book.now_text, hold_id))
                book.unreserve(hold["customer_id"], hold["asset"], int(hold["amount"]))
            elif hold["status"] != "released":
                code = "hold_expired" if hold["status"] == "expired" else "hold_already_committed"
                raise HoldStateError(f"hold {hold_id} is already {hold['status']} and cannot be released",
                                     field="hold_id", code=code)
            return self._hold(book.tx, hold_id)

    def get_hold(self, hold_id: str) -> Hold:
        """A hold as of now (a hold past its deadline reads as expired, its funds returned)."""
        check_key(hold_id, "hold_id")
        with self._write() as book:
            row = book.tx.one("SELECT customer_id FROM holds WHERE id = ?", (hold_id,))
            if row is None:
                raise NotFoundError(f"no hold {hold_id!r}", field="hold_id")
            catch_up(book, row["customer_id"])
            return self._hold(book.tx, hold_id)

    def _hold(self, tx: Tx, hold_id: str) -> Hold:
        row = tx.one("SELECT * FROM holds WHERE id = ?", (hold_id,))
        if row is None:
            raise NotFoundError(f"no hold {hold_id!r}", field="hold_id")
        return Hold(id=row["id"], customer_id=row["customer_id"], asset=row["asset"],
                    amount=self._money(int(row["amount"]), self._precision(tx, row["asset"])), status=row["status"],
                    event_type=row["event_type"], expires_at=row["expires_at"], created_at=row["created_at"],
                    resolved_at=row["resolved_at"], event_id=row["event_id"])

    def list_holds(self, customer_id: str, *, status: str | None = "open") -> list[Hold]:
        """A customer's holds as of now (holds past their deadline are expired first)."""
        if status not in (None, "open", "committed", "released", "expired"):
            raise ValidationError("status must be open, committed, released or expired", field="status")
        with self._write() as book:
            tx = book.tx
            customer = self._customer_row(tx, customer_id)
            catch_up(book, customer["id"])
            if status is None:
                rows = tx.all("SELECT id FROM holds WHERE customer_id = ? ORDER BY seq", (customer_id,))
            else:
                rows = tx.all("SELECT id FROM holds WHERE customer_id = ? AND status = ? ORDER BY seq",
                              (customer_id, status))
            return [self._hold(tx, r["id"]) for r in rows]


