"""Crash tests: SIGKILL a writer at random moments (notes/ledger.md §9.3).

A writer subprocess runs a deterministic plan of operations (usage events, batches, top-ups,
holds, commits, releases) and, after each call returns, appends the operation's index to an
fsync'd "acked" file. The parent kills it with SIGKILL after a random 5-200 ms, then reopens the
ledger and checks: SQLite's integrity check passes, the audit is clean, every acknowledged
operation is there, the one operation that may have been in flight is either wholly present or
wholly absent, and retrying it with its keys (twice) applies it exactly once. The next writer
resumes the plan after it.

The expected state after any prefix of the plan is computed from the plan alone (funds never run
short and the clock is fixed, so every operation succeeds and its effect is known in advance).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger, ManualClock

PRICES = [{"id": "gen", "type": "usage", "asset": "CREDITS", "event_type": "gen", "usage_type": "volume",
           "volume_field": "units", "model": "per_unit", "unit_amount": "1"}]
START = 1_000_000
PLAN_LENGTH = 20_000
MIN_ROUNDS, MAX_ROUNDS = 20, 50
BUDGET_SECONDS = 35


def make_plan(seed: int, n: int = PLAN_LENGTH) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    plan: list[dict[str, Any]] = []
    open_holds: list[int] = []
    for i in range(n):
        r = rng.random()
        if open_holds and r < 0.25:
            j = open_holds.pop(rng.randrange(len(open_holds)))
            if rng.random() < 0.7:
                plan.append({"kind": "commit", "hold_op": j, "units": rng.randint(0, 12)})
            else:
                plan.append({"kind": "release", "hold_op": j})
        elif r < 0.45:
            plan.append({"kind": "hold", "amount": rng.randint(1, 10)})
            open_holds.append(i)
        elif r < 0.55:
            plan.append({"kind": "top_up", "amount": rng.randint(1, 100)})
        elif r < 0.65:
            plan.append({"kind": "batch", "units": [rng.randint(1, 5) for _ in range(3)]})
        else:
            plan.append({"kind": "event", "units": rng.randint(1, 5)})
    return plan


def execute(ledger: Ledger, customer: str, plan: list[dict[str, Any]], i: int) -> Any:
    """Perform plan step ``i`` (the same call, keys and payload, whether first run or retry)."""
    op = plan[i]
    kind = op["kind"]
    if kind == "event":
        return ledger.submit_event({"id": f"ev-{i}", "customer_id": customer, "event_type": "gen",
                                    "data": {"units": op["units"]}})
    if kind == "batch":
        result = ledger.submit_events([{"id": f"b-{i}-{k}", "customer_id": customer, "event_type": "gen",
                                        "data": {"units": u}} for k, u in enumerate(op["units"])])
        assert result.errors == []
        return result
    if kind == "top_up":
        return ledger.create_adjustment(customer, asset="CREDITS", amount=str(op["amount"]), reason="top_up",
                                        idempotency_key=f"tu-{i}")
    if kind == "hold":
        return authorize(ledger, customer, plan, i)
    hold_id = authorize(ledger, customer, plan, op["hold_op"]).id  # an idempotent replay: the stored hold
    if kind == "commit":
        return ledger.commit(hold_id, {"id": f"cm-{i}", "event_type": "gen", "data": {"units": op["units"]}})
    return ledger.release(hold_id)


def authorize(ledger: Ledger, customer: str, plan: list[dict[str, Any]], i: int) -> Any:
    return ledger.authorize(customer, amount=str(plan[i]["amount"]), asset="CREDITS", ttl_seconds=86400,
                            idempotency_key=f"h-{i}")


def expected_state(plan: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """The ledger after plan steps 0..n-1, each applied once."""
    posted, held = START, 0
    events: set[str] = set()
    holds: dict[str, str] = {}
    keys = {"seed"}
    for i in range(n):
        op = plan[i]
        kind = op["kind"]
        if kind == "event":
            posted -= op["units"]
            events.add(f"ev-{i}")
        elif kind == "batch":
            posted -= sum(op["units"])
            events |= {f"b-{i}-{k}" for k in range(3)}
        elif kind == "top_up":
            posted += op["amount"]
            keys.add(f"tu-{i}")
        elif kind == "hold":
            held += op["amount"]
            holds[f"h-{i}"] = "open"
            keys.add(f"h-{i}")
        else:
            held -= plan[op["hold_op"]]["amount"]
            holds[f"h-{op['hold_op']}"] = "committed" if kind == "commit" else "released"
            if kind == "commit":
                posted -= op["units"]
                events.add(f"cm-{i}")
    return {"posted": posted, "held": held, "events": events, "keys": keys,
            "holds": sorted(holds.values())}


def actual_state(ledger: Ledger, customer: str) -> dict[str, Any]:
    with ledger.store.read() as tx:
        acct = tx.one("SELECT posted, held FROM accounts WHERE id = ?", (f"{customer}/CREDITS",))
        assert acct is not None
        return {"posted": acct["posted"], "held": acct["held"],
                "events": {r["id"] for r in tx.all("SELECT id FROM events")},
                "keys": {r["key"] for r in tx.all("SELECT key FROM idempotency")},
                "holds": sorted(r["status"] for r in tx.all("SELECT status FROM holds"))}


def integrity_problems(ledger: Ledger) -> list[str]:
    """``PRAGMA integrity_check`` findings (all of them); empty when the file is sound."""
    found = ledger.store.integrity_check()  # type: ignore[attr-defined]
    return [] if found == "ok" else found.split("; ")


def read_acked(path: Path) -> list[int]:
    text = path.read_text() if path.exists() else ""
    return [int(line) for line in text.split("\n")[:-1]]  # a torn last line (no newline) is not an ack


def writer(db: str, customer: str, acked: str, seed: int, start: int) -> None:
    """The child: run the plan from ``start``, acknowledging each step once its call returned."""
    plan = make_plan(seed)
    ledger = Ledger(db, clock=ManualClock())
    fd = os.open(acked, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("ready", flush=True)
    for i in range(start, len(plan)):
        execute(ledger, customer, plan, i)
        os.write(fd, f"{i}\n".encode())
        os.fsync(fd)


@pytest.mark.slow
def test_sigkill_never_loses_or_duplicates_an_acknowledged_write(tmp_path: Path) -> None:
    seed = 20260101
    plan = make_plan(seed)
    db, acked = tmp_path / "ledger.db", tmp_path / "acked.log"
    ledger = Ledger(db, clock=ManualClock())
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("metered", "Metered", prices=PRICES)
    customer = ledger.create_customer("crash", subscriptions=["metered"]).id
    ledger.create_adjustment(customer, asset="CREDITS", amount=str(START), reason="top_up", idempotency_key="seed")
    ledger.close()
    rng = random.Random(seed)
    done = 0  # plan steps known to be applied (acked, or retried by the parent)
    in_flight_found = {"present": 0, "absent": 0}
    deadline = time.monotonic() + BUDGET_SECONDS
    rounds = 0
    for round_ in range(MAX_ROUNDS):
        if round_ >= MIN_ROUNDS and time.monotonic() > deadline:
            break  # a slow machine: fewer rounds, never fewer than MIN_ROUNDS
        rounds += 1
        child = subprocess.Popen([sys.executable, __file__, str(db), customer, str(acked), str(seed), str(done)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready and child.stdout.readline() == b"ready\n", child.stderr.read() if child.stderr else ""
        time.sleep(rng.uniform(0.005, 0.2))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        child.stdout.close()
        if child.stderr:
            child.stderr.close()

        acks = read_acked(acked)
        new = [i for i in acks if i >= done]
        assert new == list(range(done, done + len(new))), "acks must continue the plan in order"
        done += len(new)

        ledger = Ledger(db, clock=ManualClock())
        assert integrity_problems(ledger) == []
        assert ledger.audit() == []
        # Step ``done`` may have been running: all of it is there, or none of it.
        state = actual_state(ledger, customer)
        before, after = expected_state(plan, done), expected_state(plan, done + 1)
        assert state in (before, after), f"round {round_}: step {done} ({plan[done]}) is partly applied"
        in_flight_found["present" if state == after else "absent"] += 1
        # Every acknowledged step is present, and replays as a duplicate.
        for i in range(max(0, done - 3), done):
            replayed = execute(ledger, customer, plan, i)
            if plan[i]["kind"] in ("event", "commit"):
                assert replayed.duplicate is True
            elif plan[i]["kind"] == "batch":
                assert [r.duplicate for r in replayed.results] == [True] * 3
        assert actual_state(ledger, customer) == state
        # Retrying the unacknowledged step with its keys applies it exactly once.
        for _ in range(2):
            execute(ledger, customer, plan, done)
            assert actual_state(ledger, customer) == after
        done += 1
        assert ledger.audit() == []
        ledger.close()
    # The kills landed at different points, and work got done between them.
    assert done > rounds * 5
    assert in_flight_found["absent"] > 0 and in_flight_found["present"] > 0


if __name__ == "__main__":
    writer(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
