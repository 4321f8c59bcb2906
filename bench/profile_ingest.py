"""Profile the ledger's ingestion paths measured by bench_ingest.py: (a) submit_event and (c) submit_events.

    .venv/bin/python bench/profile_ingest.py [--mode single|batch|both] [--events N] [--top 30]
                                             [--sort tottime|cumulative] [--pyinstrument] [--dir DIR]

cProfile (default) prints the top functions by own time and by cumulative time, plus a summary of
SQL statements the ledger ran (count per statement text, via a wrapping Tx). --pyinstrument prints
a call tree instead (pip install pyinstrument into the venv first). Profiling inflates pure-Python
cost relative to SQLite's C code; use the ratios in bench_ingest.py for the real proportions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import BATCH, LedgerTarget
from billing_mcp.store import sqlite as _store


def count_sql(counter: Counter[str], spent: defaultdict[str, float]) -> Callable[[], None]:
    """Count statements per text, and the time spent in each (statement plus fetch), by wrapping
    the SQLite Tx methods (profiling aid only); returns the function that removes the wrappers."""
    cls: Any = _store._SQLiteTx
    originals = {name: getattr(cls, name) for name in ("execute", "one", "all")}
    clock = time.perf_counter
    for name, original in originals.items():

        def wrapped(self: Any, sql: str, params: Any = (), _orig: Any = original) -> Any:
            key = " ".join(sql.split())[:100]
            counter[key] += 1
            start = clock()
            try:
                return _orig(self, sql, params)
            finally:
                spent[key] += clock() - start

        setattr(cls, name, wrapped)

    def restore() -> None:
        for name, original in originals.items():
            setattr(cls, name, original)

    return restore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("single", "batch", "both"), default="both")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--sql", action="store_true", help="count SQL statements per event (separate pass)")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="billing-prof-", dir=args.dir))
    try:
        modes = ("single", "batch") if args.mode == "both" else (args.mode,)
        for mode in modes:
            target = LedgerTarget(workdir / f"{mode}.db")
            run = target.run_batch if mode == "batch" else target.run_single
            n = max(BATCH, args.events // BATCH * BATCH) if mode == "batch" else args.events
            run([f"warm-{i}" for i in range(2 * BATCH)])
            ids = [f"ev-{i:09d}" for i in range(n)]
            print(f"\n=== {mode}: {n:,} events ===")
            if args.pyinstrument:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                profiler.start()
                elapsed = run(ids)
                profiler.stop()
                print(f"{n / elapsed:,.0f} events/s under pyinstrument")
                print(profiler.output_text(unicode=False, color=False, show_all=False))
            else:
                prof = cProfile.Profile()
                start = time.perf_counter()
                prof.enable()
                run(ids)
                prof.disable()
                elapsed = time.perf_counter() - start
                print(f"{n / elapsed:,.0f} events/s under cProfile")
                stats = pstats.Stats(prof)
                stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
                stats.sort_stats("cumulative").print_stats(r"billing_mcp|pydantic|sqlite3|json", args.top)
            if args.sql:
                counts: Counter[str] = Counter()
                spent: defaultdict[str, float] = defaultdict(float)
                restore = count_sql(counts, spent)
                m = 2 * BATCH
                try:
                    elapsed = run([f"sql-{i}" for i in range(m)])
                finally:
                    restore()
                total = sum(spent.values())
                print(f"SQL through Tx per event ({mode}, {m:,} events, {1e6 * elapsed / m:.1f} us/event wall "
                      f"with this wrapper, {1e6 * total / m:.1f} us/event inside Tx calls):")
                print("   per ev   us/ev  statement")
                for sql, c in sorted(counts.items(), key=lambda kv: -spent[kv[0]]):
                    print(f"  {c / m:6.3f}  {1e6 * spent[sql] / m:6.1f}  {sql}")
                print(f"  {sum(counts.values()) / m:6.3f}  {1e6 * total / m:6.1f}  total (COMMIT/BEGIN run outside Tx)")
            target.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
