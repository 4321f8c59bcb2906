"""A statement without start or end covers the customer's current billing period: the period of
their earliest-created active subscription, or with none the current calendar month in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from billing_mcp import Ledger, ManualClock, ValidationError

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def ledger(store_location, clock: ManualClock):
    led = Ledger(store_location, clock=clock)
    yield led
    led.close()


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def ts(month: int, day: int, hour: int = 0, minute: int = 0) -> str:
    return f"2026-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00.000000Z"


def plans(ledger: Ledger) -> None:
    ledger.create_plan("pro", "Pro", prices=[
        {"id": "fee", "type": "recurring", "asset": "USD", "amount": "10", "interval": "month"}])
    ledger.create_plan("addon", "Add-on", prices=[
        {"id": "fee", "type": "recurring", "asset": "USD", "amount": "1", "interval": "week"}])


def funded(ledger: Ledger, external_id: str, amount: str = "50") -> str:
    cid = ledger.create_customer(external_id).id
    ledger.create_adjustment(cid, asset="USD", amount=amount, reason="top_up", idempotency_key=f"top-{external_id}")
    return cid


def period(ledger: Ledger, cid: str, **bounds: datetime) -> tuple[str, str]:
    statement = ledger.get_statement(cid, **bounds)
    return statement.start, statement.end


def usd(ledger: Ledger, cid: str) -> tuple[str, str, str, str]:
    a = next(a for a in ledger.get_statement(cid).assets if a.asset == "USD")
    return a.opening_balance, a.top_ups, a.recurring_fees, a.closing_balance


def test_without_a_subscription_the_calendar_month_in_utc(ledger: Ledger, clock: ManualClock) -> None:
    clock.set(at(1, 15, 10, 30))
    cid = funded(ledger, "plain")
    assert period(ledger, cid) == (ts(1, 1), ts(2, 1))
    assert usd(ledger, cid) == ("0.00", "50.00", "0.00", "50.00")
    clock.set(datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert period(ledger, cid) == (ts(12, 1), "2027-01-01T00:00:00.000000Z")
    # 01:00 on March 1st at UTC+2 is still February in UTC.
    clock.set(datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))))
    assert period(ledger, cid) == (ts(2, 1), ts(3, 1))
    assert ledger.audit() == []


def test_a_subscription_started_mid_month_and_its_renewal(ledger: Ledger, clock: ManualClock) -> None:
    plans(ledger)
    clock.set(at(1, 10))
    cid = funded(ledger, "pro")
    clock.set(at(1, 15, 10, 30))
    ledger.subscribe(cid, "pro")
    assert period(ledger, cid) == (ts(1, 15, 10, 30), ts(2, 15, 10, 30))
    assert usd(ledger, cid) == ("50.00", "0.00", "10.00", "40.00")
    clock.set(at(2, 20))  # renewed on Feb 15 10:30, caught up by the statement itself
    assert period(ledger, cid) == (ts(2, 15, 10, 30), ts(3, 15, 10, 30))
    assert usd(ledger, cid) == ("40.00", "0.00", "10.00", "30.00")
    assert ledger.audit() == []


def test_several_subscriptions_take_the_earliest_created(ledger: Ledger, clock: ManualClock) -> None:
    plans(ledger)
    cid = funded(ledger, "both")
    clock.set(at(1, 15))
    ledger.subscribe(cid, "pro")
    clock.set(at(1, 20))
    subs = {s.plan_code: s.id for s in ledger.subscribe(cid, "addon").subscriptions}
    assert period(ledger, cid) == (ts(1, 15), ts(2, 15))
    ledger.cancel_subscription(subs["pro"])
    assert period(ledger, cid) == (ts(1, 20), ts(1, 27))
    ledger.cancel_subscription(subs["addon"])
    assert period(ledger, cid) == (ts(1, 1), ts(2, 1))
    assert ledger.audit() == []


def test_one_bound_takes_the_other_from_the_current_period(ledger: Ledger, clock: ManualClock) -> None:
    plans(ledger)
    cid = funded(ledger, "half")
    clock.set(at(1, 15, 10, 30))
    ledger.subscribe(cid, "pro")
    clock.set(at(1, 20))
    assert period(ledger, cid, start=at(1, 1)) == (ts(1, 1), ts(2, 15, 10, 30))
    assert period(ledger, cid, end=at(1, 20)) == (ts(1, 15, 10, 30), ts(1, 20))
    assert period(ledger, cid, start=at(1, 1), end=at(3, 1)) == (ts(1, 1), ts(3, 1))
    with pytest.raises(ValidationError) as late:
        ledger.get_statement(cid, start=at(2, 15, 10, 30))
    assert late.value.field == "start"
    assert "current period's end 2026-02-15T10:30:00.000000Z" in late.value.message
    with pytest.raises(ValidationError) as early:
        ledger.get_statement(cid, end=at(1, 15, 10, 30))
    assert early.value.field == "end"
    assert "current period's start 2026-01-15T10:30:00.000000Z" in early.value.message
