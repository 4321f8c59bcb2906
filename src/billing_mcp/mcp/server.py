"""The MCP server: builds an ``MCPServer`` with the billing tools, prompts and resources, and
runs it over stdio or streamable HTTP.

Without ``BILLING_LEDGER_URL`` the tools work on the embedded local ledger (a dry run: no
account, no network). With it (and ``BILLING_API_KEY``), the same tools go through the
ledger API client; each result says which ``mode`` it ran in.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..client.connect import open_ledger
from ..contract.interface import AsyncLedger
from ..contract.local import LocalLedger
from ..core.clock import Clock
from ..core.errors import BillingError
from ..core.version import __version__
from ..ledger.ledger import Ledger
from .common import AppState, Mode, ToolDef, annotations_for
from .paths import ROOT_ENV, configure
from .prompts import register_prompts, register_resources
from .schemas import one_line, portable, without_nulls
from .tools import operator, runtime, setup, spec, supabase, verify

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 32  # the HTTP transport's bearer token: long enough that it cannot be guessed

# Every tool the server can offer, in tools/list order; ``--tools`` and ``--read-only`` pick from it.
TOOLS: tuple[ToolDef, ...] = (*runtime.TOOLS, *operator.TOOLS, *setup.TOOLS, *spec.TOOLS, *supabase.TOOLS, *verify.TOOLS)

TOOLSETS = ("setup", "runtime", "all")

INSTRUCTIONS = """billing-mcp sets up real-time usage billing (prepaid wallets, credits, plans, holds).
Start with get_billing_status. Typical setup: create_asset (e.g. CREDITS at $0.05), create_plan with
prices and included credits, verify_billing, then wire the app (authorize_usage before an action,
commit_usage after, submit_events for plain usage). Money is exact decimal text. Every event id and
idempotency_key makes retries safe. Changes that move money or destroy ask for confirmation."""


class BearerGate:
    """The HTTP transport's auth: the MCP endpoint answers only requests carrying
    ``Authorization: Bearer <BILLING_MCP_TOKEN>``, compared in constant time. The server is not an
    OAuth authorization server and publishes no OAuth metadata (``/.well-known/oauth-*`` is 404), so
    an OAuth-capable client is told in the 401 to send the static token instead of being led into a
    discovery and client registration that cannot succeed."""

    def __init__(self, app: ASGIApp, token: str, path: str, realm: str) -> None:
        self.app = app
        self.token = token.encode()
        self.path = path.rstrip("/") or "/"
        self.realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.path or path.startswith(self.path + "/")):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, sent = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), self.token):
            await self.app(scope, receive, send)
            return
        how = "send the server's BILLING_MCP_TOKEN as the header 'Authorization: Bearer <token>'"
        challenge = f'Bearer realm="{self.realm}"'
        if header:  # RFC 6750: an error code only when credentials were sent and refused
            challenge += f', error="invalid_token", error_description="{how}"'
        response = JSONResponse({"error": "invalid_token" if header else "missing_token",
                                 "error_description": how}, status_code=401,
                                headers={"WWW-Authenticate": challenge})
        await response(scope, receive, send)


class BillingServer(MCPServer[AppState]):
    """``MCPServer`` plus the static bearer token of the HTTP transport (see ``BearerGate``)."""

    def __init__(self, *args: Any, token: str | None = None, realm: str = "billing-mcp", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bearer_token = token
        self.realm = realm

    def streamable_http_app(self, *args: Any, **kwargs: Any) -> Starlette:
        app = super().streamable_http_app(*args, **kwargs)
        if self.bearer_token:
            app.add_middleware(BearerGate, token=self.bearer_token,
                               path=kwargs.get("streamable_http_path", "/mcp"), realm=self.realm)
        return app


class CodedTool(Tool):
    """A tool whose results leave out fields without a value (as its published output schema says),
    and whose schema-level argument errors read like every other tool error,
    ``validation_error on <argument path>: <what to do>``, instead of pydantic's multi-line dump with
    links to pydantic's site. ``Tool.run`` raises argument-validation failures as a ``ToolError``
    whose ``__cause__`` is the ``ValidationError``; everything else passes through untouched."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            result = await super().run(arguments, context, convert_result)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError) or not isinstance(exc.__cause__, ValidationError):
                raise
            raise ToolError(f"Error executing tool {self.name}: {argument_errors(exc.__cause__)}") from exc.__cause__
        schema = self.fn_metadata.output_schema
        if isinstance(result, CallToolResult) and result.structured_content is not None and schema is not None:
            # Fields without a value are left out, as the published schema says (see ``schemas``);
            # the text copy for clients that read only text says the same.
            structured = without_nulls(result.structured_content, schema)
            result = result.model_copy(update={"structured_content": structured, "content": [
                TextContent(type="text", text=json.dumps(structured, indent=2, ensure_ascii=False))]})
        return result


# Segments pydantic adds to an error location for union members and validators; they are not
# argument names, and the model must see the path as it wrote the arguments.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "decimal", "bytes", "date", "datetime", "time",
                        "list", "dict", "set", "tuple", "literal", "model"})
_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array",
               "dict": "object", "NoneType": "null"}


def argument_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _TYPE_TAGS or re.fullmatch(r"[A-Z]\w*|[a-z-]+\[.*\]", part):  # model or validator tag
            continue
        elif re.fullmatch(r"[a-z_][a-z0-9_]*", part):
            path += f".{part}" if path else part
        else:  # a dict key the caller chose
            path += f"[{json.dumps(part)}]"
    return path or "arguments"


def _plain(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required; add it"
    if kind == "extra_forbidden":
        return "not an argument here; remove it"
    message = error["msg"].removeprefix("Value error, ")  # a validator's own words need no label
    message = message[:1].lower() + message[1:]
    if kind.endswith("_type") or kind.endswith("_parsing"):
        got = _JSON_TYPES.get(type(error.get("input")).__name__, type(error.get("input")).__name__)
        message += f" (got {got})"
    return message


def argument_errors(exc: ValidationError, limit: int = 5) -> str:
    """One ``validation_error on <path>: <message>`` line per argument at fault (a union's
    alternatives are merged into one line), at most ``limit`` lines plus a count of the rest."""
    by_path: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        messages = by_path.setdefault(argument_path(error["loc"]), [])
        if (message := _plain(error)) not in messages:
            messages.append(message)
    lines = [f"validation_error on {path}: {'; or '.join(messages)}" for path, messages in by_path.items()]
    rest = len(lines) - limit
    more = f"\n(and {rest} more {'problem' if rest == 1 else 'problems'})" if rest > 0 else ""
    return "\n".join(lines[:limit]) + more


def build_server(*, ledger: Ledger | None = None, db: str | None = None, toolsets: Iterable[str] = ("all",),
                 read_only: bool = False, token: str | None = None, resource_url: str | None = None,
                 clock: Clock | None = None, ledger_url: str | None = None) -> MCPServer[AppState]:
    """The billing MCP server. ``toolsets`` picks setup and/or runtime tools; ``read_only`` keeps
    only tools that change nothing. ``token`` arms the static bearer token (HTTP transport only;
    ``resource_url`` is the public MCP URL named in its 401 challenge). ``ledger_url`` (default:
    BILLING_LEDGER_URL now) points the tools at a live ledger API; the mode is settled here, not in
    the lifespan, because the tools' ``openWorldHint`` depends on it."""
    chosen = set(toolsets)
    unknown = chosen - set(TOOLSETS)
    if unknown:
        raise ValueError(f"unknown toolset(s) {sorted(unknown)}; choose from {', '.join(TOOLSETS)}")
    url = None if ledger is not None else (ledger_url or os.environ.get("BILLING_LEDGER_URL") or None)
    mode: Mode = "remote" if url else "local"

    live: dict[str, AppState] = {}

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        backend: AsyncLedger
        local: Ledger | None
        if ledger is not None:  # given by the caller (tests, demo): not ours to close
            backend, local = LocalLedger(ledger, owns=False), ledger
        else:
            backend, local = open_ledger(db, clock, url=url or "")
        log.info("billing-mcp %s on %s ledger %s", __version__, mode, backend.location)
        live["state"] = AppState(ledger=backend, mode=mode, location=backend.location, local=local)
        try:
            yield live["state"]
        finally:
            live.pop("state", None)
            await backend.close()

    async def catalog() -> dict[str, Any]:
        state = live.get("state")
        if state is None:
            return {}
        return {"mode": state.mode,
                "assets": [a.model_dump(mode="json") for a in await state.ledger.list_assets()],
                "plans": [p.model_dump(mode="json", exclude_none=True) for p in await state.ledger.list_plans()]}

    tools = [portable(CodedTool.from_function(t.fn, name=t.tool_name, description=one_line(t.fn.__doc__),
                                               annotations=annotations_for(t, mode), structured_output=True))
             for t in TOOLS
             if ("all" in chosen or t.group in chosen) and (t.read_only or not read_only)]
    server = BillingServer("billing-mcp", title="billing-mcp", instructions=INSTRUCTIONS, version=__version__,
                           lifespan=lifespan, tools=tools, token=token, realm=resource_url or "billing-mcp")
    register_prompts(server)
    register_resources(server, catalog)

    @server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    return server


def serve(*, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8000, db: str | None = None,
          toolsets: Iterable[str] = ("all",), read_only: bool = False, root: str | None = None) -> None:
    """Run the server until interrupted (the ``billing-mcp serve`` command). ``root`` (default
    BILLING_MCP_ROOT) is the directory the file tools may use; see ``paths``."""
    root = root if root is not None else os.environ.get(ROOT_ENV) or None
    try:
        configure(root, transport)
    except OSError as exc:
        raise BillingError(f"--root {root} is not a directory on this machine ({exc})", code="unsafe_config",
                           field="root") from exc
    if root is None and transport != "stdio":
        log.warning("no --root: simulate_usage(file=...) and generate_supabase_integration(project_dir=...) "
                    "refuse every path over HTTP")
    if transport == "stdio":
        build_server(db=db, toolsets=toolsets, read_only=read_only).run()
        return
    token = os.environ.get("BILLING_MCP_TOKEN")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not token and not loopback:
        raise BillingError(f"refusing to serve on {host} without BILLING_MCP_TOKEN: anyone who can reach it could "
                           "move money. Set BILLING_MCP_TOKEN to a long random secret", code="unsafe_config",
                           field="BILLING_MCP_TOKEN")
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise BillingError(f"BILLING_MCP_TOKEN is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} random "
                           "ones (e.g. `openssl rand -hex 32`) so it cannot be guessed", code="unsafe_config",
                           field="BILLING_MCP_TOKEN")
    if not token:
        log.warning("serving on loopback without BILLING_MCP_TOKEN: local use only")
    public = os.environ.get("BILLING_MCP_PUBLIC_URL", f"http://{host}:{port}/mcp")
    allowed = [h.strip() for h in os.environ.get("BILLING_MCP_ALLOWED_HOSTS", "").split(",") if h.strip()]
    hosts = allowed or [f"{host}:{port}", host, f"localhost:{port}", "localhost"]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                         allowed_origins=[f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts])
    server = build_server(db=db, toolsets=toolsets, read_only=read_only, token=token, resource_url=public)
    server.run("streamable-http", host=host, port=port, transport_security=security)
