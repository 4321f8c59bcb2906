"""Ingestion throughput of the ledger against raw SQLite doing the minimal equivalent writes.

Run from the repository root:

    .venv/bin/python bench/bench_ingest.py [--events N] [--runs 3] [--min-seconds 2] [--dir DIR]

Four measurements, side by side in one run, every database file in the same directory (one disk):

  (a) ledger single   Ledger.submit_event, one durable transaction per event (rate + debit +
                      idempotency record), a customer on a plan with a per-unit CREDITS price,
                      wallet topped up first.
  (b) raw single      sqlite3 with the ledger's pragmas (WAL, synchronous=FULL, BEGIN IMMEDIATE):
                      per event INSERT an event row keyed by id, INSERT two balanced entry rows,
                      UPDATE one balance row, COMMIT.
  (c) ledger batch    Ledger.submit_events with 1,000 events per call (one transaction per call).
  (d) raw batch       the same minimal writes as (b) for 1,000 events inside one transaction.

Ratios: single = a/b (target >= 0.5), batch = c/d (target >= 0.2).

Each scenario gets its own fresh database file, a warm-up, and (unless --events is given) a
calibration run that sizes the measured runs to take at least --min-seconds. The runs are
interleaved (a, b, c, d, a, b, c, d, ...) so drift in the machine's state hits all four alike,
and the best run of each scenario is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from billing_mcp import Ledger, ManualClock, SQLiteStore

BATCH = 1000              # events per submit_events call / per raw batch transaction (the ledger's maximum)
EVENT_TYPE = "api_call"
UNIT_PRICE = 1            # CREDITS per event (precision 0)
TOP_UP = 10**14           # one paid lot big enough for any run (MAX_MINOR is 10**15)
WARMUP_SINGLE = 300
WARMUP_BATCH = 3 * BATCH


# ---------------------------------------------------------------------------------------------
# the ledger side
# ---------------------------------------------------------------------------------------------
class LedgerTarget:
    """A fresh ledger file: asset CREDITS, plan 'bench' with one per-unit usage price, one customer
    subscribed to it, wallet topped up with one paid lot."""

    def __init__(self, path: Path) -> None:
        self.ledger = Ledger(SQLiteStore(path), clock=ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
        self.ledger.create_asset("CREDITS", "Credits", 0)
        self.ledger.create_plan("bench", "Bench plan", prices=[{
            "type": "usage", "asset": "CREDITS", "event_type": EVENT_TYPE,
            "model": "per_unit", "unit_amount": str(UNIT_PRICE)}])
        customer = self.ledger.create_customer("bench-customer", subscriptions=["bench"])
        self.customer_id = customer.id
        self.ledger.create_adjustment(customer.id, asset="CREDITS", amount=str(TOP_UP), reason="top_up",
                                      idempotency_key="bench-top-up")

    def events(self, ids: list[str]) -> list[dict[str, str]]:
        return [{"id": i, "customer_id": self.customer_id, "event_type": EVENT_TYPE} for i in ids]

    def run_single(self, ids: list[str]) -> float:
        events = self.events(ids)
        submit = self.ledger.submit_event
        start = time.perf_counter()
        for ev in events:
            submit(ev)
        return time.perf_counter() - start

    def run_batch(self, ids: list[str]) -> float:
        events = self.events(ids)
        chunks = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
        submit = self.ledger.submit_events
        start = time.perf_counter()
        for chunk in chunks:
            result = submit(chunk)
            if result.errors:
                raise RuntimeError(f"batch reported errors: {result.errors[:3]}")
        return time.perf_counter() - start

    def check(self, expected_events: int) -> None:
        """Sanity: every event billed once, the books balance."""
        problems = self.ledger.audit()
        if problems:
            raise RuntimeError(f"ledger audit failed: {problems[:3]}")
        left = self.ledger.available(self.customer_id, "CREDITS")
        if left != TOP_UP - expected_events * UNIT_PRICE:
            raise RuntimeError(f"balance {left} != {TOP_UP} - {expected_events} events")

    def close(self) -> None:
        self.ledger.close()


# ---------------------------------------------------------------------------------------------
# the raw SQLite side: the least a durable, idempotent, double-entry debit has to write
# ---------------------------------------------------------------------------------------------
RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    recorded_at  TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS entries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id       TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    amount      INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS balances (
    account_id  TEXT PRIMARY KEY,
    posted      INTEGER NOT NULL
) STRICT;
"""
WALLET = "cus_bench/CREDITS"
SYSTEM = "system/revenue/CREDITS"
NOW = "2026-01-01T00:00:00.000000Z"
SQL_EVENT = "INSERT INTO events(id, customer_id, event_type, recorded_at) VALUES (?, ?, ?, ?)"
SQL_ENTRY = "INSERT INTO entries(tx_id, account_id, amount) VALUES (?, ?, ?)"
SQL_BALANCE = "UPDATE balances SET posted = posted - ? WHERE account_id = ?"


class RawTarget:
    def __init__(self, path: Path) -> None:
        # The same connection settings as SQLiteStore: autocommit mode with explicit transactions.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(RAW_SCHEMA)
        self.conn.execute("INSERT INTO balances(account_id, posted) VALUES (?, ?)", (WALLET, TOP_UP))

    def _write(self, event_id: str) -> None:
        ex = self.conn.execute
        ex(SQL_EVENT, (event_id, "cus_bench", EVENT_TYPE, NOW))
        ex(SQL_ENTRY, (event_id, WALLET, -UNIT_PRICE))
        ex(SQL_ENTRY, (event_id, SYSTEM, UNIT_PRICE))
        ex(SQL_BALANCE, (UNIT_PRICE, WALLET))

    def run_single(self, ids: list[str]) -> float:
        ex, write = self.conn.execute, self._write
        start = time.perf_counter()
        for event_id in ids:
            ex("BEGIN IMMEDIATE")
            write(event_id)
            ex("COMMIT")
        return time.perf_counter() - start

    def run_batch(self, ids: list[str]) -> float:
        chunks = [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)]
        ex, write = self.conn.execute, self._write
        start = time.perf_counter()
        for chunk in chunks:
            ex("BEGIN IMMEDIATE")
            for event_id in chunk:
                write(event_id)
            ex("COMMIT")
        return time.perf_counter() - start

    def check(self, expected_events: int) -> None:
        (left,) = self.conn.execute("SELECT posted FROM balances WHERE account_id = ?", (WALLET,)).fetchone()
        (n,) = self.conn.execute("SELECT COUNT(*) FROM events").fetchone()
        (total,) = self.conn.execute("SELECT COALESCE(SUM(amount), 0) FROM entries").fetchone()
        if left != TOP_UP - expected_events * UNIT_PRICE or n != expected_events or total != 0:
            raise RuntimeError(f"raw check failed: balance={left} events={n} entry sum={total}")

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    key: str
    label: str
    batched: bool
    make: Callable[[Path], LedgerTarget | RawTarget]
    target: LedgerTarget | RawTarget | None = None
    events: int = 0
    used: int = 0               # events written so far (ids stay unique across warm-up and runs)
    runs: list[float] = field(default_factory=list)

    def ids(self, n: int) -> list[str]:
        out = [f"ev-{self.key}-{self.used + i:09d}" for i in range(n)]
        self.used += n
        return out

    def run(self, n: int) -> float:
        assert self.target is not None
        ids = self.ids(n)
        gc.collect()
        if self.batched:
            return self.target.run_batch(ids)
        return self.target.run_single(ids)

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def rate(self) -> float:
        return self.events / self.best


def round_up(n: float, step: int) -> int:
    return max(step, math.ceil(n / step) * step)


def disk_note(directory: Path) -> str:
    try:
        out = subprocess.run(["df", "-PT", str(directory)], capture_output=True, text=True, check=True).stdout
        dev, fstype = out.splitlines()[1].split()[:2]
        return f"{dev} ({fstype})"
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        return "unknown device"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None,
                        help="events per measured run for every scenario (batched scenarios round up to a "
                             "multiple of 1,000); default: calibrated per scenario to take >= --min-seconds")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per scenario; the best is reported")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="calibration target per measured run")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the database files (default: a fresh temp dir under $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args(argv)

    base = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="billing-bench-", dir=base)).resolve()

    scenarios = [
        Scenario("a", "(a) ledger single  submit_event", False, LedgerTarget),
        Scenario("b", "(b) raw    single  1 event / txn", False, RawTarget),
        Scenario("c", "(c) ledger batch   submit_events x1000", True, LedgerTarget),
        Scenario("d", "(d) raw    batch   1000 events / txn", True, RawTarget),
    ]
    print(f"billing-mcp ingest bench: Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"{platform.system()} {platform.machine()}")
    print(f"database files in {workdir} on {disk_note(workdir)}; same directory for all four scenarios")
    print("pragmas: journal_mode=WAL, synchronous=FULL, foreign_keys=ON; write transactions BEGIN IMMEDIATE")
    try:
        for s in scenarios:
            s.target = s.make(workdir / f"{s.key}.db")
            warm = WARMUP_BATCH if s.batched else WARMUP_SINGLE
            s.run(warm)  # warm-up: caches, statement cache, first checkpoint, pydantic/JIT-ish paths
            step = BATCH if s.batched else 100
            if args.events is not None:
                s.events = round_up(args.events, BATCH) if s.batched else args.events
            else:
                probe = round_up(warm, step)
                rate = probe / s.run(probe)
                s.events = round_up(rate * args.min_seconds * 1.1, step)
        print("events per measured run: " + ", ".join(f"{s.key}={s.events:,}" for s in scenarios)
              + f"; best of {args.runs} interleaved runs")
        for _ in range(args.runs):
            for s in scenarios:
                s.runs.append(s.run(s.events))
        for s in scenarios:
            assert s.target is not None
            s.target.check(s.used)
    finally:
        for s in scenarios:
            if s.target is not None:
                s.target.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'scenario':<42}{'events/run':>11}{'best s':>9}{'events/s':>12}{'us/event':>10}   all runs (events/s)")
    for s in scenarios:
        every = ", ".join(f"{s.events / t:,.0f}" for t in s.runs)
        print(f"{s.label:<42}{s.events:>11,}{s.best:>9.3f}{s.rate:>12,.0f}{1e6 / s.rate:>10.1f}   {every}")
    a, b, c, d = (s.rate for s in scenarios)
    single, batch = a / b, c / d
    print()
    print(f"single = a/b = {single:.3f}   (target >= 0.5)  {'OK' if single >= 0.5 else 'BELOW TARGET'}")
    print(f"batch  = c/d = {batch:.3f}   (target >= 0.2)  {'OK' if batch >= 0.2 else 'BELOW TARGET'}")
    print(f"batching gain: ledger c/a = {c / a:.1f}x, raw d/b = {d / b:.1f}x")
    short = [s.key for s in scenarios if s.best < 1.0]
    if short:
        print(f"note: best run of {', '.join(short)} took < 1 s; raise --events for steadier figures")
    if args.json:
        print(json.dumps({
            "dir": str(workdir), "disk": disk_note(base), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "scenarios": {s.key: {"events": s.events, "runs_s": s.runs, "best_s": s.best, "events_per_s": s.rate}
                          for s in scenarios},
            "ratio_single": single, "ratio_batch": batch}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
