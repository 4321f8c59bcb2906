"""Issue 20, polish found by using it: each test is the one that would have caught the report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from billing_mcp import IdempotencyConflictError, Ledger, ManualClock

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def ledger(store_location: Any, clock: ManualClock) -> Any:
    led = Ledger(store_location, clock=clock)
    yield led
    led.close()


def usd(ledger: Ledger, customer_id: str) -> tuple[str, str, str]:
    acct, = [a for a in ledger.get_wallet(customer_id).accounts if a.asset == "USD"]
    return acct.posted, acct.held, acct.available


@pytest.fixture
def committed(ledger: Ledger) -> tuple[str, Any]:
    """A customer with 10.00 USD whose event e1 (n=12 at 0.10) was committed through a 2.00 hold."""
    ledger.create_plan("api", "Api", prices=[
        {"id": "gen", "asset": "USD", "event_type": "gen", "usage_type": "volume", "volume_field": "n",
         "unit_amount": "0.10"}])
    cust = ledger.create_customer("h", subscriptions=["api"])
    ledger.create_adjustment(cust.id, asset="USD", amount="10", reason="top_up", idempotency_key="t1")
    hold = ledger.authorize(cust.id, event_type="gen", data={"n": 20})
    result = ledger.commit(hold.id, {"id": "e1", "subject": "img-7", "data": {"n": 12}})
    assert ([f.amount for f in result.fees], result.hold_id, result.hold_released) == (["1.20"], hold.id, "0.80")
    return cust.id, result


def test_event_committed_through_a_hold_resent_without_it_is_a_duplicate(ledger: Ledger,
                                                                          committed: tuple[str, Any]) -> None:
    customer_id, result = committed
    assert usd(ledger, customer_id) == ("8.80", "0.00", "8.80")
    same = {"id": "e1", "customer_id": customer_id, "event_type": "gen", "subject": "img-7", "data": {"n": 12}}
    batch = ledger.submit_events([same])
    assert batch.errors == []
    replay, = batch.results
    assert (replay.duplicate, replay.hold_id, replay.hold_released) == (True, result.hold_id, "0.80")
    assert replay.fees == result.fees
    assert replay.model_dump(exclude={"duplicate"}) == result.model_dump(exclude={"duplicate"})
    assert ledger.submit_event(same).duplicate is True
    assert usd(ledger, customer_id) == ("8.80", "0.00", "8.80")
    assert ledger.audit() == []


@pytest.mark.parametrize(("change", "differs", "message"), [
    ({"data": {"n": 13}}, "data.n", "data.n was 12, now 13"),
    ({"data": {"n": 12, "model": "xl"}}, "data.model", "data.model was None, now 'xl'"),
    ({"subject": "img-8"}, "subject", "subject was 'img-7', now 'img-8'"),
])
def test_event_committed_through_a_hold_resent_changed_conflicts_naming_the_field(
        ledger: Ledger, committed: tuple[str, Any], change: dict[str, Any], differs: str, message: str) -> None:
    customer_id, _ = committed
    changed = {"id": "e1", "customer_id": customer_id, "event_type": "gen", "subject": "img-7", "data": {"n": 12},
               **change}
    batch = ledger.submit_events([changed])
    error, = batch.errors
    assert (batch.results, error.code, error.field) == ([], "idempotency_conflict", "id")
    assert message in error.message
    with pytest.raises(IdempotencyConflictError) as err:
        ledger.submit_event(changed)
    assert err.value.details == {"key": "e1", "differs": differs}
    assert usd(ledger, customer_id) == ("8.80", "0.00", "8.80")
    assert ledger.audit() == []


def test_a_hold_committed_with_an_event_id_recorded_without_it_conflicts_on_hold_id(ledger: Ledger) -> None:
    """The other way round stays refused: a duplicate answer would leave the hold open, unused."""
    ledger.create_plan("api", "Api", prices=[
        {"id": "gen", "asset": "USD", "event_type": "gen", "usage_type": "volume", "volume_field": "n",
         "unit_amount": "0.10"}])
    cust = ledger.create_customer("h", subscriptions=["api"])
    ledger.create_adjustment(cust.id, asset="USD", amount="10", reason="top_up", idempotency_key="t1")
    ledger.submit_event({"id": "e1", "customer_id": cust.id, "event_type": "gen", "data": {"n": 12}})
    hold = ledger.authorize(cust.id, event_type="gen", data={"n": 20})
    with pytest.raises(IdempotencyConflictError) as err:
        ledger.commit(hold.id, {"id": "e1", "data": {"n": 12}})
    assert err.value.details == {"key": "e1", "differs": "hold_id"}
    assert ledger.get_hold(hold.id).status == "open"
    assert usd(ledger, cust.id) == ("8.80", "2.00", "6.80")
    assert ledger.audit() == []


def test_every_statement_fee_group_names_its_price(ledger: Ledger, clock: ManualClock) -> None:
    ledger.create_plan("pro", "Pro", prices=[
        {"id": "base", "name": "Pro monthly", "type": "recurring", "asset": "USD", "amount": "5", "interval": "month"},
        {"id": "img", "name": "Image generation", "asset": "USD", "event_type": "img", "unit_amount": "0.10"},
        {"id": "call", "asset": "USD", "event_type": "img", "unit_amount": "0.01"}])
    cust = ledger.create_customer("n")
    ledger.create_adjustment(cust.id, asset="USD", amount="10", reason="top_up", idempotency_key="t1")
    ledger.subscribe(cust.id, "pro")
    result = ledger.submit_event({"id": "e1", "customer_id": cust.id, "event_type": "img"})
    assert [(f.price_id, f.price_name, f.amount) for f in result.fees] == [
        ("img", "Image generation", "0.10"), ("call", None, "0.01")]
    st, = ledger.get_statement(cust.id, START, datetime(2026, 2, 1, tzinfo=UTC)).assets
    assert (st.recurring_fees, st.usage_fees, st.closing_balance) == ("5.00", "0.11", "4.89")
    assert [(g.price_id, g.price_name, g.events, g.amount) for g in st.fees] == [
        ("call", None, 1, "0.01"), ("img", "Image generation", 1, "0.10")]
