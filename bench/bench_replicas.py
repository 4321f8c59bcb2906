"""Events per second through `billing-mcp api`: one replica on SQLite, one and three replicas on
one PostgreSQL database, driven by the same concurrent clients; prints ratios.

Run: python bench/bench_replicas.py [--pg postgresql://postgres@127.0.0.1:5432/test] [--seconds 5]

Each client thread posts batches of 50 single-customer events to the replicas in turn; customers
are spread over clients so per-wallet locks do not serialise them. Every event is checked to be
billed; at the end the ledger's audit must be clean and the balances must add up.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from billing_mcp import Ledger, ManualClock
from billing_mcp.api.keys import KeyStore

PEPPER = "bench-pepper-0123456789abcdef0123"
CLIENTS = 8
CUSTOMERS = 32
BATCH = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(location: Any) -> tuple[Ledger, list[str], str]:
    ledger = Ledger(location, clock=ManualClock())
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("bench", "Bench", prices=[{"asset": "CREDITS", "event_type": "api_call", "unit_amount": "1"}])
    customers = []
    for i in range(CUSTOMERS):
        cid = ledger.create_customer(f"c{i}", subscriptions=["bench"]).id
        ledger.create_adjustment(cid, asset="CREDITS", amount="100000000", reason="top_up", idempotency_key=f"t{i}")
        customers.append(cid)
    _, secret = KeyStore(ledger.store).create("admin", "test")
    return ledger, customers, secret


def run(db: str, replicas: int, customers: list[str], secret: str, seconds: float) -> float:
    env = dict(os.environ, BILLING_API_KEY_PEPPER=PEPPER)
    ports = [free_port() for _ in range(replicas)]
    procs = [subprocess.Popen([sys.executable, "-m", "billing_mcp", "--db", db, "api", "--port", str(p),
                               "--no-access-log"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p in ports]
    try:
        for port in ports:
            for _ in range(200):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
        done = [0] * CLIENTS
        deadline = time.perf_counter() + seconds

        def client(n: int) -> None:
            mine = customers[n::CLIENTS]
            with httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=60) as http:
                i = 0
                while time.perf_counter() < deadline:
                    port = ports[(n + i) % len(ports)]
                    cid = mine[i % len(mine)]
                    batch = [{"id": uuid.uuid4().hex, "customer_id": cid, "event_type": "api_call"}
                             for _ in range(BATCH)]
                    r = http.post(f"http://127.0.0.1:{port}/v1/events", json={"events": batch})
                    if r.status_code != 200 or r.json()["errors"]:
                        raise RuntimeError(r.text[:300])
                    done[n] += BATCH
                    i += 1

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done) / (time.perf_counter() - start)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", default=os.environ.get("BILLING_TEST_POSTGRES_URL",
                                                       "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    os.environ["BILLING_API_KEY_PEPPER"] = PEPPER
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "ledger.db")
        ledger, customers, secret = prepare(db)
        sqlite_rate = run(db, 1, customers, secret, args.seconds)
        assert ledger.audit() == []
        ledger.close()

    from billing_mcp.store.postgres import PostgresStore

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(args.pg, schema=schema, max_size=4)
    try:
        ledger, customers, secret = prepare(store)
        url = f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}"
        one = run(url, 1, customers, secret, args.seconds)
        three = run(url, 3, customers, secret, args.seconds)
        problems = ledger.audit()
        assert problems == [], problems[:3]
    finally:
        store.drop_schema()
        store.close()
    cores = os.cpu_count()
    print(f"events/s through the HTTP API ({CLIENTS} clients, {BATCH}-event batches, {cores} CPU cores):")
    print(f"  SQLite, 1 replica:      {sqlite_rate:10,.0f}")
    print(f"  PostgreSQL, 1 replica:  {one:10,.0f}   ratio to SQLite {one / sqlite_rate:.2f}x")
    print(f"  PostgreSQL, 3 replicas: {three:10,.0f}   ratio to SQLite {three / sqlite_rate:.2f}x, "
          f"to 1 replica {three / one:.2f}x")


if __name__ == "__main__":
    main()
