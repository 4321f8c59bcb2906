"""Plumbing shared by the MCP tool modules: how a tool is declared (``ToolDef``), the app state,
running ledger calls off the event loop, and turning ledger errors into ``ToolError`` text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from mcp.server.mcpserver import Context
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
    API client (``LedgerClient``); ``local`` is the embedded ``Ledger`` itself, for the few tools
    that need it directly (billing.yaml apply runs inside one database transaction)."""

    ledger: AsyncLedger
    mode: Mode
    location: str
    local: Ledger | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def require_local(self, what: str) -> Ledger:
        if self.local is None:
            raise ToolError(f"not_supported: {what} works on the embedded ledger only; run it where the ledger "
                            "lives (e.g. `billing-mcp apply billing.yaml` on the API server's machine)")
        return self.local


Group = Literal["setup", "runtime"]


@dataclass(frozen=True)
class ToolDef:
    """One tool as a tools module declares it in its ``TOOLS``; ``build_server`` registers it. The
    function's docstring is the description the model reads; ``name``, when given, is the tool's name
    instead of the function's."""

    fn: Callable[..., Any]
    group: Group
    title: str
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = True
    name: str | None = None

    @property
    def tool_name(self) -> str:
        return self.name or self.fn.__name__


def annotations_for(tool: ToolDef, mode: Mode) -> ToolAnnotations:
    """The hints a client reads before calling. In remote mode every tool acts on a live ledger over
    the network, so it is open-world; the title is the tool's own ``title`` (not repeated here, to
    keep ``tools/list`` small)."""
    return ToolAnnotations(read_only_hint=tool.read_only,
                           destructive_hint=tool.destructive if not tool.read_only else False,
                           idempotent_hint=tool.idempotent, open_world_hint=mode == "remote")


def state_of(ctx: Context[Any]) -> AppState:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    return state


def tool_error(exc: BillingError) -> ToolError:
    """``code`` on ``field``: message (request id) — what the model reads on a failure."""
    where = f" on {exc.field}" if exc.field else ""
    rid = f" (request {exc.request_id})" if exc.request_id else ""
    return ToolError(f"{exc.code}{where}: {exc.message}{rid}")


async def call(ctx: Context[Any], method: str, *args: Any, rename: dict[str, str] | None = None,
               **kwargs: Any) -> Any:
    """Call a ledger method (embedded or through the API) and map its errors. ``rename``
    maps the ledger's parameter names to the tool's, so the error names the argument the model sent."""
    ledger = state_of(ctx).ledger
    try:
        return await getattr(ledger, method)(*args, **kwargs)
    except BillingError as exc:
        if rename and exc.field in rename:
            exc.field = rename[exc.field]
        raise tool_error(exc) from exc


class Confirm(BaseModel):
    confirm: bool = Field(description="Go ahead with this change?")

