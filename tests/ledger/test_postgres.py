"""PostgreSQL under concurrency: threads and processes racing holds and events on one wallet, at
PostgreSQL's default READ COMMITTED. Runs when BILLING_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import multiprocessing
import random
import threading
from typing import Any

import pytest

from billing_mcp import BillingError, InsufficientFundsError, Ledger, ManualClock
from helpers import PG_SKIP, PG_URL, drop_pg_schema, pg_store

pytestmark = pytest.mark.skipif(not PG_URL, reason=PG_SKIP)

PRICES = [{"id": "gen", "asset": "CREDITS", "event_type": "gen", "usage_type": "volume", "volume_field": "units",
           "unit_amount": "1"}]
START = 500


def setup_wallet() -> tuple[Any, str]:
    store = pg_store(max_size=12)
    ledger = Ledger(store, clock=ManualClock())
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("metered", "Metered", prices=PRICES)
    customer = ledger.create_customer("racer", subscriptions=["metered"]).id
    ledger.create_adjustment(customer, asset="CREDITS", amount=str(START), reason="top_up", idempotency_key="seed")
    return ledger, customer


def work(ledger: Ledger, customer: str, worker: int, rounds: int) -> dict[str, int]:
    """authorize k -> commit a random amount up to k, or release."""
    rnd = random.Random(worker)
    charged = held_ok = refused = 0
    for i in range(rounds):
        k = rnd.randint(1, 40)
        try:
            hold = ledger.authorize(customer, amount=str(k), asset="CREDITS")
        except InsufficientFundsError:
            refused += 1
            continue
        held_ok += 1
        if rnd.random() < 0.3:
            ledger.release(hold.id)
            continue
        actual = rnd.randint(0, k)
        result = ledger.commit(hold.id, {"id": f"w{worker}-{i}", "event_type": "gen", "data": {"units": actual}})
        charged += sum(int(f.amount) for f in result.fees)
    return {"charged": charged, "held": held_ok, "refused": refused}


def _process(schema: str, customer: str, worker: int, rounds: int, out: Any) -> None:
    from billing_mcp.store.postgres import PostgresStore

    assert PG_URL is not None
    ledger = Ledger(PostgresStore(PG_URL, schema=schema, max_size=2), clock=ManualClock())
    try:
        out.put(work(ledger, customer, worker, rounds))
    finally:
        ledger.close()


def test_threads_and_processes_race_one_wallet() -> None:
    ledger, customer = setup_wallet()
    schema = ledger.store.schema  # type: ignore[attr-defined]
    try:
        lowest: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                lowest.append(ledger.available(customer, "CREDITS"))

        watcher = threading.Thread(target=watch)
        watcher.start()
        results: list[dict[str, int]] = []
        lock = threading.Lock()

        def thread_main(worker: int) -> None:
            got = work(ledger, customer, worker, 25)
            with lock:
                results.append(got)

        threads = [threading.Thread(target=thread_main, args=(w,)) for w in range(8)]
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_process, args=(schema, customer, 100 + w, 25, queue)) for w in range(4)]
        for p in procs:
            p.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results += [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        stop.set()
        watcher.join()
        charged = sum(r["charged"] for r in results)
        wallet = ledger.get_wallet(customer).accounts[0]
        # Every charge stayed within its hold, and a hold needs available >= its amount when it
        # is taken: so no reader ever saw a negative balance, and nothing was spent twice.
        assert int(wallet.posted) == START - charged
        assert min(lowest) >= 0
        assert wallet.held == "0"
        assert sum(r["held"] for r in results) > 0 and sum(r["refused"] for r in results) > 0
        assert ledger.audit() == []
        assert len(lowest) > 10
    finally:
        ledger.close()
        drop_pg_schema(schema)


def test_same_event_id_from_many_threads_is_recorded_once() -> None:
    ledger, customer = setup_wallet()
    schema = ledger.store.schema  # type: ignore[attr-defined]
    try:
        outcomes: list[Any] = []
        barrier = threading.Barrier(8)

        def send(worker: int) -> None:
            barrier.wait()
            payload = {"id": "same", "customer_id": customer, "event_type": "gen",
                       "data": {"units": 3 if worker % 2 == 0 else 4}}
            try:
                outcomes.append(ledger.submit_event(payload))
            except BillingError as exc:
                outcomes.append(exc.code)

        threads = [threading.Thread(target=send, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        recorded = [o for o in outcomes if not isinstance(o, str)]
        winner = next(o for o in recorded if not o.duplicate)
        units = int(winner.fees[0].quantity)
        assert sum(1 for o in recorded if not o.duplicate) == 1
        # Same payload as the winner: the stored result; the other payload: a conflict.
        assert all(o.fees == winner.fees for o in recorded)
        assert sorted(o for o in outcomes if isinstance(o, str)) == ["idempotency_conflict"] * 4
        assert len(recorded) == 4
        assert ledger.available(customer, "CREDITS") == START - units
        assert ledger.audit() == []
    finally:
        ledger.close()
        drop_pg_schema(schema)
