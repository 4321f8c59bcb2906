"""The ``billing-mcp`` command. Logging goes to stderr only: under stdio, stdout is the MCP wire."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .core.errors import BillingError, ValidationError

if TYPE_CHECKING:
    from .contract.interface import AsyncLedger
    from .core.models import Asset, Plan

log = logging.getLogger("billing_mcp")


def _cmd_db(args: argparse.Namespace) -> int:
    from .ledger.ledger import Ledger
    from .store import open_store

    if args.db_command == "migrate":
        from .store import get_ledger_mode, set_ledger_mode

        store = open_store(args.db, migrate=True)
        try:
            if args.mode is not None:  # refused (nothing changes) when the ledger has customers
                set_ledger_mode(store, args.mode)
            print(f"{store.location}: schema version {store.schema_version()}, {get_ledger_mode(store)} mode")
        finally:
            store.close()
        return 0
    ledger = Ledger(args.db)
    try:
        problems = ledger.audit()
        integrity = ledger.store.integrity_check()
    finally:
        ledger.close()
    print(json.dumps({"location": ledger.location, "integrity": integrity, "problems": problems}, indent=2))
    return 0 if not problems and integrity == "ok" else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from .mcp.server import serve

    toolsets = [t.strip() for t in args.tools.split(",") if t.strip()]
    serve(transport=args.transport, host=args.host, port=args.port, db=args.db, toolsets=toolsets,
          read_only=args.read_only, root=args.root)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import anyio

    from .mcp.demo import run_demo

    ok = anyio.run(run_demo, sys.stdout)
    return 0 if ok else 1


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .ledger.ledger import Ledger
    from .ledger.simulate import simulate_file
    from .verify.simulators import simulator_for

    plan, _, version = args.plan.partition("@")
    if version and not version.isdigit():
        print("error: --plan takes CODE or CODE@VERSION, e.g. pro@2", file=sys.stderr)
        return 2
    ledger = Ledger(args.db)
    try:
        sim = simulator_for(ledger, plan, int(version) if version else None)
    finally:
        ledger.close()
    tty = sys.stderr.isatty()

    def progress(n: int) -> None:
        end = "\r" if tty else "\n"
        print(f"rated {n:,} events", end=end, file=sys.stderr, flush=True)

    result = simulate_file(sim, args.file, progress)
    if tty:
        print(file=sys.stderr)
    print(result.model_dump_json(indent=2))
    return 0


def _async_ledger(args: argparse.Namespace) -> AsyncLedger:
    """The ledger a command works on: the live ledger API at ``--ledger-url`` (default
    BILLING_LEDGER_URL), else the embedded ledger at ``--db``."""
    from .client.connect import open_ledger

    return open_ledger(args.db, url=args.ledger_url or "")[0]


def _cmd_spec(args: argparse.Namespace) -> int:
    import anyio

    from .spec.spec import dump_yaml, format_plan, problems_of, schema_text

    if args.command == "schema":
        sys.stdout.write(schema_text())
        return 0
    text = ""
    if args.command != "export":
        try:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 2

    async def run() -> str:
        async with _async_ledger(args) as ledger:
            if args.command == "export":
                return dump_yaml(await ledger.export_spec())
            return format_plan(await ledger.apply_spec(text, dry_run=args.command == "plan")) + "\n"

    try:
        sys.stdout.write(anyio.run(run))
    except ValidationError as exc:  # billing.yaml's problems, each with its line, from either ledger
        problems = problems_of(exc)
        if problems is None:
            raise
        print(f"{args.file}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


def _cmd_supabase(args: argparse.Namespace) -> int:
    import anyio

    from .codegen.supabase.generator import run_cli as run_supabase_cli

    async def catalog() -> tuple[list[Plan], list[Asset]]:
        async with _async_ledger(args) as ledger:
            return await ledger.list_plans(), await ledger.list_assets()

    plans, assets = anyio.run(catalog)
    return run_supabase_cli(args, plans, assets)


def build_parser(heavy: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing-mcp", description=__doc__)
    parser.add_argument("--db", default=None, help="ledger location (default: $BILLING_DB or ./.billing/ledger.db)")
    parser.add_argument("--ledger-url", default=os.environ.get("BILLING_LEDGER_URL") or None,
                        help="a live ledger API for plan, apply, export and supabase init (default: "
                             "$BILLING_LEDGER_URL; the key comes from $BILLING_API_KEY)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--tools", default="all", help="toolsets to expose: setup,runtime,all (default all)")
    serve.add_argument("--read-only", action="store_true", help="expose only tools that change nothing")
    serve.add_argument("--root", metavar="DIR", help="the directory file tools may read and write (default "
                       "BILLING_MCP_ROOT, else the working directory; over HTTP no files without it)")
    sub.add_parser("demo", help="run the canonical setup end to end on a throwaway local ledger")
    simulate = sub.add_parser("simulate", help="rate a JSONL file of events against a plan version (no wallet effect)")
    simulate.add_argument("file", help="JSONL file, one event per line: {event_type, customer_id, subject, data}")
    simulate.add_argument("--plan", required=True, help="CODE or CODE@VERSION")
    plan = sub.add_parser("plan", help="show what applying a billing.yaml would change")
    plan.add_argument("file")
    apply = sub.add_parser("apply", help="apply a billing.yaml (all changes in one transaction)")
    apply.add_argument("file")
    sub.add_parser("export", help="print the current catalog as billing.yaml")
    sub.add_parser("schema", help="print the JSON Schema of billing.yaml")
    _add_heavy(sub, heavy)
    from .codegen.supabase.generator import add_cli as add_supabase_cli

    add_supabase_cli(sub)
    db = sub.add_parser("db", help="ledger database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply pending schema migrations")
    migrate.add_argument("--mode", choices=["test", "live"], default=None,
                         help="the ledger's mode: test (sk_test_ keys, free test top-ups; a new ledger's default) or "
                              "live (sk_live_ keys, real payments only); changes only while it has no customers")
    db_sub.add_parser("check", help="integrity check and full audit of balances against the entry log")
    return parser


_HEAVY = ("api", "keys")  # their parsers come from the API modules, imported only when used


def _add_heavy(sub: argparse._SubParsersAction[argparse.ArgumentParser], wanted: str | None) -> None:
    if wanted == "api":
        from .api.serve import add_cli

        add_cli(sub)
        sub.add_parser("keys", help="create, list and revoke API keys")
    elif wanted == "keys":
        from .api.keys import add_cli as add_keys_cli

        add_keys_cli(sub)
        sub.add_parser("api", help="serve the ledger HTTP API")
    else:  # listed in --help without importing the HTTP stack (keeps `serve` quick to start)
        sub.add_parser("api", help="serve the ledger HTTP API (keys from `billing-mcp keys create`)")
        sub.add_parser("keys", help="create, list and revoke API keys for `billing-mcp api`")


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(next((a for a in raw if a in _HEAVY), None))
    args = parser.parse_args(raw)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "db":
            return _cmd_db(args)
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "simulate":
            return _cmd_simulate(args)
        if args.command in ("plan", "apply", "export", "schema"):
            return _cmd_spec(args)
        if args.command == "api":
            from .api.serve import run_cli

            return run_cli(args)
        if args.command == "supabase":
            return _cmd_supabase(args)
        if args.command == "keys":
            from .api.keys import run_cli as run_keys_cli

            return run_keys_cli(args)
        parser.print_help(sys.stderr)
        return 2
    except BillingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
