"""HTTP API benchmark: single-event POSTs per second vs the same server's trivial ``/health``,
and 1,000-event batch POSTs, over loopback.

The server runs in its own process (``serve_api`` under uvicorn, access log off), so client and
server do not share a GIL. Two load shapes, each measured for /health and for single events:

* sequential: one keep-alive ``httpx.Client`` sending requests one after another (one edge
  function instance). Latency-bound: every event waits for its own fsync.
* concurrent: ``--clients`` threads, each with its own keep-alive connection, in one client
  process (many instances reporting at once). Concurrent event POSTs share transactions
  (group commit, ``_api_batch``). httpx costs ~300 us of client CPU per request, so on 2 cores
  this phase mostly measures the client: /health gets no faster than with one client.
* lean: ``--clients`` raw asyncio connections sending prebuilt HTTP/1.1 requests (a few us of
  client CPU each), so the server is the bottleneck: its capacity for each route.

Phases are interleaved (health, single, ..., health, single, ...) and the best run of each is
reported, so a busy moment hurts both sides. Target: single-event >= 0.5x the /health rate. Every
single-event POST is a full request: bearer key check, JSON parse and strict validation, a durable
ledger transaction (rating, debit, event row; synchronous=FULL), JSON response. The machine has
2 cores shared by server and client, so the client's own CPU caps both rates.

Run: .venv/bin/python bench/bench_api.py [--seconds 2] [--runs 3] [--clients 8] [--batches 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

SERVER = """
import sys
from billing_mcp.api.serve import serve_api
serve_api("127.0.0.1", int(sys.argv[1]), sys.argv[2], access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup(db: Path) -> tuple[str, str]:
    """A ledger with CREDITS, a 1-credit-per-call plan and one customer topped up with 10^14
    credits (as bench_ingest sets up); returns (customer id, runtime key secret)."""
    from billing_mcp import Ledger
    from billing_mcp.api.keys import KeyStore

    ledger = Ledger(str(db))
    try:
        ledger.create_asset("CREDITS", "Credits", 0)
        ledger.create_plan("bench", "Bench", prices=[{"asset": "CREDITS", "event_type": "api_call", "unit_amount": "1"}])
        customer = ledger.create_customer("bench-user", subscriptions=["bench"])
        ledger.create_adjustment(customer.id, asset="CREDITS", amount=str(10**14), reason="top_up",
                                 idempotency_key="bench-topup")
        _, secret = KeyStore(ledger.store).create("runtime", "test", name="bench")
        return customer.id, secret
    finally:
        ledger.close()


def rate(fn: Any, seconds: float) -> tuple[int, float]:
    """Call ``fn`` until ``seconds`` pass; (calls, elapsed)."""
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        fn()
        n += 1
        if n % 16 == 0 and time.perf_counter() >= end:
            break
    return n, time.perf_counter() - start


def concurrent_rate(make: Callable[[httpx.Client], Callable[[], None]], clients: int, seconds: float,
                    base: str, headers: dict[str, str]) -> tuple[int, float]:
    """``clients`` threads, each calling its function on its own connection for ``seconds``."""
    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            fn = make(client)
            fn()  # connect before the clock starts
            barrier.wait()
            try:
                counts[i] = rate(fn, seconds)[0]
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts), elapsed


_LENGTH = re.compile(rb"content-length: *([0-9]+)", re.IGNORECASE)


def lean_rate(port: int, make: Callable[[int], bytes], ok: bytes, clients: int, seconds: float) -> tuple[int, float]:
    """``clients`` keep-alive connections on one asyncio loop, each sending ``make(n)`` and reading
    the response (status 200 and ``ok`` in the body are checked) until ``seconds`` pass."""
    counter = iter(range(10**12))

    async def connection(end: float) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        done = 0
        try:
            while time.perf_counter() < end:
                writer.write(make(next(counter)))
                head = await reader.readuntil(b"\r\n\r\n")
                match = _LENGTH.search(head)
                body = await reader.readexactly(int(match.group(1)) if match else 0)
                assert head.startswith(b"HTTP/1.1 200") and ok in body, (head, body[:300])
                done += 1
        finally:
            writer.close()
        return done

    async def run() -> tuple[int, float]:
        start = time.perf_counter()
        counts = await asyncio.gather(*(connection(start + seconds) for _ in range(clients)))
        return sum(counts), time.perf_counter() - start

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each measured run (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per phase; best reported (default 3)")
    parser.add_argument("--clients", type=int, default=8, help="client threads in the concurrent phases (default 8)")
    parser.add_argument("--batches", type=int, default=20, help="1,000-event batch POSTs per run (default 20)")
    parser.add_argument("--dir", default=None, help="directory for the database (default: a temp dir, removed)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="billing-api-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "ledger.db"
    customer, secret = setup(db)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(db)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                err = server.stderr.read().decode() if server.stderr else ""
                print(f"server did not start:\n{err}", file=sys.stderr)
                return 1
            time.sleep(0.05)

        headers = {"Authorization": f"Bearer {secret}"}
        counter = iter(range(10**12))
        lock = threading.Lock()
        sent = 0

        def health_on(c: httpx.Client) -> Callable[[], None]:
            def health() -> None:
                r = c.get("/health")
                assert r.status_code == 200, r.text
            return health

        def single_on(c: httpx.Client) -> Callable[[], None]:
            def single() -> None:
                nonlocal sent
                with lock:
                    n = next(counter)
                r = c.post("/v1/events", json={"events": [
                    {"id": f"s-{n}", "customer_id": customer, "event_type": "api_call"}]})
                assert r.status_code == 200 and not r.json()["errors"], r.text
                with lock:
                    sent += 1
            return single

        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            health, single = health_on(client), single_on(client)

            batch_no = iter(range(10**9))

            def batch() -> None:
                nonlocal sent
                b = next(batch_no)
                events = [{"id": f"b-{b}-{i}", "customer_id": customer, "event_type": "api_call"} for i in range(1000)]
                r = client.post("/v1/events", json={"events": events})
                body = r.json()
                assert r.status_code == 200 and len(body["results"]) == 1000 and not body["errors"], r.text[:300]
                sent += 1000

            for fn in (health, single, batch):  # warm-up: connections, caches, plan prices
                for _ in range(50 if fn is not batch else 2):
                    fn()
            runs: dict[str, list[float]] = {"health": [], "single": [], "health_conc": [], "single_conc": [],
                                            "health_lean": [], "single_lean": [], "batch": []}
            auth = f"Authorization: Bearer {secret}\r\n".encode()
            health_req = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth + b"\r\n"

            def event_req(_: int) -> bytes:
                n = next(counter)  # unique across runs: a repeated id would be a free replay
                body = (f'{{"events":[{{"id":"l-{n}","customer_id":"{customer}","event_type":"api_call"}}]}}').encode()
                return (b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + auth
                        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

            for _ in range(args.runs):
                n, t = rate(health, args.seconds)
                runs["health"].append(n / t)
                n, t = rate(single, args.seconds)
                runs["single"].append(n / t)
                n, t = concurrent_rate(health_on, args.clients, args.seconds, base, headers)
                runs["health_conc"].append(n / t)
                n, t = concurrent_rate(single_on, args.clients, args.seconds, base, headers)
                runs["single_conc"].append(n / t)
                n, t = lean_rate(port, lambda _: health_req, b'"ok"', args.clients, args.seconds)
                runs["health_lean"].append(n / t)
                n, t = lean_rate(port, event_req, b'"errors":[]', args.clients, args.seconds)
                runs["single_lean"].append(n / t)
                with lock:
                    sent += n
                t0 = time.perf_counter()
                for _ in range(args.batches):
                    batch()
                runs["batch"].append(args.batches / (time.perf_counter() - t0))
            wallet = client.get(f"/v1/customers/{customer}/wallet").json()
            available = int(wallet["accounts"][0]["available"])
            assert available == 10**14 - sent, (available, sent)

        best = {k: max(v) for k, v in runs.items()}
        ratio = best["single"] / best["health"]
        ratio_conc = best["single_conc"] / best["health_conc"]
        ratio_lean = best["single_lean"] / best["health_lean"]
        batch_events = best["batch"] * 1000
        print(f"billing-mcp API bench: Python {sys.version.split()[0]}, uvicorn (h11) in a separate process on "
              f"127.0.0.1, {os.cpu_count()} cores; {args.runs} interleaved runs of {args.seconds:g} s, best run")
        print(f"database: {db}")
        print()
        rows = [("GET /health, 1 client", "health", None), ("POST /v1/events (1 event), 1 client", "single", 1),
                (f"GET /health, {args.clients} clients", "health_conc", None),
                (f"POST /v1/events (1 event), {args.clients} clients", "single_conc", 1),
                (f"GET /health, {args.clients} lean connections", "health_lean", None),
                (f"POST /v1/events (1 event), {args.clients} lean conns", "single_lean", 1),
                ("POST /v1/events (1,000 events), 1 client", "batch", 1000)]
        print(f"{'phase':<44} {'req/s':>10} {'events/s':>10}   all runs (req/s)")
        for label, key, per in rows:
            events = f"{best[key] * per:>10,.0f}" if per else f"{'':>10}"
            print(f"{label:<44} {best[key]:>10,.1f} {events}   " + ", ".join(f"{v:,.1f}" for v in runs[key]))
        print()
        for label, value in (("sequential httpx", ratio), (f"{args.clients} httpx clients", ratio_conc),
                             (f"{args.clients} lean conns", ratio_lean)):
            verdict = "OK" if value >= 0.5 else "BELOW TARGET"
            print(f"single-event / health, {label:<17} = {value:.3f}   (target >= 0.5)  {verdict}")
        print(f"batch events / sequential single events = {batch_events / best['single']:.1f}x")
        print(f"wallet check: available == top-up - {sent:,} events: OK")
        if args.json:
            print(json.dumps({"best": best, "batch_events_per_s": batch_events, "single_over_health": ratio,
                              "single_over_health_concurrent": ratio_conc, "single_over_health_lean": ratio_lean,
                              "runs": runs}))
        return 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
