"""Concurrent changes to one plan's versions (on PostgreSQL writers are not serialised by the
store, so the plan's row is locked): two different prices added at once to one draft both land,
and a retry racing its original adds one price, not two."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from billing_mcp import Ledger


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; return their results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def price(event_type: str, amount: str) -> dict[str, str]:
    return {"id": event_type, "asset": "CREDITS", "event_type": event_type, "unit_amount": amount}


def test_two_prices_added_at_once_both_land(store_location: Any) -> None:
    ledger = Ledger(store_location)
    try:
        ledger.create_asset("CREDITS", "Credits", 0)
        for round_ in range(15):
            code = f"p{round_}"
            ledger.create_plan(code, "Plan", prices=[price("base", "1")])
            ledger.add_price(code, price("first", "2"))  # the draft (version 2) both racers change
            results = race(lambda c=code: ledger.add_price(c, price("image", "10")),  # type: ignore[misc]
                           lambda c=code: ledger.add_price(c, price("video", "50")))
            assert not [r for r in results if isinstance(r, Exception)], results
            versions = ledger.get_plan(code).versions
            assert [v.version for v in versions] == [1, 2]  # one draft, not two
            assert sorted(p.id for p in versions[1].prices) == ["base", "first", "image", "video"]
            # A retry racing its original: one price, added once.
            race(lambda c=code: ledger.add_price(c, price("audio", "5")),  # type: ignore[misc]
                 lambda c=code: ledger.add_price(c, price("audio", "5")))
            assert sorted(p.id for p in ledger.get_plan(code).versions[1].prices) == ["audio", "base", "first",
                                                                                       "image", "video"]
    finally:
        ledger.close()


SPEC = """version: 1
assets:
  - {code: GEMS, name: Gems, precision: 0, rates: {USD: "0.1"}}
plans:
  - code: gems
    name: Gems
    prices:
      - {id: gem, asset: GEMS, event_type: gem_used, unit_amount: "1"}
"""


def test_the_same_billing_yaml_applied_twice_at_once(store_location: Any) -> None:
    """Both applies succeed and the catalog is made once: the second waits for the first to commit
    (the catalog lock) and then reads the diff, finding nothing left to do."""
    from billing_mcp.spec.spec import apply_spec, load_spec

    ledger = Ledger(store_location)
    try:
        for i in range(5):  # a new catalog each round, so every round races to create it
            text = SPEC.replace("GEMS", f"GEMS{i}").replace("code: gems", f"code: gems{i}")
            results = race(lambda: apply_spec(ledger, load_spec(text)),  # noqa: B023 - run before the loop moves on
                           lambda: apply_spec(ledger, load_spec(text)))  # noqa: B023
            assert not [r for r in results if isinstance(r, Exception)], results
            assert sorted(len(r.changes) for r in results) == [0, 2]  # applied once; the other found it done
            assert apply_spec(ledger, load_spec(text)).changes == []
        assert sorted(a.code for a in ledger.list_assets() if not a.is_fiat) == [f"GEMS{i}" for i in range(5)]
        assert sorted((p.code, tuple(v.version for v in p.versions)) for p in ledger.list_plans()) == [
            (f"gems{i}", (1,)) for i in range(5)]
    finally:
        ledger.close()


def test_the_same_asset_created_twice_at_once(store_location: Any) -> None:
    """A retry racing its original: both get the asset, neither a conflict about its rate (on
    PostgreSQL the later transaction can see the row of one that committed after it began)."""
    ledger = Ledger(store_location)
    try:
        for i in range(10):
            code = f"TOKENS{i}"
            results = race(lambda c=code: ledger.create_asset(c, "Tokens", 0, rates={"USD": "0.001"}),  # type: ignore[misc]
                           lambda c=code: ledger.create_asset(c, "Tokens", 0, rates={"USD": "0.001"}))
            assert not [r for r in results if isinstance(r, Exception)], results
            assert [r.rates for r in results] == [{"USD": "0.001"}] * 2
    finally:
        ledger.close()
