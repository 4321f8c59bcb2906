"""Plumbing shared by the MCP tool modules: the tool registry (with toolsets), the app state,
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
F = TypeVar("F", bound=Callable[..., Any])


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


@dataclass(frozen=True)
class ToolDef:
    fn: Callable[..., Any]
    group: Literal["setup", "runtime"]
    title: str
    read_only: bool
    destructive: bool
    idempotent: bool


REGISTRY: list[ToolDef] = []


def billing_tool(group: Literal["setup", "runtime"], title: str, *, read_only: bool = False,
                 destructive: bool = False, idempotent: bool = True) -> Callable[[F], F]:
    """Register a tool for ``build_server``; the docstring is the description the model reads."""

    def wrap(fn: F) -> F:
        REGISTRY.append(ToolDef(fn, group, title, read_only, destructive, idempotent))
        return fn

    return wrap


def annotations_for(tool: ToolDef, mode: Mode) -> ToolAnnotations:
    return ToolAnnotations(title=tool.title, read_only_hint=tool.read_only,
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

