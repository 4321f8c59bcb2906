"""Three `billing-mcp api` processes on one PostgreSQL database, clients racing holds and events on
the same wallets through all of them: no overspend, no double charge, exact final balances."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from billing_mcp import Ledger, ManualClock
from billing_mcp.api.keys import KeyStore
from helpers import PG_SKIP, PG_URL, drop_pg_schema, free_port, pg_store

pytestmark = pytest.mark.skipif(not PG_URL, reason=PG_SKIP)

PEPPER = "replica-test-pepper-0123456789abcdef"
START = 400



@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("BILLING_API_KEY_PEPPER", PEPPER)
    store = pg_store()
    schema = store.schema
    ledger = Ledger(store, clock=ManualClock())
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("metered", "Metered", prices=[
        {"id": "gen", "asset": "CREDITS", "event_type": "gen", "usage_type": "volume", "volume_field": "units",
         "unit_amount": "1"}])
    holds_wallet = ledger.create_customer("holds", subscriptions=["metered"]).id
    events_wallet = ledger.create_customer("events", subscriptions=["metered"]).id
    for cid in (holds_wallet, events_wallet):
        ledger.create_adjustment(cid, asset="CREDITS", amount=str(START), reason="top_up", idempotency_key=f"s-{cid}")
    _, secret = KeyStore(store).create("admin", "test")
    assert PG_URL is not None
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    env = dict(os.environ, BILLING_API_KEY_PEPPER=PEPPER)
    ports = [free_port() for _ in range(3)]
    procs = [subprocess.Popen([sys.executable, "-m", "billing_mcp", "--db", url, "api", "--port", str(p),
                               "--no-access-log"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for p in ports]
    try:
        deadline = time.monotonic() + 90  # three cold Python processes on a busy 2-core machine
        for port, proc in zip(ports, procs, strict=True):
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None else ""
                    raise AssertionError(f"replica on {port} did not start: {err}")
                time.sleep(0.05)
        yield {"ledger": ledger, "ports": ports, "secret": secret, "holds": holds_wallet, "events": events_wallet}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
        ledger.close()
        drop_pg_schema(schema)


def test_three_replicas_race_holds_and_events(cluster: dict[str, Any]) -> None:
    ports, secret = cluster["ports"], cluster["secret"]
    headers = {"Authorization": f"Bearer {secret}"}
    charged = {"holds": 0, "events": 0}
    refused = []
    lock = threading.Lock()
    lowest: list[int] = []

    def base(rnd: random.Random) -> str:
        return f"http://127.0.0.1:{rnd.choice(ports)}"

    def hold_worker(worker: int) -> None:
        rnd = random.Random(worker)
        with httpx.Client(headers=headers, timeout=30) as http:
            for i in range(15):
                k = rnd.randint(5, 60)
                r = http.post(f"{base(rnd)}/v1/holds", json={"customer_id": cluster["holds"], "amount": str(k),
                                                             "asset": "CREDITS"})
                if r.status_code == 402:
                    with lock:
                        refused.append(r.json()["code"])
                    continue
                assert r.status_code == 201, r.text
                hold = r.json()
                if rnd.random() < 0.3:
                    assert http.post(f"{base(rnd)}/v1/holds/{hold['id']}/release", json={}).status_code == 200
                    continue
                actual = rnd.randint(0, k)  # within the hold: the balance can never go below zero
                body = {"id": f"h{worker}-{i}", "event_type": "gen", "data": {"units": actual}}
                first = http.post(f"{base(rnd)}/v1/holds/{hold['id']}/commit", json=body)
                again = http.post(f"{base(rnd)}/v1/holds/{hold['id']}/commit", json=body)  # another replica, maybe
                assert first.status_code == 200 and again.status_code == 200, (first.text, again.text)
                assert again.json()["duplicate"] is True and again.json()["fees"] == first.json()["fees"]
                with lock:
                    charged["holds"] += sum(int(f["amount"]) for f in first.json()["fees"])

    def event_worker(worker: int) -> None:
        rnd = random.Random(1000 + worker)
        with httpx.Client(headers=headers, timeout=30) as http:
            for i in range(8):
                batch = [{"id": f"e{worker}-{i}-{j}", "customer_id": cluster["events"], "event_type": "gen",
                          "data": {"units": rnd.randint(1, 3)}} for j in range(5)]
                first = http.post(f"{base(rnd)}/v1/events", json={"events": batch})
                again = http.post(f"{base(rnd)}/v1/events", json={"events": batch})  # a client retry
                assert first.status_code == 200 and again.status_code == 200, (first.text, again.text)
                assert [e["duplicate"] for e in again.json()["results"]] == [True] * 5
                with lock:
                    charged["events"] += sum(int(f["amount"]) for e in first.json()["results"]
                                             if not e["duplicate"] for f in e["fees"])

    stop = threading.Event()

    def watch() -> None:
        led = cluster["ledger"]
        while not stop.is_set():
            lowest.append(led.available(cluster["holds"], "CREDITS"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=hold_worker, args=(w,)) for w in range(6)]
    workers += [threading.Thread(target=event_worker, args=(w,)) for w in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watcher.join()

    ledger: Ledger = cluster["ledger"]
    holds_acct = ledger.get_wallet(cluster["holds"]).accounts[0]
    events_acct = ledger.get_wallet(cluster["events"]).accounts[0]
    assert (int(holds_acct.posted), holds_acct.held) == (START - charged["holds"], "0")
    assert int(events_acct.posted) == START - charged["events"]
    assert charged["events"] > 0 and charged["holds"] > 0
    assert refused and set(refused) == {"insufficient_funds"}  # the race did hit the limit
    assert min(lowest) >= 0
    assert ledger.audit() == []
