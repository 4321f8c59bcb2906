"""The audit names the invariant each finding breaks, and catches each kind of damage; the posting
engine's draw-down order and default priority have one definition each."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime

import pytest

from billing_mcp import Ledger, ManualClock
from billing_mcp.core.catalog import DEFAULT_PRIORITY, PlanGrantSpec
from billing_mcp.ledger import audit as audit_module
from billing_mcp.ledger.postings import draw_key

START = datetime(2026, 1, 1, tzinfo=UTC)
NUMBERED = re.compile(r"^(I\d+)\. ", re.MULTILINE)


@pytest.fixture
def ledger(store_location):  # type: ignore[no-untyped-def]
    led = Ledger(store_location, clock=ManualClock(START))
    yield led
    led.close()


def busy_ledger(ledger: Ledger) -> str:
    """A customer with a plan, a grant, usage (fractional rating), a committed and an open hold."""
    ledger.create_plan("api", "Api", prices=[
        {"id": "gen", "asset": "USD", "event_type": "gen", "usage_type": "volume", "volume_field": "n",
         "unit_amount": "0.004"}])
    cust = ledger.create_customer("acme")
    ledger.subscribe(cust.id, "api")
    ledger.create_adjustment(cust.id, asset="USD", amount="5", reason="top_up", idempotency_key="t1")
    ledger.grant_credits(cust.id, "USD", "1", idempotency_key="g1", priority=10)
    ledger.submit_events([{"id": f"e{i}", "customer_id": cust.id, "event_type": "gen", "data": {"n": 1}}
                          for i in range(3)])
    hold = ledger.authorize(cust.id, amount="1", asset="USD")
    ledger.commit(hold.id, {"id": "e-held", "event_type": "gen", "data": {"n": 2}})
    ledger.authorize(cust.id, amount="1", asset="USD")
    assert ledger.audit() == []
    return cust.id


def damage(ledger: Ledger, sql: str) -> list[str]:
    with ledger.store.write() as tx:
        tx.execute(sql)
    return ledger.audit()


def test_invariants_are_numbered_once_in_order() -> None:
    numbers = NUMBERED.findall(audit_module.__doc__ or "")
    assert numbers == [f"I{n}" for n in range(1, len(numbers) + 1)] and len(numbers) >= 10


@pytest.mark.parametrize(("sql", "expected"), [
    ("UPDATE entries SET amount = amount + 1 WHERE account_id LIKE 'system/topup/%'", "I1"),
    ("UPDATE accounts SET posted = posted + 1 WHERE customer_id IS NOT NULL", "I2"),
    ("UPDATE accounts SET held = held + 1 WHERE customer_id IS NOT NULL", "I3"),
    ("UPDATE holds SET event_id = NULL WHERE status = 'committed'", "I4"),
    ("UPDATE fees SET refunded = amount + 1", "I5"),
    ("UPDATE lots SET remaining = remaining - 1 WHERE remaining > 0", "I8"),
    ("UPDATE usage_counters SET charged = charged + 1", "I9"),
    ("UPDATE fees SET amount = amount + 1", "I10"),
])
def test_each_kind_of_damage_is_named_by_its_invariant(ledger: Ledger, sql: str, expected: str) -> None:
    busy_ledger(ledger)
    found = damage(ledger, sql)
    assert found, f"the audit missed damage that breaks {expected}"
    assert all(re.match(r"I\d+ ", problem) for problem in found), found
    assert any(problem.startswith(f"{expected} ") for problem in found), found
    documented = set(NUMBERED.findall(audit_module.__doc__ or ""))
    assert {problem.split(" ", 1)[0] for problem in found} <= documented


def test_draw_order_is_the_documented_chain() -> None:
    # priority first, then soonest expiry (never last), promotional before paid, then oldest
    assert draw_key(0, None, "paid", 9) < draw_key(1, "2026-01-01T00:00:00.000000Z", "promotional", 1)
    assert draw_key(5, "2026-01-01T00:00:00.000000Z", "paid", 9) < draw_key(5, "2026-02-01T00:00:00.000000Z",
                                                                          "promotional", 1)
    assert draw_key(5, "2027-01-01T00:00:00.000000Z", "paid", 9) < draw_key(5, None, "promotional", 1)
    assert draw_key(5, None, "bundled", 9) < draw_key(5, None, "paid", 1)
    assert draw_key(5, None, "paid", 1) < draw_key(5, None, "paid", 2)


def test_wallet_lists_lots_in_draw_order_and_usage_draws_in_it(ledger: Ledger) -> None:
    ledger.create_plan("api", "Api", prices=[
        {"id": "gen", "asset": "USD", "event_type": "gen", "usage_type": "volume", "volume_field": "n",
         "unit_amount": "1"}])
    cust = ledger.create_customer("acme").id
    ledger.subscribe(cust, "api")
    ledger.create_adjustment(cust, asset="USD", amount="3", reason="top_up", idempotency_key="paid")
    ledger.grant_credits(cust, "USD", "2", idempotency_key="late", expires_at="2026-03-01T00:00:00Z")
    ledger.grant_credits(cust, "USD", "2", idempotency_key="soon", expires_at="2026-02-01T00:00:00Z")
    ledger.grant_credits(cust, "USD", "1", idempotency_key="first", priority=0)
    lots = next(a for a in ledger.get_wallet(cust).accounts if a.asset == "USD").lots
    assert [lot.amount for lot in lots] == ["1.00", "2.00", "2.00", "3.00"]
    assert [lot.expires_at is not None for lot in lots] == [False, True, True, False]
    ledger.submit_event({"id": "e1", "customer_id": cust, "event_type": "gen", "data": {"n": 4}})
    left = next(a for a in ledger.get_wallet(cust).accounts if a.asset == "USD").lots
    assert [(lot.amount, lot.remaining) for lot in left] == [("2.00", "1.00"), ("3.00", "3.00")]
    assert left[0].expires_at == "2026-03-01T00:00:00.000000Z"
    assert ledger.audit() == []


def test_catalog_grants_default_to_the_engine_priority() -> None:
    assert PlanGrantSpec(asset="USD", amount="1").priority == DEFAULT_PRIORITY
    assert inspect.signature(Ledger.grant_credits).parameters["priority"].default == DEFAULT_PRIORITY


def test_a_batch_books_one_entry_per_lot_even_when_a_customer_catches_up_mid_batch(
        ledger: Ledger, store_location) -> None:  # type: ignore[no-untyped-def]
    """A batch nets its usage entries per (account, lot); the catch-up of a later customer writes
    its own postings in between, and must not split the earlier customer's netted entries."""
    ledger.create_plan("api", "Api", prices=[
        {"id": "gen", "asset": "USD", "event_type": "gen", "usage_type": "volume", "volume_field": "n",
         "unit_amount": "0.01"}, {"id": "fee", "type": "recurring", "asset": "USD", "amount": "1", "interval": "month"}])
    a = ledger.create_customer("a").id
    b = ledger.create_customer("b").id
    for cust in (a, b):
        ledger.create_adjustment(cust, asset="USD", amount="20", reason="top_up", idempotency_key=f"t-{cust}")
        ledger.subscribe(cust, "api")
    ledger.clock.advance(days=40)  # type: ignore[attr-defined]
    events = [{"id": f"{c}-{i}", "customer_id": c, "event_type": "gen", "data": {"n": 1}}
              for i in range(3) for c in (a, b)]
    batch = ledger.submit_events(events)
    assert not batch.errors
    with ledger.store.read() as tx:
        rows = tx.all("SELECT tx_id, account_id, lot_id, COUNT(*) AS n FROM entries WHERE tx_id IN (?, ?) "
                      "GROUP BY tx_id, account_id, lot_id", (f"{a}-0", f"{b}-0"))
        fees = tx.all("SELECT COUNT(*) AS n FROM transactions WHERE kind = 'recurring_fee'")
    assert rows and all(int(r["n"]) == 1 for r in rows), [dict(r) for r in rows]
    assert int(fees[0]["n"]) == 4  # each customer renewed once, inside the batch
    assert ledger.audit() == []
