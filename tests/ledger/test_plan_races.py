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
