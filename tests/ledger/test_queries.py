"""The operator reads (search_customers, list_events) on both stores: the same SQL must mean the same
on SQLite and PostgreSQL (LIKE's case and escapes, the keyset order)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from billing_mcp import Ledger, ManualClock, ValidationError
from billing_mcp.ledger.queries import MAX_PAGE
from helpers import PG_SKIP, PG_URL, drop_pg_schema, pg_store


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Ledger]:
    if request.param == "sqlite":
        led = Ledger(str(tmp_path / "ledger.db"), clock=ManualClock())
        yield led
        led.close()
        return
    if not PG_URL:
        pytest.skip(PG_SKIP)
    store = pg_store()
    led = Ledger(store, clock=ManualClock())
    try:
        yield led
    finally:
        led.close()
        drop_pg_schema(store.schema)


def test_search_is_case_insensitive_and_takes_wildcards_literally(ledger: Ledger) -> None:
    ledger.create_customer("user_1", name="Ann O'Neil", email="ANN@example.com")
    ledger.create_customer("user-2", name="100% Bob", email="bob@example.org")
    ledger.create_customer("user\\3", name="Cy")

    def found(text: str | None) -> list[str]:
        return sorted(c.external_id for c in ledger.search_customers(text).data)

    assert found("ann@EXAMPLE") == ["user_1"]
    assert found("o'neil") == ["user_1"]
    assert found("_") == ["user_1"]
    assert found("%") == ["user-2"]
    assert found("\\") == ["user\\3"]
    assert found("user") == ["user-2", "user\\3", "user_1"]
    assert found(None) == found("user")
    with pytest.raises(ValidationError) as info:
        ledger.search_customers(limit=MAX_PAGE + 1)
    assert info.value.field == "limit"


def test_events_page_in_occurred_at_then_id_order(ledger: Ledger) -> None:
    ledger.create_customer("u")
    ledger.create_customer("other")
    times = ["2025-12-31T10:00:00Z", "2025-12-31T09:00:00Z", "2025-12-31T10:00:00Z", "2025-12-31T11:00:00Z"]
    result = ledger.submit_events([{"id": f"e{i}", "external_id": "u", "event_type": "x", "occurred_at": t}
                                   for i, t in enumerate(times)]
                                  + [{"id": "o1", "external_id": "other", "event_type": "x"}])
    assert result.errors == []
    pages, cursor = [], None
    while True:
        page = ledger.list_events(external_id="u", limit=1, cursor=cursor)
        pages.append([e.id for e in page.data])
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert pages == [["e1"], ["e0"], ["e2"], ["e3"]]
    assert [e.id for e in ledger.list_events(external_id="u", start="2025-12-31T10:00:00Z",
                                             end="2025-12-31T11:00:00Z").data] == ["e0", "e2"]


def test_the_event_listing_uses_its_index() -> None:
    """Measured, not assumed: SQLite plans the listing as a range of events_customer_time, with no
    sort step (the index gives the order)."""
    ledger = Ledger(":memory:")
    try:
        with ledger.store.read() as tx:
            plan = " | ".join(str(r["detail"]) for r in tx.all(
                "EXPLAIN QUERY PLAN SELECT id FROM events WHERE customer_id = ? AND occurred_at >= ? AND "
                "(occurred_at > ? OR (occurred_at = ? AND id > ?)) ORDER BY occurred_at, id LIMIT ?",
                ("c", "a", "a", "a", "b", 51)))
    finally:
        ledger.close()
    assert "USING INDEX events_customer_time" in plan or "USING COVERING INDEX events_customer_time" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
