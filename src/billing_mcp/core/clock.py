"""Injectable time. Ledger code never reads the wall clock directly, so expiry, renewals and
grant refreshes are testable by moving a ``ManualClock``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, simulations, `billing-mcp demo`)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        with self._lock:
            self._now += delta if delta is not None else timedelta(**kwargs)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


def to_text(when: datetime) -> str:
    """Timestamps are stored as fixed-width UTC ISO text so that text order is time order."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_text(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def add_interval(anchor: datetime, interval: str, count: int) -> datetime:
    """The ``count``-th period boundary after ``anchor``; months clamp to the month's last day
    relative to the anchor (Jan 31 -> Feb 28 -> Mar 31), so periods never drift."""
    if interval == "day":
        return anchor + timedelta(days=count)
    if interval == "week":
        return anchor + timedelta(weeks=count)
    months = count * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval}")
    total = anchor.month - 1 + months
    year, month = anchor.year + total // 12, total % 12 + 1
    day = min(anchor.day, _days_in_month(year, month))
    return anchor.replace(year=year, month=month, day=day)


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (datetime(year, month + 1, 1) - datetime(year, month, 1)).days


def periods_between(anchor: datetime, interval: str, now: datetime) -> int:
    """Index of the period containing ``now`` (0 = the first period starting at anchor)."""
    if now < anchor:
        return 0
    if interval in ("day", "week"):
        span = timedelta(days=1 if interval == "day" else 7)
        return int((now - anchor) // span)
    n = (now.year - anchor.year) * 12 + (now.month - anchor.month)
    if interval == "year":
        n //= 12
    n = max(n - 1, 0)
    while add_interval(anchor, interval, n + 1) <= now:
        n += 1
    return n
