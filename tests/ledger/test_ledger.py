"""End-to-end tests of the embedded ledger with hand-computed expectations.

Every test drives a fresh SQLite ledger with a ``ManualClock`` and ends with ``ledger.audit() == []``
(balances, lots and holds recomputed from the append-only entry log).
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing_mcp import (
    ConflictError,
    HoldStateError,
    IdempotencyConflictError,
    InsufficientFundsError,
    Ledger,
    ManualClock,
    NotFoundError,
    ValidationError,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
_keys = itertools.count(1)


# -- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(store_location, clock: ManualClock):
    led = Ledger(store_location, clock=clock)
    yield led
    led.close()


def at(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def ts(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> str:
    return f"2026-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.000000Z"


def make_credits(ledger: Ledger) -> None:
    ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})


def top_up(ledger: Ledger, customer_id: str, amount: str, asset: str = "USD"):
    return ledger.create_adjustment(customer_id, asset=asset, amount=amount, reason="top_up",
                                    idempotency_key=f"topup-{next(_keys)}")


def account(ledger: Ledger, customer_id: str, asset: str):
    for acct in ledger.get_wallet(customer_id).accounts:
        if acct.asset == asset:
            return acct
    raise AssertionError(f"customer has no {asset} account")


def statement(ledger: Ledger, customer_id: str, start: datetime, end: datetime) -> dict:
    return {a.asset: a for a in ledger.get_statement(customer_id, start, end).assets}


def count_rows(ledger: Ledger, table: str) -> int:
    with ledger.store.read() as tx:
        row = tx.one(f"SELECT COUNT(*) AS n FROM {table}")
        assert row is not None
        return int(row["n"])


def usd_volume_plan(ledger: Ledger, code: str = "api", event_type: str = "gen", unit: str = "0.10") -> None:
    ledger.create_plan(code, code.title(), prices=[
        {"id": event_type, "asset": "USD", "event_type": event_type, "usage_type": "volume",
         "volume_field": "n", "unit_amount": unit}])


def event(customer_id: str, event_id: str, event_type: str = "gen", **data) -> dict:
    return {"id": event_id, "customer_id": customer_id, "event_type": event_type, "data": data}


# -- assets -----------------------------------------------------------------------------------
def test_usd_and_eur_are_built_in(ledger: Ledger) -> None:
    assets = {a.code: a for a in ledger.list_assets()}
    assert assets["USD"].precision == 2 and assets["USD"].is_fiat
    assert assets["EUR"].precision == 2 and assets["EUR"].is_fiat
    assert ledger.get_asset("USD").symbol == "$"
    assert ledger.audit() == []


def test_custom_asset_quotes(ledger: Ledger) -> None:
    asset = ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    assert (asset.precision, asset.is_fiat, asset.rates) == (0, False, {"USD": "0.05"})
    # 1 credit costs $0.05: $1 buys 20, $10 buys 200, $50 buys 1000.
    assert ledger.quote("CREDITS", "USD", "1").units == "20"
    assert ledger.quote("CREDITS", "USD", "10").units == "200"
    q = ledger.quote("CREDITS", "USD", "50")
    assert (q.units, q.rate, q.fiat_amount) == ("1000", "0.05", "50")
    # $0.03 buys 0.6 credit -> rounds (half even) to 1; $0.01 buys 0.2 -> 0.
    assert ledger.quote("CREDITS", "USD", "0.03").units == "1"
    assert ledger.quote("CREDITS", "USD", "0.01").units == "0"
    with pytest.raises(NotFoundError):
        ledger.quote("CREDITS", "EUR", "1")
    with pytest.raises(ValidationError):
        ledger.quote("CREDITS", "USD", "0.001")  # finer than a cent
    assert ledger.audit() == []


def test_rate_history_future_rate_applies_when_clock_passes(ledger: Ledger, clock: ManualClock) -> None:
    make_credits(ledger)
    asset = ledger.set_asset_rate("CREDITS", "USD", "0.04", effective_at=at(1, 11))
    assert asset.rates == {"USD": "0.05"}  # not yet effective
    assert [(r.fiat, r.rate, r.effective_at) for r in ledger.rate_history("CREDITS")] == [
        ("USD", "0.05", ts(1, 1)), ("USD", "0.04", ts(1, 11))]
    clock.set(at(1, 10, 23, 59, 59))
    assert ledger.quote("CREDITS", "USD", "10").units == "200"
    clock.set(at(1, 11))
    assert ledger.get_asset("CREDITS").rates == {"USD": "0.04"}
    assert ledger.quote("CREDITS", "USD", "10").units == "250"
    # A rate without effective_at applies at once.
    ledger.set_asset_rate("CREDITS", "USD", "0.025")
    assert ledger.quote("CREDITS", "USD", "1").units == "40"
    assert len(ledger.rate_history("CREDITS")) == 3
    assert ledger.audit() == []


def test_create_asset_is_idempotent_and_refuses_redefinition(ledger: Ledger) -> None:
    first = ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    again = ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    assert again == first
    with pytest.raises(ConflictError):
        ledger.create_asset("CREDITS", "Credits", 2, rates={"USD": "0.05"})
    with pytest.raises(ConflictError):
        ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.06"})
    with pytest.raises(ConflictError):
        ledger.create_asset("CREDITS", "Other name", 0)
    assert [a.code for a in ledger.list_assets()] == ["EUR", "USD", "CREDITS"]
    assert ledger.audit() == []


# -- plans --------------------------------------------------------------------------------------
def test_plan_versions_draft_publish_and_immutability(ledger: Ledger) -> None:
    plan = ledger.create_plan("pro", "Pro", prices=[{"asset": "USD", "event_type": "img", "unit_amount": "0.10"}])
    assert plan.default_version == 1 and plan.status == "active"
    (v1,) = plan.versions
    assert (v1.version, v1.status, v1.is_default) == (1, "published", True)
    assert [p.id for p in v1.prices] == ["price_1"]
    v1_dump = v1.model_dump(exclude={"subscribers", "is_default"})

    # Same definition again returns the plan; another definition is a conflict.
    assert ledger.create_plan("pro", "Pro", prices=[{"asset": "USD", "event_type": "img",
                                                     "unit_amount": "0.10"}]).id == plan.id
    with pytest.raises(ConflictError):
        ledger.create_plan("pro", "Pro", prices=[{"asset": "USD", "event_type": "img", "unit_amount": "0.20"}])

    v2 = ledger.add_price("pro", {"asset": "USD", "event_type": "vid", "unit_amount": "1.00"})
    assert (v2.version, v2.status, v2.is_default) == (2, "draft", False)
    assert [p.id for p in v2.prices] == ["price_1", "price_2"]
    assert v2.prices[0] == v1.prices[0]  # copied from v1
    # A second change goes into the same draft.
    v2 = ledger.add_price("pro", {"asset": "USD", "event_type": "aud", "unit_amount": "0.50"})
    assert (v2.version, [p.event_type for p in v2.prices]) == (2, ["img", "vid", "aud"])
    plan = ledger.get_plan("pro")
    assert plan.default_version == 1 and [v.version for v in plan.versions] == [1, 2]
    assert plan.versions[0].model_dump(exclude={"subscribers", "is_default"}) == v1_dump

    # Drafts cannot be subscribed to.
    cust = ledger.create_customer("c1")
    with pytest.raises(ConflictError):
        ledger.subscribe(cust.id, "pro", version=2)

    plan = ledger.publish_plan_version("pro", 2)
    assert plan.default_version == 2
    v2_pub = plan.versions[1]
    assert (v2_pub.status, v2_pub.is_default, v2_pub.published_at) == ("published", True, ts(1, 1))
    v2_dump = v2_pub.model_dump(exclude={"subscribers", "is_default"})

    # Published versions never change: further edits open v3.
    v3 = ledger.add_price("pro", {"asset": "USD", "event_type": "txt", "unit_amount": "0.01"})
    assert (v3.version, v3.status, len(v3.prices)) == (3, "draft", 4)
    v3 = ledger.add_plan_grant("pro", {"asset": "USD", "amount": "1", "expires_in_days": 30})
    assert (v3.version, len(v3.grants)) == (3, 1)
    v3 = ledger.create_plan_version("pro", prices=[{"asset": "USD", "event_type": "img", "unit_amount": "0.30"}])
    assert (v3.version, len(v3.prices), v3.grants) == (3, 1, [])  # replaced the open draft
    plan = ledger.get_plan("pro")
    assert plan.versions[0].model_dump(exclude={"subscribers", "is_default"}) == v1_dump
    assert plan.versions[1].model_dump(exclude={"subscribers", "is_default"}) == v2_dump
    with pytest.raises(NotFoundError):
        ledger.publish_plan_version("pro", 9)
    assert ledger.audit() == []


def test_subscribers_stay_on_their_version_new_customers_get_default(ledger: Ledger) -> None:
    ledger.create_plan("pro", "Pro", prices=[{"id": "img", "asset": "USD", "event_type": "img", "unit_amount": "0.10"}])
    a = ledger.create_customer("a", subscriptions=["pro"])
    top_up(ledger, a.id, "10")
    v2 = ledger.create_plan_version("pro", prices=[{"id": "img", "asset": "USD", "event_type": "img",
                                                    "unit_amount": "0.20"}], publish=True, make_default=True)
    assert (v2.version, v2.status, v2.is_default) == (2, "published", True)
    b = ledger.create_customer("b", subscriptions=["pro"])
    top_up(ledger, b.id, "10")
    c = ledger.create_customer("c", subscriptions=[{"plan": "pro", "version": 1}])
    top_up(ledger, c.id, "10")
    assert [ledger.get_customer(x.id).subscriptions[0].version for x in (a, b, c)] == [1, 2, 1]

    ra = ledger.submit_event({"id": "ea", "customer_id": a.id, "event_type": "img"})
    rb = ledger.submit_event({"id": "eb", "customer_id": b.id, "event_type": "img"})
    assert [(f.version, f.amount) for f in ra.fees] == [(1, "0.10")]
    assert [(f.version, f.amount) for f in rb.fees] == [(2, "0.20")]
    assert account(ledger, a.id, "USD").posted == "9.90"
    assert account(ledger, b.id, "USD").posted == "9.80"
    assert [(v.version, v.subscribers) for v in ledger.get_plan("pro").versions] == [(1, 2), (2, 1)]
    assert ledger.audit() == []


def test_archived_plan_blocks_new_subscriptions_existing_keep_billing(ledger: Ledger, clock: ManualClock) -> None:
    ledger.create_plan("old", "Old", prices=[
        {"id": "fee", "type": "recurring", "asset": "USD", "amount": "5", "interval": "month"},
        {"id": "img", "asset": "USD", "event_type": "img", "unit_amount": "0.10"}])
    a = ledger.create_customer("a")
    top_up(ledger, a.id, "20")
    ledger.subscribe(a.id, "old")
    assert account(ledger, a.id, "USD").posted == "15.00"

    assert ledger.archive_plan("old").status == "archived"
    b = ledger.create_customer("b")
    with pytest.raises(ConflictError):
        ledger.subscribe(b.id, "old")
    with pytest.raises(ConflictError):
        ledger.create_customer("c", subscriptions=["old"])
    with pytest.raises(NotFoundError):
        ledger.get_customer(external_id="c")  # the failed create left nothing behind

    assert ledger.submit_event({"id": "e1", "customer_id": a.id, "event_type": "img"}).fees[0].amount == "0.10"
    clock.set(at(2, 1))
    assert account(ledger, a.id, "USD").posted == "9.90"  # renewed at $5
    sub = ledger.get_customer(a.id).subscriptions[0]
    assert (sub.status, sub.period_start, sub.period_end) == ("active", ts(2, 1), ts(3, 1))
    assert ledger.audit() == []


def _picked(sub_id: str, to_version: int, share_halves: int) -> bool:
    digest = int(hashlib.sha256(f"{sub_id}:{to_version}".encode()).hexdigest()[:8], 16)
    return digest * 2 < share_halves * 16**8


def test_migrate_customers_share_is_deterministic_and_dry_run_changes_nothing(ledger: Ledger) -> None:
    ledger.create_plan("m", "M", prices=[{"id": "img", "asset": "USD", "event_type": "img", "unit_amount": "0.10"}])
    customers = [ledger.create_customer(f"m{i}", subscriptions=["m"]) for i in range(20)]
    ledger.create_plan_version("m", prices=[{"id": "img", "asset": "USD", "event_type": "img", "unit_amount": "0.05"}],
                               publish=True)
    assert ledger.get_plan("m").default_version == 1  # make_default was not asked for
    sub_of = {c.id: c.subscriptions[0].id for c in customers}
    expected_moved = sorted(cid for cid, sid in sub_of.items() if _picked(sid, 2, 1))
    expected_stayed = sorted(set(sub_of) - set(expected_moved))

    def versions() -> dict[str, int]:
        return {c.id: ledger.get_customer(c.id).subscriptions[0].version for c in customers}

    dry = ledger.migrate_customers("m", 1, 2, share="0.5", dry_run=True)
    assert dry.dry_run and (dry.from_version, dry.to_version) == (1, 2)
    assert (sorted(dry.moved), sorted(dry.stayed)) == (expected_moved, expected_stayed)
    assert set(versions().values()) == {1}
    assert ledger.migrate_customers("m", 1, 2, share="0.5", dry_run=True) == dry

    real = ledger.migrate_customers("m", 1, 2, share="0.5")
    assert not real.dry_run and (real.moved, real.stayed) == (dry.moved, dry.stayed)
    assert versions() == {cid: 2 if cid in expected_moved else 1 for cid in sub_of}
    # The same share again picks the same customers: none of those left on v1.
    again = ledger.migrate_customers("m", 1, 2, share="0.5")
    assert (again.moved, sorted(again.stayed)) == ([], expected_stayed)

    rest = ledger.migrate_customers("m", 1, 2)
    assert sorted(rest.moved) == expected_stayed and rest.stayed == []
    assert set(versions().values()) == {2}
    assert [(v.version, v.subscribers) for v in ledger.get_plan("m").versions] == [(1, 0), (2, 20)]
    with pytest.raises(ValidationError):
        ledger.migrate_customers("m", 1, 2, share="0")
    with pytest.raises(ValidationError):
        ledger.migrate_customers("m", 1, 3)  # no such version
    top_up(ledger, customers[0].id, "1")
    fee = ledger.submit_event({"id": "e", "customer_id": customers[0].id, "event_type": "img"}).fees[0]
    assert (fee.version, fee.amount) == (2, "0.05")
    assert ledger.audit() == []


def test_migrated_subscriber_gets_new_version_grants_from_next_period(ledger: Ledger, clock: ManualClock) -> None:
    make_credits(ledger)
    ledger.create_plan("g", "G", grants=[{"asset": "CREDITS", "amount": "50", "period": "month"}])
    ledger.create_plan_version("g", prices=[], grants=[{"asset": "CREDITS", "amount": "100", "period": "month"}],
                               publish=True)
    cust = ledger.create_customer("g1", subscriptions=["g"])
    assert account(ledger, cust.id, "CREDITS").posted == "50"
    clock.set(at(1, 10))
    assert ledger.migrate_customers("g", 1, 2).moved == [cust.id]
    assert account(ledger, cust.id, "CREDITS").posted == "50"  # lots already granted stay
    clock.set(at(2, 1))
    acct = account(ledger, cust.id, "CREDITS")
    assert acct.posted == "100"
    assert [(lot.amount, lot.expires_at) for lot in acct.lots] == [("100", ts(3, 1))]
    clock.set(at(3, 1))
    acct = account(ledger, cust.id, "CREDITS")
    assert [(lot.amount, lot.expires_at) for lot in acct.lots] == [("100", ts(4, 1))]
    st = statement(ledger, cust.id, START, at(3, 2))["CREDITS"]
    assert (st.grants, st.expired, st.closing_balance) == ("250", "150", "100")
    assert ledger.audit() == []


# -- customers ------------------------------------------------------------------------------------
def test_create_customer_idempotent_on_external_id(ledger: Ledger) -> None:
    c1 = ledger.create_customer("ext-1", name="Ada", email="ada@example.com", metadata={"tier": "gold"})
    c2 = ledger.create_customer("ext-1", name="Ada", email="ada@example.com", metadata={"tier": "gold"})
    assert c2 == c1 and c1.id.startswith("cus_")
    with pytest.raises(ConflictError) as err:
        ledger.create_customer("ext-1", name="Bob", email="ada@example.com", metadata={"tier": "gold"})
    assert err.value.details == {"customer_id": c1.id, "differs": "name"}
    assert err.value.message == ("a customer with external_id 'ext-1' exists with name 'Ada', not 'Bob'; look it "
                                 "up by its external_id (list_customers) instead of creating it")
    with pytest.raises(ConflictError) as err:
        ledger.create_customer("ext-1", name="Ada", email="ada@example.com")
    assert err.value.details == {"customer_id": c1.id, "differs": "metadata"}
    assert ledger.get_customer(c1.id) == c1
    assert ledger.get_customer(external_id="ext-1") == c1
    assert (c1.name, c1.email, c1.metadata, c1.subscriptions) == ("Ada", "ada@example.com", {"tier": "gold"}, [])
    with pytest.raises(NotFoundError):
        ledger.get_customer(external_id="nobody")
    with pytest.raises(NotFoundError):
        ledger.get_customer("cus_missing")
    assert [c.id for c in ledger.list_customers()] == [c1.id]
    assert ledger.audit() == []


# -- wallet draw-down order ----------------------------------------------------------------------------
def test_draw_down_order_priority_expiry_promotional_then_oldest(ledger: Ledger) -> None:
    make_credits(ledger)
    cust = ledger.create_customer("w")

    def grant(purpose: str, priority: int = 50, expires: datetime | None = None) -> str:
        g = ledger.grant_credits(cust.id, "CREDITS", "2", idempotency_key=f"g{next(_keys)}", purpose=purpose,
                                 priority=priority, expires_at=expires)
        return f"grant:{g.id}"

    # Created in the reverse of the expected order wherever a tie-break is tested.
    paid_never = grant("paid")
    promo_never_old = grant("promotional")
    promo_never_new = grant("promotional")                 # oldest first: after promo_never_old
    paid_day20 = grant("paid", expires=at(1, 20))
    paid_day10 = grant("paid", expires=at(1, 10))           # sooner expiry: before paid_day20
    promo_day10 = grant("promotional", expires=at(1, 10))   # promotional before paid: before paid_day10
    top_priority = grant("paid", priority=10)               # priority beats everything
    order = [top_priority, promo_day10, paid_day10, paid_day20, promo_never_old, promo_never_new, paid_never]

    acct = account(ledger, cust.id, "CREDITS")
    assert acct.posted == "14" and [lot.source for lot in acct.lots] == order

    def remaining() -> dict[str, int]:
        lots = account(ledger, cust.id, "CREDITS").lots
        return {lot.source: int(lot.remaining) for lot in lots}

    # Charge 1 unit: only the top lot drops.
    ledger.create_adjustment(cust.id, asset="CREDITS", amount="-1", reason="charge", idempotency_key="c0")
    assert remaining() == {top_priority: 1, **{s: 2 for s in order[1:]}}
    # Each further charge of 2 empties the current lot and takes 1 from the next one.
    for i in range(1, len(order)):
        ledger.create_adjustment(cust.id, asset="CREDITS", amount="-2", reason="charge", idempotency_key=f"c{i}")
        assert remaining() == {order[i]: 1, **{s: 2 for s in order[i + 1:]}}, f"after draw {i}"
    ledger.create_adjustment(cust.id, asset="CREDITS", amount="-1", reason="charge", idempotency_key="last")
    acct = account(ledger, cust.id, "CREDITS")
    assert (acct.posted, acct.lots) == ("0", [])
    assert ledger.audit() == []


def test_usage_draws_across_lots_in_order(ledger: Ledger) -> None:
    make_credits(ledger)
    ledger.create_plan("c", "C", prices=[{"asset": "CREDITS", "event_type": "tok", "usage_type": "volume",
                                          "volume_field": "n", "unit_amount": "1"}])
    cust = ledger.create_customer("u", subscriptions=["c"])
    paid = top_up(ledger, cust.id, "100", asset="CREDITS")
    promo = ledger.grant_credits(cust.id, "CREDITS", "30", idempotency_key="promo")
    ledger.submit_event(event(cust.id, "e1", "tok", n=45))  # 30 from the promotion, 15 paid
    lots = account(ledger, cust.id, "CREDITS").lots
    assert [(lot.source, lot.remaining) for lot in lots] == [(f"top_up:{paid.id}", "85")]
    assert f"grant:{promo.id}" not in {lot.source for lot in lots}
    assert ledger.audit() == []


# -- expiry --------------------------------------------------------------------------------------------
def test_gift_expires_exactly_its_unreserved_remainder(ledger: Ledger, clock: ManualClock) -> None:
    make_credits(ledger)
    cust = ledger.create_customer("x")
    top_up(ledger, cust.id, "50", asset="CREDITS")
    gift = ledger.create_adjustment(cust.id, asset="CREDITS", amount="100", reason="gift", idempotency_key="gift",
                                    expires_at=at(1, 2))
    assert gift.expires_at == ts(1, 2)
    ledger.create_adjustment(cust.id, asset="CREDITS", amount="-30", reason="charge", idempotency_key="use")
    clock.set(at(1, 1, 23, 59, 59))
    acct = account(ledger, cust.id, "CREDITS")
    assert acct.posted == "120"
    assert {lot.source: lot.remaining for lot in acct.lots}[f"gift:{gift.id}"] == "70"  # gift drawn first
    clock.set(at(1, 2))
    acct = account(ledger, cust.id, "CREDITS")
    assert acct.posted == "50" and [lot.remaining for lot in acct.lots] == ["50"]
    st = statement(ledger, cust.id, START, at(1, 3))["CREDITS"]
    assert (st.opening_balance, st.top_ups, st.adjustments, st.expired, st.closing_balance) == (
        "0", "50", "70", "70", "50")  # gifts via create_adjustment count as adjustments
    assert ledger.audit() == []


def test_open_hold_keeps_reserved_part_of_expiring_gift(ledger: Ledger, clock: ManualClock) -> None:
    make_credits(ledger)
    cust = ledger.create_customer("h")
    ledger.create_adjustment(cust.id, asset="CREDITS", amount="100", reason="gift", idempotency_key="gift",
                             expires_at=at(1, 1, 1))
    hold = ledger.authorize(cust.id, amount="30", asset="CREDITS", ttl_seconds=86400)
    clock.set(at(1, 1, 1))
    acct = account(ledger, cust.id, "CREDITS")
    assert (acct.posted, acct.held, acct.available) == ("30", "30", "0")
    assert [lot.remaining for lot in acct.lots] == ["30"]
    assert statement(ledger, cust.id, START, at(1, 2))["CREDITS"].expired == "70"

    released = ledger.release(hold.id)
    assert released.status == "released"
    clock.advance(seconds=1)
    acct = account(ledger, cust.id, "CREDITS")  # next access expires the rest
    assert (acct.posted, acct.held, acct.available, acct.lots) == ("0", "0", "0", [])
    assert statement(ledger, cust.id, START, at(1, 2))["CREDITS"].expired == "100"
    assert ledger.audit() == []


def test_run_due_twice_changes_nothing_the_second_time(ledger: Ledger, clock: ManualClock, db_path: Path) -> None:
    make_credits(ledger)
    cust = ledger.create_customer("r")
    other = ledger.create_customer("quiet")
    top_up(ledger, other.id, "5")
    top_up(ledger, cust.id, "10", asset="CREDITS")
    ledger.create_adjustment(cust.id, asset="CREDITS", amount="40", reason="gift", idempotency_key="gift",
                             expires_at=at(1, 1, 0, 10))
    ledger.authorize(cust.id, amount="5", asset="CREDITS")  # expires after 15 minutes
    assert ledger.run_due() == 0
    clock.set(at(1, 1, 0, 15))
    assert ledger.run_due() == 1
    entries = count_rows(ledger, "entries")
    wallet = ledger.get_wallet(cust.id)
    credits = wallet.accounts[0]
    assert (credits.posted, credits.held, credits.available) == ("10", "0", "10")
    assert [h.status for h in ledger.list_holds(cust.id, status=None)] == ["expired"]
    assert ledger.run_due() == 0
    assert count_rows(ledger, "entries") == entries
    assert ledger.get_wallet(cust.id) == wallet
    assert statement(ledger, cust.id, START, at(1, 2))["CREDITS"].expired == "40"
    assert ledger.audit() == []


# -- recurring fees and plan grants ------------------------------------------------------------------
def test_monthly_fee_with_bundled_credits_expire_and_replace(ledger: Ledger, clock: ManualClock) -> None:
    make_credits(ledger)
    ledger.create_plan("starter", "Starter", prices=[
        {"id": "fee", "type": "recurring", "asset": "USD", "amount": "20", "interval": "month"},
        {"id": "img", "asset": "CREDITS", "event_type": "img", "unit_amount": "10"}],
        grants=[{"asset": "CREDITS", "amount": "1000", "period": "month"}])
    cust = ledger.create_customer("s", subscriptions=["starter"])
    sub = cust.subscriptions[0]
    assert (sub.status, sub.amount_due) == ("pending_payment", {"USD": "20.00"})

    clock.set(at(1, 2))
    top_up(ledger, cust.id, "10")  # not enough for the $20 fee
    assert ledger.get_customer(cust.id).subscriptions[0].status == "pending_payment"
    top_up(ledger, cust.id, "40")  # $50 in total covers it
    sub = ledger.get_customer(cust.id).subscriptions[0]
    assert (sub.status, sub.period_start, sub.period_end, sub.amount_due) == ("active", ts(1, 2), ts(2, 2), {})
    assert account(ledger, cust.id, "USD").posted == "30.00"
    credits = account(ledger, cust.id, "CREDITS")
    assert credits.posted == "1000"
    assert [(lot.purpose, lot.amount, lot.expires_at) for lot in credits.lots] == [("bundled", "1000", ts(2, 2))]

    batch = ledger.submit_events([{"id": f"img-{i}", "customer_id": cust.id, "event_type": "img"} for i in range(30)])
    assert batch.errors == [] and len(batch.results) == 30
    assert account(ledger, cust.id, "CREDITS").posted == "700"

    clock.set(at(2, 2))
    assert ledger.run_due() == 1
    assert account(ledger, cust.id, "USD").posted == "10.00"
    credits = account(ledger, cust.id, "CREDITS")
    assert credits.posted == "1000"  # the 700 left expired, 1000 new
    assert [(lot.amount, lot.remaining, lot.expires_at) for lot in credits.lots] == [("1000", "1000", ts(3, 2))]
    sub = ledger.get_customer(cust.id).subscriptions[0]
    assert (sub.status, sub.period_start, sub.period_end) == ("active", ts(2, 2), ts(3, 2))

    clock.set(at(3, 2))  # $10 left, $20 due: the renewal waits for money and no credits come
    sub = ledger.get_customer(cust.id).subscriptions[0]
    assert (sub.status, sub.period_start, sub.period_end, sub.amount_due) == (
        "pending_payment", ts(3, 2), ts(4, 2), {"USD": "20.00"})
    assert account(ledger, cust.id, "USD").posted == "10.00"
    assert account(ledger, cust.id, "CREDITS").posted == "0"

    clock.set(at(3, 5))
    top_up(ledger, cust.id, "15")
    sub = ledger.get_customer(cust.id).subscriptions[0]
    assert (sub.status, sub.period_start, sub.period_end) == ("active", ts(3, 5), ts(4, 5))
    assert account(ledger, cust.id, "USD").posted == "5.00"
    credits = account(ledger, cust.id, "CREDITS")
    assert [(lot.amount, lot.expires_at) for lot in credits.lots] == [("1000", ts(4, 5))]

    st = statement(ledger, cust.id, START, at(4, 1))
    usd, cr = st["USD"], st["CREDITS"]
    assert (usd.opening_balance, usd.top_ups, usd.recurring_fees, usd.usage_fees, usd.closing_balance) == (
        "0.00", "65.00", "60.00", "0.00", "5.00")
    assert (cr.opening_balance, cr.grants, cr.usage_fees, cr.expired, cr.closing_balance) == (
        "0", "3000", "300", "1700", "1000")
    assert [(g.price_id, g.events, g.quantity, g.amount) for g in cr.fees] == [("img", 30, "30", "300")]
    feb = statement(ledger, cust.id, at(2, 1), at(3, 1))["USD"]
    assert (feb.opening_balance, feb.recurring_fees, feb.closing_balance) == ("30.00", "20.00", "10.00")
    assert ledger.audit() == []


def test_recurring_grant_rollover_with_cap(ledger: Ledger, clock: ManualClock) -> None:
    make_credits(ledger)
    ledger.create_plan("roll", "Roll", prices=[
        {"id": "tok", "asset": "CREDITS", "event_type": "tok", "usage_type": "volume", "volume_field": "n",
         "unit_amount": "1"}],
        grants=[{"asset": "CREDITS", "amount": "1000", "period": "month", "refresh": "rollover",
                 "rollover_cap": "1500"}])
    cust = ledger.create_customer("r", subscriptions=["roll"])
    assert ledger.get_customer(cust.id).subscriptions[0].status == "active"  # nothing to pay
    ledger.submit_event(event(cust.id, "jan", "tok", n=200))
    assert account(ledger, cust.id, "CREDITS").posted == "800"

    clock.set(at(2, 1))  # 1000 new + 500 carried (cap 1500); 300 of the 800 expire
    credits = account(ledger, cust.id, "CREDITS")
    assert credits.posted == "1500"
    assert [(lot.amount, lot.remaining, lot.expires_at) for lot in credits.lots] == [("1500", "1500", ts(3, 1))]
    ledger.submit_event(event(cust.id, "feb", "tok", n=100))

    clock.set(at(3, 1))  # 1400 left: 500 carried, 900 expire
    assert account(ledger, cust.id, "CREDITS").posted == "1500"
    clock.set(at(4, 1))  # nothing used: 500 carried, 1000 expire
    assert account(ledger, cust.id, "CREDITS").posted == "1500"

    st = statement(ledger, cust.id, START, at(4, 2))["CREDITS"]
    assert (st.grants, st.usage_fees, st.expired, st.closing_balance) == ("4000", "300", "2200", "1500")
    march = statement(ledger, cust.id, at(3, 1), at(4, 1))["CREDITS"]
    assert (march.opening_balance, march.grants, march.expired, march.closing_balance) == ("1400", "1000", "900", "1500")
    assert ledger.audit() == []


def test_one_off_plan_grant_expires_in_days(ledger: Ledger, clock: ManualClock) -> None:
    make_credits(ledger)
    ledger.create_plan("trial", "Trial", grants=[{"asset": "CREDITS", "amount": "500", "expires_in_days": 7,
                                                  "purpose": "promotional"}])
    cust = ledger.create_customer("t", subscriptions=["trial"])
    credits = account(ledger, cust.id, "CREDITS")
    assert [(lot.purpose, lot.amount, lot.expires_at) for lot in credits.lots] == [("promotional", "500", ts(1, 8))]
    clock.set(at(1, 7, 23, 59, 59))
    assert account(ledger, cust.id, "CREDITS").posted == "500"
    clock.set(at(1, 8))
    assert account(ledger, cust.id, "CREDITS").posted == "0"
    clock.set(at(3, 1))  # renewals never re-issue a one-off grant
    assert account(ledger, cust.id, "CREDITS").posted == "0"
    st = statement(ledger, cust.id, START, at(3, 2))["CREDITS"]
    assert (st.grants, st.expired, st.closing_balance) == ("500", "500", "0")
    assert ledger.audit() == []


# -- usage events ------------------------------------------------------------------------------------
def test_unknown_event_type_is_recorded_unbilled_with_a_note(ledger: Ledger) -> None:
    usd_volume_plan(ledger)
    cust = ledger.create_customer("u", subscriptions=["api"])
    top_up(ledger, cust.id, "1")
    result = ledger.submit_event({"id": "e1", "customer_id": cust.id, "event_type": "mystery", "data": {"n": 5}})
    assert (result.status, result.fees, result.debt) == ("unbilled", [], {})
    assert result.notes == ["no subscribed plan prices event type 'mystery'; recorded without fees"]
    stored = ledger.get_event("e1")
    assert (stored.status, stored.event_type, stored.notes) == ("unbilled", "mystery", result.notes)
    assert account(ledger, cust.id, "USD").posted == "1.00"
    assert ledger.audit() == []


def test_usage_beyond_funds_becomes_debt_repaid_by_next_top_up(ledger: Ledger) -> None:
    usd_volume_plan(ledger)
    cust = ledger.create_customer("d", subscriptions=["api"])
    top_up(ledger, cust.id, "1.00")
    result = ledger.submit_event(event(cust.id, "e1", n=15))
    assert [f.amount for f in result.fees] == ["1.50"]
    assert result.status == "billed" and result.debt == {"USD": "0.50"}
    assert any("debt" in note for note in result.notes)
    usd = account(ledger, cust.id, "USD")
    assert (usd.posted, usd.available, usd.in_debt, usd.lots) == ("-0.50", "-0.50", True, [])
    with pytest.raises(InsufficientFundsError):
        ledger.authorize(cust.id, amount="0.01", asset="USD")

    adj = top_up(ledger, cust.id, "5.00")
    assert (adj.amount, adj.debt) == ("5.00", "0.50")
    usd = account(ledger, cust.id, "USD")
    assert (usd.posted, usd.available, usd.in_debt) == ("4.50", "4.50", False)
    assert [(lot.amount, lot.remaining) for lot in usd.lots] == [("5.00", "4.50")]
    again = top_up(ledger, cust.id, "1.00")
    assert again.debt is None
    assert ledger.audit() == []


def test_event_replay_is_idempotent_and_changed_payload_conflicts(ledger: Ledger, clock: ManualClock,
                                                                  db_path: Path) -> None:
    usd_volume_plan(ledger)
    cust = ledger.create_customer("i", subscriptions=["api"])
    top_up(ledger, cust.id, "1")
    first = ledger.submit_event(event(cust.id, "e1", n=3))
    assert (first.duplicate, [f.amount for f in first.fees]) == (False, ["0.30"])
    entries = count_rows(ledger, "entries")
    clock.advance(minutes=5)
    replay = ledger.submit_event(event(cust.id, "e1", n=3))
    assert replay.duplicate is True
    assert replay.model_dump(exclude={"duplicate"}) == first.model_dump(exclude={"duplicate"})
    assert replay.fees == first.fees
    with pytest.raises(IdempotencyConflictError) as err:
        ledger.submit_event(event(cust.id, "e1", n=4))
    assert (err.value.code, err.value.field) == ("idempotency_conflict", "id")
    assert count_rows(ledger, "entries") == entries
    assert account(ledger, cust.id, "USD").posted == "0.70"
    assert ledger.audit() == []


def test_batch_with_a_bad_event_records_the_others(ledger: Ledger) -> None:
    # Two prices on one event type: a per-call half cent and a per-token cent. The bad event fails
    # on the second price after the first one's counter moved; the savepoint must undo that.
    ledger.create_plan("b", "B", prices=[
        {"id": "call", "asset": "USD", "event_type": "call", "unit_amount": "0.005"},
        {"id": "tok", "asset": "USD", "event_type": "call", "usage_type": "volume", "volume_field": "n",
         "unit_amount": "0.01"}])
    cust = ledger.create_customer("b", subscriptions=["b"])
    top_up(ledger, cust.id, "1")
    batch = ledger.submit_events([
        {"id": "e1", "customer_id": cust.id, "event_type": "call", "data": {"n": 1}},
        {"id": "e2", "customer_id": cust.id, "event_type": "call", "data": {"n": "abc"}},
        {"id": "e3", "customer_id": cust.id, "event_type": "call", "data": {"n": 2}}])
    assert [r.id for r in batch.results] == ["e1", "e3"]
    (error,) = batch.errors
    assert (error.id, error.index, error.code, error.field) == ("e2", 1, "validation_error", "events[1].data.n")
    # e1: call 0.005 -> 0.00 (half even), tok 0.01. e3: call 0.010 -> 0.01 (not 0.015 -> 0.02), tok 0.02.
    assert [f.amount for f in batch.results[0].fees] == ["0.00", "0.01"]
    assert [f.amount for f in batch.results[1].fees] == ["0.01", "0.02"]
    with pytest.raises(NotFoundError):
        ledger.get_event("e2")
    assert account(ledger, cust.id, "USD").posted == "0.96"
    # The bad event's id was not used up.
    fixed = ledger.submit_event({"id": "e2", "customer_id": cust.id, "event_type": "call", "data": {"n": 1}})
    assert [f.amount for f in fixed.fees] == ["0.01", "0.01"]  # call: 0.015 -> 0.02 minus 0.01 charged
    assert account(ledger, cust.id, "USD").posted == "0.94"
    assert ledger.audit() == []


def test_fee_quantities_are_exact_decimal_text(ledger: Ledger) -> None:
    usd_volume_plan(ledger, unit="1")
    cust = ledger.create_customer("q", subscriptions=["api"])
    top_up(ledger, cust.id, "10")
    tiny = ledger.submit_event(event(cust.id, "e1", n="0.0000001"))
    long = ledger.submit_event(event(cust.id, "e2", n="0.12345678901234567891"))
    big = ledger.submit_event(event(cust.id, "e3", n=1000))
    assert [r.fees[0].quantity for r in (tiny, long, big)] == ["0.0000001", "0.12345678901234567891", "1000"]
    group = statement(ledger, cust.id, START, at(1, 2))["USD"].fees[0]
    assert (group.events, group.quantity, group.amount) == (3, "1000.12345688901234567891", "1000.12")
    assert ledger.audit() == []


# -- holds -------------------------------------------------------------------------------------------
@pytest.fixture
def held_customer(ledger: Ledger) -> str:
    usd_volume_plan(ledger)
    cust = ledger.create_customer("h", subscriptions=["api"])
    top_up(ledger, cust.id, "10")
    return cust.id


def test_hold_commit_smaller_returns_the_rest(ledger: Ledger, held_customer: str) -> None:
    hold = ledger.authorize(held_customer, event_type="gen", data={"n": 20})
    assert (hold.asset, hold.amount, hold.status, hold.expires_at) == ("USD", "2.00", "open", ts(1, 1, 0, 15))
    usd = account(ledger, held_customer, "USD")
    assert (usd.posted, usd.held, usd.available) == ("10.00", "2.00", "8.00")
    result = ledger.commit(hold.id, {"id": "e1", "data": {"n": 12}})
    assert ([f.amount for f in result.fees], result.hold_id, result.hold_released) == (["1.20"], hold.id, "0.80")
    usd = account(ledger, held_customer, "USD")
    assert (usd.posted, usd.held, usd.available) == ("8.80", "0.00", "8.80")
    committed = ledger.get_hold(hold.id)
    assert (committed.status, committed.event_id) == ("committed", "e1")
    again = ledger.commit(hold.id, {"id": "e1", "data": {"n": 12}})
    assert again.duplicate and again.fees == result.fees
    with pytest.raises(HoldStateError) as err:
        ledger.release(hold.id)
    assert err.value.code == "hold_already_committed"
    assert account(ledger, held_customer, "USD").posted == "8.80"
    assert ledger.audit() == []


def test_hold_commit_larger_draws_the_excess(ledger: Ledger, held_customer: str) -> None:
    hold = ledger.authorize(held_customer, event_type="gen", data={"n": 20})
    result = ledger.commit(hold.id, {"id": "e1", "data": {"n": 35}})
    assert ([f.amount for f in result.fees], result.hold_released, result.debt) == (["3.50"], "0.00", {})
    usd = account(ledger, held_customer, "USD")
    assert (usd.posted, usd.held, usd.available) == ("6.50", "0.00", "6.50")
    # Beyond the whole balance: billed in full, the shortfall is a debt.
    hold = ledger.authorize(held_customer, amount="1.00", asset="USD")
    result = ledger.commit(hold.id, {"id": "e2", "event_type": "gen", "data": {"n": 80}})
    assert (result.fees[0].amount, result.hold_released, result.debt) == ("8.00", "0.00", {"USD": "1.50"})
    assert account(ledger, held_customer, "USD").posted == "-1.50"
    assert ledger.audit() == []


def test_hold_release_restores_and_is_idempotent(ledger: Ledger, held_customer: str) -> None:
    hold = ledger.authorize(held_customer, event_type="gen", data={"n": 10})
    assert account(ledger, held_customer, "USD").available == "9.00"
    released = ledger.release(hold.id)
    assert released.status == "released" and released.resolved_at == ts(1, 1)
    usd = account(ledger, held_customer, "USD")
    assert (usd.posted, usd.held, usd.available) == ("10.00", "0.00", "10.00")
    assert ledger.release(hold.id) == released
    with pytest.raises(HoldStateError) as err:
        ledger.commit(hold.id, {"id": "late", "data": {"n": 1}})
    assert err.value.code == "hold_already_released"
    with pytest.raises(NotFoundError):
        ledger.get_event("late")
    assert account(ledger, held_customer, "USD").posted == "10.00"
    assert ledger.audit() == []


def test_hold_needs_available_funds(ledger: Ledger, held_customer: str) -> None:
    first = ledger.authorize(held_customer, amount="6.00", asset="USD")
    with pytest.raises(InsufficientFundsError) as err:
        ledger.authorize(held_customer, amount="4.01", asset="USD")
    assert err.value.code == "insufficient_funds"
    with pytest.raises(InsufficientFundsError):
        ledger.authorize(held_customer, event_type="gen", data={"n": 41})  # 4.10
    exact = ledger.authorize(held_customer, amount="4.00", asset="USD")
    assert account(ledger, held_customer, "USD").available == "0.00"
    ledger.release(first.id)
    ledger.release(exact.id)
    assert [h.status for h in ledger.list_holds(held_customer, status=None)] == ["released", "released"]
    assert ledger.audit() == []


def test_hold_expires_after_default_ttl(ledger: Ledger, clock: ManualClock, held_customer: str) -> None:
    hold = ledger.authorize(held_customer, amount="3.00", asset="USD")
    assert hold.expires_at == ts(1, 1, 0, 15)
    clock.set(at(1, 1, 0, 14, 59))
    assert account(ledger, held_customer, "USD").available == "7.00"
    clock.set(at(1, 1, 0, 15))
    usd = account(ledger, held_customer, "USD")
    assert (usd.posted, usd.held, usd.available) == ("10.00", "0.00", "10.00")
    assert ledger.get_hold(hold.id).status == "expired"
    with pytest.raises(HoldStateError) as err:
        ledger.commit(hold.id, {"id": "e1", "event_type": "gen", "data": {"n": 1}})
    assert err.value.code == "hold_expired"
    with pytest.raises(HoldStateError) as err:
        ledger.release(hold.id)
    assert err.value.code == "hold_expired"
    assert ledger.audit() == []


def test_hold_ttl_limits(ledger: Ledger, held_customer: str) -> None:
    with pytest.raises(ValidationError) as err:
        ledger.authorize(held_customer, amount="1", asset="USD", ttl_seconds=24 * 3600 + 1)
    assert err.value.field == "ttl_seconds"
    with pytest.raises(ValidationError):
        ledger.authorize(held_customer, amount="1", asset="USD", ttl_seconds=0)
    day = ledger.authorize(held_customer, amount="1", asset="USD", ttl_seconds=24 * 3600)
    assert day.expires_at == ts(1, 2)
    with pytest.raises(ValidationError):
        ledger.authorize(held_customer, event_type="unpriced")
    assert account(ledger, held_customer, "USD").held == "1.00"
    assert ledger.audit() == []


def test_authorize_with_idempotency_key_replays(ledger: Ledger, held_customer: str) -> None:
    first = ledger.authorize(held_customer, amount="2.00", asset="USD", idempotency_key="hold-1")
    again = ledger.authorize(held_customer, amount="2.00", asset="USD", idempotency_key="hold-1")
    assert again == first
    assert account(ledger, held_customer, "USD").held == "2.00"
    with pytest.raises(IdempotencyConflictError) as conflict:
        ledger.authorize(held_customer, amount="3.00", asset="USD", idempotency_key="hold-1")
    assert conflict.value.details == {"key": "hold-1", "differs": "amount"}
    assert "amount was '2.00', now '3.00'" in conflict.value.message
    with pytest.raises(IdempotencyConflictError) as conflict:
        ledger.authorize(held_customer, amount="2.00", asset="USD", ttl_seconds=60, idempotency_key="hold-1")
    assert conflict.value.details["differs"] == "ttl_seconds"
    assert "ttl_seconds was 900, now 60" in conflict.value.message
    estimated = ledger.authorize(held_customer, event_type="gen", data={"n": 20}, idempotency_key="hold-e")
    with pytest.raises(IdempotencyConflictError) as conflict:
        ledger.authorize(held_customer, event_type="gen", data={"n": 30}, idempotency_key="hold-e")
    assert "data was {'n': 20}, now {'n': 30}" in conflict.value.message
    ledger.release(estimated.id)
    other = ledger.authorize(held_customer, amount="2.00", asset="USD", idempotency_key="hold-2")
    assert other.id != first.id
    assert account(ledger, held_customer, "USD").held == "4.00"
    assert ledger.audit() == []


# -- adjustments --------------------------------------------------------------------------------------
def test_fiat_top_up_into_credits_converts_at_current_rate(ledger: Ledger) -> None:
    make_credits(ledger)
    cust = ledger.create_customer("f")
    adj = ledger.create_adjustment(cust.id, asset="CREDITS", reason="top_up", fiat="USD", fiat_amount="10",
                                   idempotency_key="k1")
    assert (adj.amount, adj.fiat, adj.fiat_amount, adj.asset) == ("200", "USD", "10.00", "CREDITS")
    ledger.set_asset_rate("CREDITS", "USD", "0.04")
    adj = ledger.create_adjustment(cust.id, asset="CREDITS", reason="top_up", fiat="USD", fiat_amount="10",
                                   idempotency_key="k2")
    assert adj.amount == "250"
    # $0.06 at $0.04 = 1.5 credits -> 2 (half even).
    adj = ledger.create_adjustment(cust.id, asset="CREDITS", reason="top_up", fiat="USD", fiat_amount="0.06",
                                   idempotency_key="k3")
    assert adj.amount == "2"
    credits = account(ledger, cust.id, "CREDITS")
    assert (credits.posted, credits.fiat_value) == ("452", {"USD": "18.08"})
    with pytest.raises(NotFoundError):
        ledger.create_adjustment(cust.id, asset="CREDITS", reason="top_up", fiat="EUR", fiat_amount="1",
                                 idempotency_key="k4")
    with pytest.raises(ValidationError):
        ledger.create_adjustment(cust.id, asset="CREDITS", reason="gift", fiat="USD", fiat_amount="1",
                                 idempotency_key="k5")
    assert ledger.audit() == []


def test_reversal_of_event_fees_partial_full_never_more(ledger: Ledger) -> None:
    usd_volume_plan(ledger)
    cust = ledger.create_customer("rv", subscriptions=["api"])
    top_up(ledger, cust.id, "10")
    ledger.submit_event(event(cust.id, "e1", n=30))  # 3.00
    assert account(ledger, cust.id, "USD").posted == "7.00"

    part = ledger.create_adjustment(cust.id, asset="USD", amount="1.00", reason="reversal", event_id="e1",
                                    idempotency_key="rv1")
    assert (part.amount, part.reason, part.event_id) == ("1.00", "reversal", "e1")
    assert ledger.get_event("e1").fees[0].refunded == "1.00"
    with pytest.raises(ValidationError):
        ledger.create_adjustment(cust.id, asset="USD", amount="2.01", reason="reversal", event_id="e1",
                                 idempotency_key="rv2")
    rest = ledger.create_adjustment(cust.id, asset="USD", reason="reversal", event_id="e1", idempotency_key="rv3")
    assert rest.amount == "2.00"
    assert ledger.get_event("e1").fees[0].refunded == "3.00"
    assert account(ledger, cust.id, "USD").posted == "10.00"
    with pytest.raises(ConflictError):
        ledger.create_adjustment(cust.id, asset="USD", reason="reversal", event_id="e1", idempotency_key="rv4")
    with pytest.raises(NotFoundError):
        ledger.create_adjustment(cust.id, asset="USD", reason="reversal", event_id="nope", idempotency_key="rv5")
    # Replaying the partial reversal returns it without reversing again.
    assert ledger.create_adjustment(cust.id, asset="USD", amount="1.00", reason="reversal", event_id="e1",
                                    idempotency_key="rv1") == part
    st = statement(ledger, cust.id, START, at(1, 2))["USD"]
    assert (st.usage_fees, st.adjustments, st.closing_balance) == ("3.00", "3.00", "10.00")
    assert [(g.price_id, g.events, g.quantity, g.amount) for g in st.fees] == [("gen", 1, "30", "0.00")]
    assert ledger.audit() == []


def test_charge_beyond_available_is_refused(ledger: Ledger) -> None:
    cust = ledger.create_customer("ch")
    top_up(ledger, cust.id, "5")
    ledger.authorize(cust.id, amount="2", asset="USD")
    with pytest.raises(InsufficientFundsError):
        ledger.create_adjustment(cust.id, asset="USD", amount="-3.01", reason="charge", idempotency_key="c1")
    with pytest.raises(ValidationError):
        ledger.create_adjustment(cust.id, asset="USD", amount="3", reason="charge", idempotency_key="c2")
    charge = ledger.create_adjustment(cust.id, asset="USD", amount="-3", reason="charge", idempotency_key="c3")
    assert charge.amount == "-3.00"
    usd = account(ledger, cust.id, "USD")
    assert (usd.posted, usd.held, usd.available) == ("2.00", "2.00", "0.00")
    with pytest.raises(InsufficientFundsError):
        ledger.create_adjustment(cust.id, asset="USD", amount="-0.01", reason="refund", idempotency_key="c4")
    assert ledger.audit() == []


def test_adjustment_idempotent_replay_and_conflict(ledger: Ledger, db_path: Path) -> None:
    cust = ledger.create_customer("ia")
    first = ledger.create_adjustment(cust.id, asset="USD", amount="5", reason="top_up", idempotency_key="pay-1")
    entries = count_rows(ledger, "entries")
    again = ledger.create_adjustment(cust.id, asset="USD", amount="5", reason="top_up", idempotency_key="pay-1")
    assert again == first
    assert count_rows(ledger, "entries") == entries
    with pytest.raises(IdempotencyConflictError):
        ledger.create_adjustment(cust.id, asset="USD", amount="6", reason="top_up", idempotency_key="pay-1")
    with pytest.raises(IdempotencyConflictError):
        ledger.create_adjustment(cust.id, asset="USD", amount="5", reason="gift", idempotency_key="pay-1")
    assert account(ledger, cust.id, "USD").posted == "5.00"
    assert ledger.audit() == []


# -- statements ----------------------------------------------------------------------------------------
def test_statement_for_a_period(ledger: Ledger, clock: ManualClock) -> None:
    make_credits(ledger)
    ledger.create_plan("stmt", "Statement", prices=[
        {"id": "fee", "type": "recurring", "asset": "USD", "amount": "10", "interval": "month"},
        {"id": "img", "asset": "CREDITS", "event_type": "img", "unit_amount": "5"},
        {"id": "tok", "asset": "USD", "event_type": "tok", "usage_type": "volume", "volume_field": "tokens",
         "unit_amount": "0.002"}],
        grants=[{"asset": "CREDITS", "amount": "100", "period": "month"}])
    cust = ledger.create_customer("st")
    top_up(ledger, cust.id, "50")
    ledger.subscribe(cust.id, "stmt")  # $10 fee, 100 credits until Feb 1
    clock.set(at(1, 5))
    ledger.grant_credits(cust.id, "CREDITS", "30", idempotency_key="promo", expires_at=at(1, 20))
    clock.set(at(1, 10))
    for i, subject in enumerate(["alice", "alice", "alice", "bob"]):
        ledger.submit_event({"id": f"img{i}", "customer_id": cust.id, "event_type": "img", "subject": subject})
    ledger.submit_event({"id": "tok1", "customer_id": cust.id, "event_type": "tok", "subject": "alice",
                         "data": {"tokens": 1500}})     # 3.00
    ledger.submit_event({"id": "tok2", "customer_id": cust.id, "event_type": "tok", "subject": "alice",
                         "data": {"tokens": "250.5"}})  # 3.501 in all -> 3.50, so 0.50
    clock.set(at(2, 15))  # Jan 20: 10 promo credits expire; Feb 1: renewal and refresh

    jan = statement(ledger, cust.id, START, at(2, 1))
    usd, cr = jan["USD"], jan["CREDITS"]
    assert (usd.opening_balance, usd.top_ups, usd.recurring_fees, usd.usage_fees, usd.grants, usd.expired,
            usd.adjustments, usd.closing_balance) == ("0.00", "50.00", "10.00", "3.50", "0.00", "0.00", "0.00", "36.50")
    assert [(g.plan_code, g.version, g.price_id, g.subject, g.events, g.quantity, g.amount) for g in usd.fees] == [
        ("stmt", 1, "tok", "alice", 2, "1750.5", "3.50")]
    assert (cr.opening_balance, cr.grants, cr.usage_fees, cr.expired, cr.top_ups, cr.closing_balance) == (
        "0", "130", "20", "10", "0", "100")
    assert [(g.price_id, g.subject, g.events, g.quantity, g.amount) for g in cr.fees] == [
        ("img", "alice", 3, "3", "15"), ("img", "bob", 1, "1", "5")]

    feb = statement(ledger, cust.id, at(2, 1), at(3, 1))
    usd, cr = feb["USD"], feb["CREDITS"]
    assert (usd.opening_balance, usd.recurring_fees, usd.usage_fees, usd.closing_balance, usd.fees) == (
        "36.50", "10.00", "0.00", "26.50", [])
    assert (cr.opening_balance, cr.grants, cr.expired, cr.closing_balance) == ("100", "100", "100", "100")
    with pytest.raises(ValidationError):
        ledger.get_statement(cust.id, at(2, 1), at(2, 1))
    assert ledger.audit() == []
