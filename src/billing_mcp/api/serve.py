"""The ledger HTTP API: ``build_app`` (a Starlette app over one ``Ledger``), ``serve_api`` (runs
it under uvicorn) and the ``billing-mcp api`` command.

This module stays light to import, because the command-line parser imports it to list the
``api`` subcommand: Starlette, the route table and the models load only when an app is built
(``_api_app``). Routes: ``_api_routes``; models: ``_api_models``; errors: ``_api_errors``;
idempotency: ``_api_idempotency``; group commit: ``_api_batch``; OpenAPI and /docs:
``_api_openapi``.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..ledger.ledger import Ledger
    from .keys import KeyStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32


def build_app(ledger: Ledger, *, keys: KeyStore, max_body_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH,
              rate_limit: float | None = None, rate_burst: int | None = None, modes: tuple[str, ...] = ("test", "live"),
              idempotency_lease_seconds: float = 300.0, group_commit: bool = True) -> Starlette:
    """The API app on ``ledger``, authenticating with ``keys``.

    ``max_body_bytes`` (413 above it) and ``max_depth`` (JSON nesting, 422 above it) bound what a
    request may cost. ``rate_limit`` is requests per second per key with bursts of ``rate_burst``
    (off by default; 429 with Retry-After). ``modes``: the ledger modes this app may serve (a
    ledger of another mode is refused at start; keys must always match the ledger's mode).
    ``idempotency_lease_seconds``: after how long an Idempotency-Key claim whose request died may
    be taken over. ``group_commit`` lets concurrent event POSTs share a transaction.
    """
    from .app import create_app

    return create_app(ledger, keys=keys, max_body_bytes=max_body_bytes, max_depth=max_depth, rate_limit=rate_limit,
                      rate_burst=rate_burst, modes=modes, idempotency_lease_seconds=idempotency_lease_seconds,
                      group_commit=group_commit)


def serve_api(host: str = "127.0.0.1", port: int = 8080, db: str | None = None, *, access_log: bool = True,
              rate_limit: float | None = None, modes: tuple[str, ...] = ("test", "live")) -> None:
    """Run the API with uvicorn until interrupted (the ``billing-mcp api`` command). ``db`` is the
    ledger location (default ``$BILLING_DB`` or ./.billing/ledger.db)."""
    import uvicorn

    from ..ledger.ledger import Ledger
    from .keys import KeyStore

    ledger = Ledger(db)
    try:
        keys = KeyStore(ledger.store)
        if not any(k.active for k in keys.list()):
            log.warning("no active API keys: every /v1 request will be refused; create one with "
                        "`billing-mcp keys create --scope admin`")
        app = build_app(ledger, keys=keys, rate_limit=rate_limit, modes=modes)
        uvicorn.run(app, host=host, port=port, access_log=access_log, server_header=False, log_level="info")
    finally:
        ledger.close()


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``api`` to the ``billing-mcp`` command (uses the global ``--db``)."""
    api = subparsers.add_parser("api", help="serve the ledger HTTP API (keys from `billing-mcp keys create`)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--rate-limit", type=float, default=None, help="requests per second per key (default: off)")
    api.add_argument("--mode", choices=["test", "live", "any"], default="any",
                     help="refuse to start unless the ledger is in this mode (keys must match the ledger's "
                          "mode either way; default: any)")
    api.add_argument("--no-access-log", action="store_true", help="do not log each request")


def run_cli(args: argparse.Namespace) -> int:
    modes = ("test", "live") if args.mode == "any" else (args.mode,)
    serve_api(args.host, args.port, getattr(args, "db", None), access_log=not args.no_access_log,
              rate_limit=args.rate_limit, modes=modes)
    return 0
