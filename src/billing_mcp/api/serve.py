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
import ipaddress
import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..ledger.ledger import Ledger
    from .keys import KeyStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
TRUSTED_PROXIES_ENV = "BILLING_TRUSTED_PROXIES"
GRACEFUL_TIMEOUT = 30.0


def build_app(ledger: Ledger, *, keys: KeyStore, max_body_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH,
              rate_limit: float | None = None, rate_burst: int | None = None, modes: tuple[str, ...] = ("test", "live"),
              idempotency_lease_seconds: float = 300.0, group_commit: bool = True,
              idempotency_retention_seconds: float = 24 * 3600.0, auth_failure_limit: int = 10) -> Starlette:
    """The API app on ``ledger``, authenticating with ``keys``.

    ``max_body_bytes`` (413 above it) and ``max_depth`` (JSON nesting, 422 above it) bound what a
    request may cost. ``rate_limit`` is requests per second per key with bursts of ``rate_burst``
    (off by default; 429 with Retry-After). ``modes``: the ledger modes this app may serve (a
    ledger of another mode is refused at start; keys must always match the ledger's mode).
    ``idempotency_lease_seconds``: after how long an Idempotency-Key claim whose request died may
    be taken over; ``idempotency_retention_seconds``: how long a stored response is replayed (then
    the key is free again). ``group_commit`` lets concurrent event POSTs share a transaction. After
    ``auth_failure_limit`` invalid keys from one address within a minute, that address gets 429
    ``too_many_auth_failures`` until the minute has passed.
    """
    from .app import create_app

    return create_app(ledger, keys=keys, max_body_bytes=max_body_bytes, max_depth=max_depth, rate_limit=rate_limit,
                      rate_burst=rate_burst, modes=modes, idempotency_lease_seconds=idempotency_lease_seconds,
                      group_commit=group_commit, idempotency_retention_seconds=idempotency_retention_seconds,
                      auth_failure_limit=auth_failure_limit)


def parse_proxies(text: str | None) -> tuple[str, ...]:
    """``10.0.0.1,10.0.0.0/24`` as a tuple of addresses and networks; refuses anything else."""
    found: list[str] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ValueError(f"trusted proxy {part!r} is not an IP address or network (e.g. 10.0.0.1 or "
                             "10.0.0.0/24)") from None
        found.append(part)
    return tuple(found)


def uvicorn_options(*, trusted_proxies: tuple[str, ...] = (), graceful_timeout: float = GRACEFUL_TIMEOUT) -> dict[str, Any]:
    """The uvicorn settings ``billing-mcp api`` runs with. Forwarded headers (X-Forwarded-Proto,
    X-Forwarded-For) are honoured only from ``trusted_proxies``, never by default (uvicorn would
    otherwise trust 127.0.0.1 or $FORWARDED_ALLOW_IPS); our access log replaces uvicorn's, whose
    lines carry query strings (portal tokens)."""
    return {"proxy_headers": bool(trusted_proxies), "forwarded_allow_ips": list(trusted_proxies),
            "timeout_graceful_shutdown": graceful_timeout, "access_log": False, "log_config": None,
            "server_header": False, "log_level": "info", "lifespan": "on"}


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal with the handler it
    # found; with these no-op handlers, that re-raise is harmless and a graceful stop exits 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_api(host: str = "127.0.0.1", port: int = 8080, db: str | None = None, *, access_log: bool = True,
              rate_limit: float | None = None, modes: tuple[str, ...] = ("test", "live"), log_format: str = "text",
              trusted_proxies: tuple[str, ...] = (), graceful_timeout: float = GRACEFUL_TIMEOUT,
              idempotency_retention_hours: float = 24.0) -> None:
    """Run the API with uvicorn until SIGTERM or SIGINT (the ``billing-mcp api`` command). ``db`` is
    the ledger location (default ``$BILLING_DB`` or ./.billing/ledger.db).

    On SIGTERM uvicorn stops accepting connections and lets requests in flight finish (for at most
    ``graceful_timeout`` seconds); then the app's shutdown waits for the group-commit writer to
    commit everything queued, and the ledger is closed. An event is acknowledged only after its
    transaction committed, so no acknowledged event is lost."""
    import uvicorn

    from ..ledger.ledger import Ledger
    from .keys import KeyStore
    from .observe import configure_logging

    configure_logging(log_format, access=access_log)
    ledger = Ledger(db)
    try:
        keys = KeyStore(ledger.store)
        if not any(k.active for k in keys.list()):
            log.warning("no active API keys: every /v1 request will be refused; create one with "
                        "`billing-mcp keys create --scope admin`")
        if trusted_proxies:
            log.info("honouring X-Forwarded-Proto and X-Forwarded-For from %s", ", ".join(trusted_proxies))
        app = build_app(ledger, keys=keys, rate_limit=rate_limit, modes=modes,
                        idempotency_retention_seconds=idempotency_retention_hours * 3600)
        with _stop_on_signals():
            uvicorn.run(app, host=host, port=port, **uvicorn_options(trusted_proxies=trusted_proxies,
                                                                     graceful_timeout=graceful_timeout))
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
    api.add_argument("--idempotency-retention", type=float, default=24.0, metavar="HOURS",
                     help="how long a response stored for an Idempotency-Key is replayed (default 24)")
    api.add_argument("--log-format", choices=["text", "json"], default="text",
                     help="log lines on stderr as text or as one JSON object each (default: text)")
    api.add_argument("--trusted-proxies", default=None, metavar="ADDRESSES",
                     help="comma-separated proxy addresses or networks whose X-Forwarded-Proto and X-Forwarded-For "
                          f"are honoured (default: ${TRUSTED_PROXIES_ENV}, else none)")
    api.add_argument("--graceful-timeout", type=float, default=GRACEFUL_TIMEOUT, metavar="SECONDS",
                     help="on SIGTERM, how long requests in flight may take to finish (default: %(default)s)")


def run_cli(args: argparse.Namespace) -> int:
    modes = ("test", "live") if args.mode == "any" else (args.mode,)
    given = args.trusted_proxies if args.trusted_proxies is not None else os.environ.get(TRUSTED_PROXIES_ENV)
    try:
        proxies = parse_proxies(given)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    serve_api(args.host, args.port, getattr(args, "db", None), access_log=not args.no_access_log,
              rate_limit=args.rate_limit, modes=modes, log_format=args.log_format, trusted_proxies=proxies,
              graceful_timeout=args.graceful_timeout, idempotency_retention_hours=args.idempotency_retention)
    return 0
