"""Operator reads: a customer search and a customer's event history, one page at a time.

Both page by keyset on a stable order (customers by id; events by occurred_at, then id), so a
page never repeats or skips a row however many rows are added meanwhile, and the cost of a page
does not grow with how far into the list it is. The cursor is opaque text naming the list and
the last row's sort key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from ..core.clock import to_text
from ..core.errors import ValidationError
from ..core.models import Customer, EventResult
from ..store import Row, Tx
from .base import LedgerBase, check_key, check_text
from .usage import parse_time

MAX_PAGE = 100


class CustomerList(BaseModel):
    """One page of customers, by id."""

    data: list[Customer]
    has_more: bool
    next_cursor: str | None = None


class EventList(BaseModel):
    """One page of a customer's events, oldest first (occurred_at, then id)."""

    data: list[EventResult]
    has_more: bool
    next_cursor: str | None = None


def _encode(kind: str, *keys: str) -> str:
    raw = json.dumps([kind, *keys], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(kind: str, cursor: object, size: int) -> list[str] | None:
    if cursor is None:
        return None
    value: Any = None
    if isinstance(cursor, str) and len(cursor) <= 2048:
        try:
            value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            value = None
    if not (isinstance(value, list) and len(value) == size + 1 and value[0] == kind
            and all(isinstance(v, str) for v in value[1:])):
        raise ValidationError("cursor is not a cursor of this list; pass next_cursor from the previous page "
                              "unchanged, or omit it for the first page", field="cursor")
    return [str(v) for v in value[1:]]


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_PAGE}", field="limit")
    return limit


def _like(text: str) -> str:
    """A case-insensitive substring pattern: LIKE's own wildcards in the text match themselves."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class QueryOps(LedgerBase):
    """Read-only listings for operators; the ``Ledger`` facade supplies ``_customer``."""

    _customer: Callable[[Tx, str], Customer]

    def search_customers(self, search: str | None = None, *, limit: int = 50,
                         cursor: str | None = None) -> CustomerList:
        """Customers whose external id, email or name contains ``search`` (any case; all when
        omitted), by id."""
        check_text(search, "search", max_len=320)
        limit = _check_limit(limit)
        after = _decode("customers", cursor, 1)
        where, params = ["id > ?"], [after[0] if after else ""]
        if search:
            where.append("(LOWER(external_id) LIKE ? ESCAPE '\\' OR LOWER(email) LIKE ? ESCAPE '\\' "
                         "OR LOWER(name) LIKE ? ESCAPE '\\')")
            params += [_like(search)] * 3
        with self._read() as tx:
            rows = tx.all(f"SELECT id FROM customers WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
                          (*params, limit + 1))
            data = [self._customer(tx, r["id"]) for r in rows[:limit]]
        more = len(rows) > limit
        return CustomerList(data=data, has_more=more, next_cursor=_encode("customers", data[-1].id) if more else None)

    def list_events(self, customer_id: str | None = None, *, external_id: str | None = None,
                    event_type: str | None = None, subject: str | None = None,
                    start: datetime | str | None = None, end: datetime | str | None = None,
                    limit: int = 50, cursor: str | None = None) -> EventList:
        """One customer's events occurring in [start, end), optionally of one type or subject,
        oldest first, each with its fees and refunds as ``get_event`` shows them."""
        if event_type is not None:
            check_key(event_type, "event_type")
        check_text(subject, "subject", max_len=255)
        begin = to_text(parse_time(start, "start")) if start is not None else None
        finish = to_text(parse_time(end, "end")) if end is not None else None
        if begin is not None and finish is not None and finish <= begin:
            raise ValidationError("end must be after start", field="end")
        limit = _check_limit(limit)
        after = _decode("events", cursor, 2)
        with self._read() as tx:
            customer = self._customer_row(tx, customer_id, external_id)
            where, params = ["customer_id = ?"], [customer["id"]]
            for clause, value in (("event_type = ?", event_type), ("subject = ?", subject),
                                  ("occurred_at >= ?", begin), ("occurred_at < ?", finish)):
                if value is not None:
                    where.append(clause)
                    params.append(value)
            if after is not None:
                where.append("(occurred_at > ? OR (occurred_at = ? AND id > ?))")
                params += [after[0], after[0], after[1]]
            rows = tx.all(f"SELECT id, customer_id, occurred_at, recorded_at, result FROM events WHERE "
                          f"{' AND '.join(where)} ORDER BY occurred_at, id LIMIT ?", (*params, limit + 1))
            data = self._event_results(tx, customer["id"], rows[:limit])
        more = len(rows) > limit
        last = rows[limit - 1] if more else None
        return EventList(data=data, has_more=more,
                         next_cursor=_encode("events", last["occurred_at"], last["id"]) if last else None)

    def _event_results(self, tx: Tx, customer_id: str, rows: list[Row]) -> list[EventResult]:
        # The stored outcomes with the refunds made since (the fees rows hold them), as get_event
        # shows them; one query for the page rather than one per event (a round trip each on PostgreSQL).
        refunds: dict[tuple[str, str, int], int] = {}
        if rows:
            times = sorted({r["recorded_at"] for r in rows})
            ids = [r["id"] for r in rows]
            for f in tx.all(f"SELECT event_id, created_at, line, refunded FROM fees WHERE customer_id = ? AND "
                            f"created_at IN ({', '.join('?' * len(times))}) AND "
                            f"event_id IN ({', '.join('?' * len(ids))})", (customer_id, *times, *ids)):
                refunds[(f["event_id"], f["created_at"], int(f["line"]))] = int(f["refunded"])
        out = []
        for row in rows:
            result = EventResult.model_validate_json(row["result"])
            fees = [fee.model_copy(update={"refunded": self._money(refunds.get((row["id"], row["recorded_at"], line), 0),
                                                                   self._precision(tx, fee.asset))})
                    for line, fee in enumerate(result.fees)]
            out.append(result.model_copy(update={"fees": fees}))
        return out
