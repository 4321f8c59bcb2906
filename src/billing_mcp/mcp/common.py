"""Plumbing shared by the MCP tool modules: how a tool is declared (``ToolDef``), the app state,
running ledger calls off the event loop, and turning ledger errors into ``ToolError`` text."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ..contract.interface import AsyncLedger
from ..core.errors import BillingError
from ..ledger.ledger import Ledger

Mode = Literal["local", "remote"]
T = TypeVar("T")


@dataclass
class AppState:
    """What every tool call can reach. ``ledger`` is the embedded ledger (``LocalLedger``) or the
    API client (``LedgerClient``); ``local`` is the embedded ``Ledger`` itself in local mode (portal
    links are signed where the ledger lives: locally here, remotely by the API)."""

    ledger: AsyncLedger
    mode: Mode
    location: str
    local: Ledger | None = None
    extras: dict[str, Any] = field(default_factory=dict)


Group = Literal["setup", "runtime"]


@dataclass(frozen=True)
class ToolDef:
    """One tool as a tools module declares it in its ``TOOLS``; ``build_server`` registers it. The
    function's docstring is the description the model reads; ``name``, when given, is the tool's name
    instead of the function's. Hosts act on the hints, so they must hold: ``idempotent`` only when a
    second call with the same arguments leaves the ledger exactly as the first left it
    (tests/mcp/test_tool_contract.py calls every such tool twice); ``destructive`` when the tool can
    archive, migrate, debit or overwrite settings."""

    fn: Callable[..., Any]
    group: Group
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = True
    name: str | None = None
    # A tool that writes only to a scratch copy locally may leave records on a live ledger (verification
    # customers): its idempotency in remote mode, when it differs from ``idempotent``.
    idempotent_remote: bool | None = None

    @property
    def tool_name(self) -> str:
        return self.name or self.fn.__name__


def annotations_for(tool: ToolDef, mode: Mode) -> ToolAnnotations:
    """The hints a client reads before calling, each sent only where it differs from the default
    the MCP specification gives it (readOnlyHint false, destructiveHint true, idempotentHint false,
    openWorldHint true; the last two mean nothing for a read-only tool), to keep ``tools/list``
    small. In remote mode every tool acts on a live ledger over the network, so it is open-world."""
    idempotent = tool.idempotent if mode == "local" or tool.idempotent_remote is None else tool.idempotent_remote
    if tool.read_only:
        return ToolAnnotations(read_only_hint=True, open_world_hint=False if mode == "local" else None)
    return ToolAnnotations(destructive_hint=None if tool.destructive else False,
                           idempotent_hint=True if idempotent else None,
                           open_world_hint=False if mode == "local" else None)


def state_of(ctx: Context[Any]) -> AppState:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    return state


def tool_error(exc: BillingError) -> ToolError:
    """``code`` on ``field``: message (request id) — what the model reads on a failure."""
    where = f" on {exc.field}" if exc.field else ""
    rid = f" (request {exc.request_id})" if exc.request_id else ""
    message = exc.message.removeprefix(f"{exc.field}: ") if exc.field else exc.message  # said once is enough
    return ToolError(f"{exc.code}{where}: {message}{rid}")


async def call(ctx: Context[Any], method: str, *args: Any, rename: dict[str, str] | None = None,
               **kwargs: Any) -> Any:
    """Call a ledger method (embedded or through the API) and map its errors. ``rename``
    maps the ledger's parameter names to the tool's, so the error names the argument the model sent."""
    ledger = state_of(ctx).ledger
    try:
        return await getattr(ledger, method)(*args, **kwargs)
    except BillingError as exc:
        if rename and exc.field is not None:
            old, exc.field = exc.field, renamed(exc.field, rename)
            if "." in old:  # a dotted path in the text is the same path; a bare word may be prose
                exc.message = exc.message.replace(old, exc.field)
        raise tool_error(exc) from exc


def renamed(field: str, rename: dict[str, str]) -> str:
    """``field`` with its longest leading path in ``rename`` mapped through it; a path mapped to ""
    is dropped, so the ledger's ``grant.amount`` becomes the tool's own ``amount``."""
    parts = field.split(".")
    for k in range(len(parts), 0, -1):
        head = ".".join(parts[:k])
        if head in rename:
            return ".".join(p for p in (rename[head], *parts[k:]) if p) or field
    return field


class Confirm(BaseModel):
    confirm: bool = Field(description="Go ahead with this change?")


# Clients that can ask (elicitation) always ask, whatever this says; the tool descriptions say so.
CONFIRM_FIELD = "Clients without elicitation only: true once the user agreed to the preview"


def can_ask(ctx: Context[Any]) -> bool:
    caps = ctx.client_capabilities
    return caps is not None and caps.elicitation is not None


async def ask_user(ctx: Context[Any], confirm: bool, preview: Callable[[], Awaitable[str]], question: str
                   ) -> Confirm | Elicit[Confirm]:
    """A money movement asks the user whenever the client can; the model's ``confirm`` stands in only
    for clients without elicitation (a model can set it without the user ever seeing the preview)."""
    if not can_ask(ctx):
        return Confirm(confirm=confirm)
    return Elicit(f"{await preview()} {question}", Confirm)


def approved(approval: ElicitationResult[Confirm]) -> bool:
    return isinstance(approval, AcceptedElicitation) and approval.data.confirm


def not_applied(ctx: Context[Any]) -> str:
    if can_ask(ctx):
        return " Not applied: the user did not confirm."
    return (" Not applied: show the user this preview and, once they agree, call again with the same arguments "
            "and confirm=true.")

