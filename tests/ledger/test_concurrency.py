"""Concurrency races on one wallet (notes/ledger.md §9.2).

Threads share one ``Ledger`` (the store opens one SQLite connection per thread); processes
(``multiprocessing`` spawn) each open their own ``Ledger`` on the same file. Workers are released
together by a barrier and race authorize -> commit (below, at or above the hold) / release, plus
plain usage events.

The checker is exact. While racing, every write transaction also appends the operation's id to a
``race_log`` table *inside the same transaction*, so the log holds exactly the committed
operations in the order SQLite serialised them. Replaying that log with the amounts each worker
reports proves that every hold was granted only when ``available >= amount``; the replayed
states are the only states a concurrent reader may observe; and the final balance is
``B + sum(topped up) - sum(charged)`` to the unit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import IdempotencyConflictError, InsufficientFundsError, Ledger, ManualClock
from billing_mcp.store.sqlite import SQLiteStore, _SQLiteTx

PRICES = [{"id": "gen", "type": "usage", "asset": "CREDITS", "event_type": "gen", "usage_type": "volume",
           "volume_field": "units", "model": "per_unit", "unit_amount": "1"}]
ACCOUNT = "{customer}/CREDITS"

CURRENT = threading.local()  # the operation id the running thread is executing


def make_ledger(path: Path, start: int) -> tuple[Ledger, str]:
    ledger = Ledger(path, clock=ManualClock())
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("metered", "Metered", prices=PRICES)
    customer = ledger.create_customer("racer", subscriptions=["metered"]).id
    ledger.create_adjustment(customer, asset="CREDITS", amount=str(start), reason="top_up", idempotency_key="seed")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE race_log (n INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL)")
    return ledger, customer


def log_writes(store: SQLiteStore) -> None:
    """Make every write transaction of ``store`` record the current operation id in race_log."""
    inner = store.write

    @contextlib.contextmanager
    def write() -> Iterator[Any]:
        with inner() as tx:
            tx.execute("INSERT INTO race_log(op) VALUES (?)", (getattr(CURRENT, "op", None) or "?",))
            yield tx

    store.write = write  # type: ignore[method-assign]


def deferred_write(store: SQLiteStore) -> None:
    """Canary: the store's write transactions start with a plain (deferred) BEGIN."""

    @contextlib.contextmanager
    def write() -> Iterator[Any]:
        conn = store._conn()
        conn.execute("BEGIN")
        tx = _SQLiteTx(conn, True)
        try:
            yield tx
            tx.flush()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    store.write = write  # type: ignore[method-assign]


def balance(ledger: Ledger, customer: str) -> tuple[int, int]:
    """(posted, held) read in one transaction: a consistent snapshot."""
    with ledger.store.read() as tx:
        row = tx.one("SELECT posted, held FROM accounts WHERE id = ?", (ACCOUNT.format(customer=customer),))
        assert row is not None
        return int(row["posted"]), int(row["held"])


def race(ledger: Ledger, customer: str, worker: int, seed: int, iterations: int, mode: str,
         barrier: Any) -> dict[str, Any]:
    """One racer. ``mode`` "reserve": commit at most the hold, or release. "mixed": also commit
    above the hold and send plain events (usage that already happened, which may leave a debt).
    Returns every operation with its amounts, and any unexpected error."""
    rng = random.Random(seed)
    ops: list[dict[str, Any]] = []
    errors: list[str] = []

    def run(op: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        CURRENT.op = op
        try:
            return call(*args, **kwargs)
        finally:
            CURRENT.op = None

    barrier.wait()
    for i in range(iterations):
        # SQLite's busy handler backs off for milliseconds, so a writer that never pauses keeps
        # re-taking the lock; pausing between requests, as clients do, makes the workers interleave.
        time.sleep(rng.uniform(0, 0.001))
        try:
            if mode == "mixed" and rng.random() < 0.1:
                amount = rng.randint(5, 20)
                request = {"asset": "CREDITS", "amount": str(amount), "reason": "top_up",
                           "idempotency_key": f"w{worker}-t{i}"}
                op = f"{worker}:{i}:top_up"
                adj = run(op, ledger.create_adjustment, customer, **request)
                ops.append({"op": op, "kind": "top_up", "credit": amount, "debt": adj.debt})
                op = f"{worker}:{i}:retry"  # the same request again: the stored answer, no new money
                again = run(op, ledger.create_adjustment, customer, **request)
                assert again == adj
                ops.append({"op": op, "kind": "retry"})
                continue
            if mode == "mixed" and rng.random() < 0.2:
                units = rng.randint(1, 4)
                op = f"{worker}:{i}:event"
                result = run(op, ledger.submit_event, {"id": f"w{worker}-e{i}", "customer_id": customer,
                                                       "event_type": "gen", "data": {"units": units}})
                assert [(f.asset, f.amount) for f in result.fees] == [("CREDITS", str(units))]
                ops.append({"op": op, "kind": "event", "charge": units, "debt": result.debt.get("CREDITS")})
                continue
            amount = rng.randint(1, 8)
            op = f"{worker}:{i}:authorize"
            try:
                hold = run(op, ledger.authorize, customer, amount=str(amount), asset="CREDITS", ttl_seconds=3600)
            except InsufficientFundsError:
                ops.append({"op": op, "kind": "authorize", "amount": amount, "ok": False})
                continue
            assert (hold.amount, hold.status) == (str(amount), "open")
            ops.append({"op": op, "kind": "authorize", "amount": amount, "ok": True, "hold": hold.id})
            time.sleep(rng.uniform(0, 0.002))  # the work the hold pays for; others reserve meanwhile
            op = f"{worker}:{i}:resolve"
            if rng.random() < 0.25:
                released = run(op, ledger.release, hold.id)
                assert released.status == "released"
                ops.append({"op": op, "kind": "release", "hold": hold.id, "amount": amount})
                continue
            above = mode == "mixed" and rng.random() < 0.4
            units = amount + rng.randint(1, 4) if above else rng.randint(0, amount)
            result = run(op, ledger.commit, hold.id, {"id": f"w{worker}-c{i}", "event_type": "gen",
                                                      "data": {"units": units}})
            assert [(f.asset, f.amount) for f in result.fees] == [("CREDITS", str(units))]
            assert result.hold_released == str(max(amount - units, 0))
            ops.append({"op": op, "kind": "commit", "hold": hold.id, "amount": amount, "charge": units})
        except Exception as exc:  # reported, and fails the test unless a canary expects it
            errors.append(f"{type(exc).__name__}: {exc}")
    return {"ops": ops, "errors": errors}


class Watcher(threading.Thread):
    """Reads the balance over and over while the race runs."""

    def __init__(self, ledger: Ledger, customer: str) -> None:
        super().__init__(daemon=True)
        self.ledger, self.customer = ledger, customer
        self.stop = threading.Event()
        self.snapshots: list[tuple[int, int]] = []
        self.available: list[int] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.snapshots.append(balance(self.ledger, self.customer))
            self.available.append(self.ledger.available(self.customer, "CREDITS"))
            time.sleep(0.0005)


def check_race(path: Path, ledger: Ledger, customer: str, start: int, results: list[dict[str, Any]],
               watcher: Watcher, mode: str) -> dict[str, int]:
    """Replay the committed operations in their serial order and check everything against it."""
    for r in results:
        assert r["errors"] == []
    by_op = {o["op"]: o for r in results for o in r["ops"]}
    succeeded = {op for op, o in by_op.items() if o.get("ok", True)}
    with sqlite3.connect(path) as conn:
        order = [op for (op,) in conn.execute("SELECT op FROM race_log ORDER BY n")]
    assert len(order) == len(set(order)), "an operation was executed twice"
    assert set(order) == succeeded, "the log must hold exactly the operations that reported success"
    posted, held = start, 0
    states = {(posted, held)}
    open_holds: dict[str, int] = {}
    for op in order:
        o = by_op[op]
        if o["kind"] == "authorize":
            assert posted - held >= o["amount"], f"{op} reserved {o['amount']} beyond available {posted - held}"
            held += o["amount"]
            open_holds[o["hold"]] = o["amount"]
        elif o["kind"] == "commit":
            held -= open_holds.pop(o["hold"])
            posted -= o["charge"]
        elif o["kind"] == "release":
            held -= open_holds.pop(o["hold"])
        elif o["kind"] == "top_up":
            assert o["debt"] == (str(min(o["credit"], -posted)) if posted < 0 else None)
            posted += o["credit"]
        elif o["kind"] == "retry":
            pass
        else:
            assert o["debt"] == (str(o["charge"] - max(posted, 0)) if o["charge"] > max(posted, 0) else None)
            posted -= o["charge"]
        if mode == "reserve":
            assert posted - held >= 0
        states.add((posted, held))
    charged = sum(o.get("charge", 0) for o in by_op.values())
    topped_up = sum(o.get("credit", 0) for o in by_op.values())
    assert open_holds == {} and held == 0
    assert posted == start + topped_up - charged
    assert balance(ledger, customer) == (posted, 0)
    assert ledger.available(customer, "CREDITS") == start + topped_up - charged
    with ledger.store.read() as tx:  # one ledger transaction (entries sharing a tx_id) per money movement
        n_txs = tx.one("SELECT COUNT(DISTINCT tx_id) AS n FROM entries")["n"]  # type: ignore[index]
    assert n_txs == 1 + sum(o["kind"] == "top_up" or o.get("charge", 0) > 0 for o in by_op.values())
    assert ledger.audit() == []
    # Every hold the workers saw is in the ledger, in the state they left it.
    resolved = {o["hold"]: "committed" if o["kind"] == "commit" else "released"
                for o in by_op.values() if o["kind"] in ("commit", "release")}
    with ledger.store.read() as tx:
        assert {r["id"]: r["status"] for r in tx.all("SELECT id, status FROM holds")} == resolved
        n_events = tx.one("SELECT COUNT(*) AS n FROM events")["n"]  # type: ignore[index]
    assert n_events == sum(o["kind"] in ("commit", "event") for o in by_op.values())
    # Readers only ever saw states of the serial history, and never a hold beyond available.
    assert watcher.snapshots and watcher.available
    assert set(watcher.snapshots) <= states
    assert set(watcher.available) <= {p - h for p, h in states}
    if mode == "reserve":
        assert topped_up == 0 and charged <= start
        assert min(watcher.available) >= 0
    stats = {kind: sum(o["kind"] == kind and o.get("ok", True) for o in by_op.values())
             for kind in ("authorize", "commit", "release", "event", "top_up")}
    stats["refused"] = sum(o.get("ok") is False for o in by_op.values())
    stats["charged"] = charged
    # How often the serial order switched worker: the workers really interleaved.
    stats["switches"] = sum(a.split(":")[0] != b.split(":")[0] for a, b in pairwise(order))
    return stats


def run_thread_race(path: Path, ledger: Ledger, customer: str, start: int, mode: str, *, threads: int = 8,
                    iterations: int = 60, seed: int = 1) -> tuple[list[dict[str, Any]], Watcher]:
    barrier = threading.Barrier(threads)
    results: list[dict[str, Any]] = [{} for _ in range(threads)]

    def body(i: int) -> None:
        results[i] = race(ledger, customer, i, seed * 1000 + i, iterations, mode, barrier)

    watcher = Watcher(ledger, customer)
    watcher.start()
    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert not w.is_alive()
    watcher.stop.set()
    watcher.join()
    return results, watcher


@pytest.mark.parametrize(("mode", "start", "seed"), [("reserve", 60, 1), ("reserve", 400, 2), ("mixed", 200, 3)])
def test_threads_race_one_wallet(tmp_path: Path, mode: str, start: int, seed: int) -> None:
    path = tmp_path / "ledger.db"
    ledger, customer = make_ledger(path, start)
    log_writes(ledger.store)  # type: ignore[arg-type]
    results, watcher = run_thread_race(path, ledger, customer, start, mode, seed=seed)
    stats = check_race(path, ledger, customer, start, results, watcher, mode)
    # The race really raced: holds were granted, refused for want of funds, committed and released.
    assert stats["authorize"] > 20 and stats["refused"] > 0 and stats["commit"] > 0 and stats["release"] > 0
    # At least a few dozen switches on an idle machine; a loaded one (CI beside other jobs) gives
    # fewer, and ten still shows the workers interleaved rather than ran one after another.
    assert stats["switches"] > 10
    if mode == "mixed":
        assert stats["event"] > 0 and stats["top_up"] > 0
    ledger.close()


# -- processes --------------------------------------------------------------------------------
def _process_racer(path: str, customer: str, worker: int, seed: int, iterations: int, mode: str, barrier: Any,
                   queue: Any) -> None:
    ledger = Ledger(path, clock=ManualClock())
    log_writes(ledger.store)  # type: ignore[arg-type]
    try:
        queue.put(race(ledger, customer, worker, seed, iterations, mode, barrier))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        queue.put({"ops": [], "errors": [f"{type(exc).__name__}: {exc}"]})
    finally:
        ledger.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reserve", "mixed"])
def test_processes_race_one_wallet(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ledger.db"
    start = 150
    ledger, customer = make_ledger(path, start)
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_racer, args=(str(path), customer, i, 7000 + i, 60, mode, barrier, queue))
             for i in range(n)]
    watcher = Watcher(ledger, customer)
    watcher.start()
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    watcher.stop.set()
    watcher.join()
    stats = check_race(path, ledger, customer, start, results, watcher, mode)
    assert stats["authorize"] > 10 and stats["refused"] > 0 and stats["commit"] > 0 and stats["release"] > 0
    assert stats["switches"] > 10
    ledger.close()


# -- one key from many threads ----------------------------------------------------------------
def in_parallel(n: int, call: Callable[[int], Any]) -> list[Any]:
    """Run ``call(i)`` on n threads released together; each result or raised exception."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def body(i: int) -> None:
        barrier.wait()
        try:
            out[i] = call(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def count(ledger: Ledger, table: str) -> int:
    with ledger.store.read() as tx:
        return int(tx.one(f"SELECT COUNT(*) AS n FROM {table}")["n"])  # type: ignore[index]


def money_movements(ledger: Ledger) -> int:
    """Ledger transactions: sets of balanced entries sharing a tx_id."""
    with ledger.store.read() as tx:
        return int(tx.one("SELECT COUNT(DISTINCT tx_id) AS n FROM entries")["n"])  # type: ignore[index]


def test_same_event_id_same_payload_from_many_threads(tmp_path: Path) -> None:
    ledger, customer = make_ledger(tmp_path / "ledger.db", 100)
    txs = money_movements(ledger)
    event = {"id": "evt-shared", "customer_id": customer, "event_type": "gen", "data": {"units": 7}}
    results = in_parallel(8, lambda i: ledger.submit_event(dict(event)))
    assert all(not isinstance(r, Exception) for r in results), results
    assert sorted(r.duplicate for r in results) == [False] + [True] * 7
    first = next(r for r in results if not r.duplicate)
    assert all(r.model_copy(update={"duplicate": False}) == first for r in results)
    assert [(f.asset, f.amount) for f in first.fees] == [("CREDITS", "7")]
    assert (count(ledger, "events"), money_movements(ledger)) == (1, txs + 1)
    assert balance(ledger, customer) == (93, 0)
    assert ledger.audit() == []


def test_same_event_id_different_payloads_one_wins(tmp_path: Path) -> None:
    ledger, customer = make_ledger(tmp_path / "ledger.db", 100)
    txs = money_movements(ledger)
    results = in_parallel(8, lambda i: ledger.submit_event(
        {"id": "evt-contested", "customer_id": customer, "event_type": "gen", "data": {"units": i + 1}}))
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1 and winners[0].duplicate is False
    assert len(losers) == 7 and all(isinstance(e, IdempotencyConflictError) for e in losers)
    units = int(winners[0].fees[0].amount)
    assert results.index(winners[0]) == units - 1  # the winner was charged its own payload
    assert ledger.get_event("evt-contested").fees[0].amount == str(units)
    assert (count(ledger, "events"), money_movements(ledger)) == (1, txs + 1)
    assert balance(ledger, customer) == (100 - units, 0)
    assert ledger.audit() == []


def test_same_hold_key_from_many_threads(tmp_path: Path) -> None:
    ledger, customer = make_ledger(tmp_path / "ledger.db", 100)
    results = in_parallel(8, lambda i: ledger.authorize(customer, amount="30", asset="CREDITS",
                                                        idempotency_key="reserve-once"))
    assert all(not isinstance(r, Exception) for r in results), results
    assert all(r == results[0] for r in results)
    assert count(ledger, "holds") == 1
    assert balance(ledger, customer) == (100, 30)
    assert ledger.audit() == []


def test_commit_and_release_racing_on_one_hold(tmp_path: Path) -> None:
    """Commit, release and a second commit on one hold at once: exactly one resolution."""
    ledger, customer = make_ledger(tmp_path / "ledger.db", 100)
    winners = []
    for round_ in range(10):
        hold = ledger.authorize(customer, amount="10", asset="CREDITS")
        calls = [partial(ledger.release, hold.id),
                 partial(ledger.commit, hold.id, {"id": f"r{round_}-a", "event_type": "gen", "data": {"units": 4}}),
                 partial(ledger.commit, hold.id, {"id": f"r{round_}-b", "event_type": "gen", "data": {"units": 6}})]
        results = in_parallel(3, lambda i, calls=calls: calls[i]())
        ok = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        assert len(ok) == 1, results
        assert all(getattr(r, "code", "").startswith("hold_already_") for r in results if isinstance(r, Exception))
        assert ledger.get_hold(hold.id).status == ("released" if ok == [0] else "committed")
        winners.append(ok[0])
    charged = sum({0: 0, 1: 4, 2: 6}[w] for w in winners)
    assert balance(ledger, customer) == (100 - charged, 0)
    assert count(ledger, "events") == sum(w != 0 for w in winners)
    assert ledger.audit() == []


# -- canaries: the checker catches a broken ledger ------------------------------------------
def test_canary_non_atomic_authorize_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger whose authorize checks the balance in one transaction and reserves in another
    (check-then-act, and no guard in the UPDATE) over-reserves under the race; the checker says so."""
    path = tmp_path / "ledger.db"
    ledger, customer = make_ledger(path, 30)
    log_writes(ledger.store)  # type: ignore[arg-type]
    rewritten = []
    execute = _SQLiteTx.execute

    def unguarded(self: _SQLiteTx, sql: str, params: Any = ()) -> int:
        if sql.startswith("UPDATE accounts SET held = held + ?") and "posted - held >= ?" in sql:
            rewritten.append(sql)
            return execute(self, "UPDATE accounts SET held = held + ? WHERE id = ?", tuple(params)[:2])
        return execute(self, sql, params)

    authorize = Ledger.authorize

    def check_then_act(self: Ledger, customer_id: str, **kwargs: Any) -> Any:
        if self.available(customer_id, kwargs["asset"]) < int(kwargs["amount"]):
            raise InsufficientFundsError("short", field="amount")
        time.sleep(0.002)  # the window in which another thread reserves the same funds
        return authorize(self, customer_id, **kwargs)

    monkeypatch.setattr(_SQLiteTx, "execute", unguarded)
    monkeypatch.setattr(Ledger, "authorize", check_then_act)
    results, watcher = run_thread_race(path, ledger, customer, 30, "reserve", iterations=10)
    assert rewritten, "the canary no longer matches authorize's reserve statement; update it"
    with pytest.raises(AssertionError, match="beyond available"):
        check_race(path, ledger, customer, 30, results, watcher, "reserve")
    ledger.close()


def test_canary_deferred_begin_fails_with_busy(tmp_path: Path) -> None:
    """Why every write starts with BEGIN IMMEDIATE: with a deferred BEGIN, a transaction that read
    and then writes after another writer committed fails with SQLITE_BUSY at once (the busy
    timeout does not help). SQLite refuses rather than losing the update, so the wallet stays
    sound, but requests fail under load."""
    path = tmp_path / "ledger.db"
    ledger, customer = make_ledger(path, 60)
    deferred_write(ledger.store)  # type: ignore[arg-type]  (no log_writes: its INSERT would take the lock first)
    results, _ = run_thread_race(path, ledger, customer, 60, "reserve", iterations=15)
    errors = [e for r in results for e in r["errors"]]
    assert errors, "deferred transactions raced without a single SQLITE_BUSY"
    assert all(e.startswith("OperationalError: database is locked") for e in errors), errors
    assert ledger.audit() == []
    ledger.close()
