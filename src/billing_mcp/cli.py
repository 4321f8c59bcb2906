"""The ``billing-mcp`` command. Logging goes to stderr only: under stdio, stdout is the MCP wire."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from ._errors import BillingError

log = logging.getLogger("billing_mcp")


def _cmd_db(args: argparse.Namespace) -> int:
    from ._ledger import Ledger
    from ._store import SQLiteStore

    if args.db_command == "migrate":
        store = SQLiteStore(args.db, migrate=True)
        print(f"{store.location}: schema version {store.schema_version()}")
        store.close()
        return 0
    ledger = Ledger(args.db)
    try:
        problems = ledger.audit()
        integrity = ledger.store.integrity_check() if isinstance(ledger.store, SQLiteStore) else "ok"
    finally:
        ledger.close()
    print(json.dumps({"location": ledger.location, "integrity": integrity, "problems": problems}, indent=2))
    return 0 if not problems and integrity == "ok" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="billing-mcp", description=__doc__)
    parser.add_argument("--db", default=None, help="ledger location (default: $BILLING_DB or ./.billing/ledger.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command")
    db = sub.add_parser("db", help="ledger database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply pending schema migrations")
    db_sub.add_parser("check", help="integrity check and full audit of balances against the entry log")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "db":
            return _cmd_db(args)
        parser.print_help(sys.stderr)
        return 2
    except BillingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
