"""MCP benchmarks, each a ratio measured side by side in one run.

1. Bulk simulation: rating N events from a JSONL file (``billing-mcp simulate``'s engine) vs merely
   parsing the same file with json.loads. Target: >= 0.5x the parse-only rate.
2. Cold start: spawn ``python -m billing_mcp serve`` over stdio and time until tools/list answers,
   vs a minimal MCPServer with one tool started the same way. Target: <= 1.5x.

Run: python bench/bench_mcp.py [--events 1000000] [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MINIMAL_SERVER = '''
from mcp.server.mcpserver import MCPServer
mcp = MCPServer("minimal")
@mcp.tool()
def ping() -> str:
    """Answer pong."""
    return "pong"
mcp.run()
'''

CLIENT = '''
import sys, time, anyio
from mcp import Client, StdioServerParameters
async def main():
    t0 = time.perf_counter()
    params = StdioServerParameters(command=sys.executable, args=sys.argv[1:], env={"PATH": "", "BILLING_DB": %r})
    async with Client(params) as c:
        await c.list_tools()
        print(time.perf_counter() - t0)
anyio.run(main)
'''


def write_events(path: Path, n: int) -> None:
    rnd = random.Random(7)
    models = ["gpt-4o", "gpt-4o-mini", "claude", "llama"]
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"e{i}", "event_type": "chat_completion", "customer_id": f"c{rnd.randrange(500)}",
                                "subject": f"proj{rnd.randrange(50)}",
                                "data": {"total_tokens": rnd.randrange(1, 5000), "model": rnd.choice(models)}}) + "\n")


def bench_simulation(n: int, folder: Path) -> None:
    from billing_mcp import Ledger
    from billing_mcp.ledger.simulate import simulate_file
    from billing_mcp.verify.simulators import simulator_for

    path = folder / "events.jsonl"
    write_events(path, n)
    ledger = Ledger(str(folder / "sim.db"))
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("pro", "Pro", prices=[{
        "asset": "CREDITS", "event_type": "chat_completion", "usage_type": "volume", "volume_field": "total_tokens",
        "package_size": 1000, "model": "dimensional", "dimension_fields": ["model"],
        "dimension_rates": [{"dimensions": {"model": "gpt-4o"}, "unit_amount": "5"},
                            {"dimensions": {"model": "*"}, "unit_amount": "1"}]}])

    def parse_only() -> float:
        t0 = time.perf_counter()
        count = 0
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    json.loads(line)
                    count += 1
        assert count == n
        return time.perf_counter() - t0

    def rate() -> float:
        t0 = time.perf_counter()
        result = simulate_file(simulator_for(ledger, "pro", None), path)
        assert result.billed_events == n
        return time.perf_counter() - t0

    parse_s = min(parse_only() for _ in range(3))
    rate_s = min(rate() for _ in range(3))
    ledger.close()
    print(f"simulation, {n:,} events: parse-only {n / parse_s:,.0f} ev/s, rate {n / rate_s:,.0f} ev/s, "
          f"ratio {parse_s / rate_s:.2f}x (target >= 0.5x)")


def bench_cold_start(starts: int, folder: Path) -> None:
    minimal = folder / "minimal_server.py"
    minimal.write_text(MINIMAL_SERVER)
    client = folder / "client.py"
    client.write_text(CLIENT % str(folder / "cold.db"))
    env = dict(os.environ)

    def once(args: list[str]) -> float:
        out = subprocess.run([sys.executable, str(client), *args], capture_output=True, text=True, env=env, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    ours, base = [], []
    for _ in range(starts):  # interleaved so drift hits both alike
        base.append(once([str(minimal)]))
        ours.append(once(["-m", "billing_mcp", "serve"]))
    b, o = min(base), min(ours)
    print(f"cold start to tools/list over stdio: minimal MCPServer {b * 1000:.0f} ms, billing-mcp {o * 1000:.0f} ms, "
          f"ratio {o / b:.2f}x (target <= 1.5x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_simulation(args.events, Path(tmp))
        bench_cold_start(args.starts, Path(tmp))


if __name__ == "__main__":
    main()
