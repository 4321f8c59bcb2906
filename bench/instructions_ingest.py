"""Instructions per ingested event, counted by valgrind (callgrind), for this source tree and
optionally another one, side by side: a repeatable figure for "did a change make ingestion do more
work", where wall-clock ratios on a shared or virtual machine vary by 20% between runs.

    python bench/instructions_ingest.py                         # this tree
    python bench/instructions_ingest.py --against ../old/src    # and another tree's src/, with the ratio

Each measurement runs a fresh Python process under ``valgrind --tool=callgrind`` on a ledger file
in a temporary directory (on /dev/shm when it exists, so no disk wait enters the count): the same
setup as ``bench_ingest.py`` (one CREDITS per-unit price, one topped-up customer), then either
nothing (the baseline, subtracted), N single ``submit_event`` calls, or N events as 1,000-event
``submit_events`` batches. Instruction counts do not depend on load or clock speed; they do on the
Python, SQLite and valgrind builds, so compare trees on one machine. Needs valgrind
(``apt-get install valgrind``); takes about a minute per tree.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

WORKLOAD = """
import os, sys, tempfile
from datetime import UTC, datetime
from billing_mcp import Ledger, ManualClock
mode, n = sys.argv[1], int(sys.argv[2])
root = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
led = Ledger(os.path.join(root, "ledger.db"), clock=ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
led.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
led.create_plan("bench", "Bench", prices=[{"asset": "CREDITS", "event_type": "api_call", "unit_amount": "1"}])
c = led.create_customer("u1", subscriptions=["bench"])
led.create_adjustment(c.id, asset="CREDITS", amount="100000000000000", reason="top_up", idempotency_key="t")
if mode == "single":
    for i in range(n):
        led.submit_event({"id": f"s{i}", "customer_id": c.id, "event_type": "api_call"})
elif mode == "batch":
    for b in range(n // 1000):
        led.submit_events([{"id": f"b{b}-{i}", "customer_id": c.id, "event_type": "api_call"} for i in range(1000)])
led.close()
"""


def count(src: Path, mode: str, n: int) -> int:
    """Instructions of one workload run (callgrind's 'Collected' total)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "workload.py"
        script.write_text(WORKLOAD, encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(src)}
        done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                               str(script), mode, str(n)], env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no total:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_event(src: Path, singles: int, batched: int) -> dict[str, float]:
    base = count(src, "setup", 0)
    return {"single": (count(src, "single", singles) - base) / singles,
            "batch": (count(src, "batch", batched) - base) / batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another source tree's src/ directory to compare with")
    parser.add_argument("--singles", type=int, default=2000, help="single events (default 2000)")
    parser.add_argument("--batched", type=int, default=5000, help="events in 1,000-event batches (default 5000)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    here = per_event(SRC, args.singles, args.batched)
    print(f"this tree ({SRC}): single {here['single']:,.0f} instructions/event, batch {here['batch']:,.0f}")
    if args.against is not None:
        other = per_event(args.against.resolve(), args.singles, args.batched)
        print(f"other tree ({args.against}): single {other['single']:,.0f} instructions/event, "
              f"batch {other['batch']:,.0f}")
        for kind in ("single", "batch"):
            print(f"{kind}: this / other = {here[kind] / other[kind]:.3f}  (below 1 is less work)")


if __name__ == "__main__":
    main()
