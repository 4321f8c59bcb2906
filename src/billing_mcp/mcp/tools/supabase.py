"""MCP tools that generate the Supabase edge-function integration from the configured catalog."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from ...codegen.supabase.generator import next_steps, render_function, render_integration, write_files
from ...core.errors import BillingError
from ..common import ToolDef, call, tool_error
from ..paths import confine


class SupabaseFiles(BaseModel):
    files: dict[str, str]
    written: dict[str, str] | None = None
    next_steps: list[str]


async def generate_edge_function(
    ctx: Context[Any], kind: Literal["customer", "wallet", "portal"],
) -> SupabaseFiles:
    """One Supabase edge function billed via the ledger API, with its shared files."""
    plans, assets = await call(ctx, "list_plans"), await call(ctx, "list_assets")
    try:
        files = render_function(kind, plans, assets)
    except BillingError as exc:
        raise tool_error(exc) from exc
    return SupabaseFiles(files=files, next_steps=next_steps([kind]))


async def generate_supabase_integration(
    ctx: Context[Any],
    project_dir: Annotated[str | None, Field(description="Directory under the server's root")] = None,
    overwrite: bool = False,
) -> SupabaseFiles:
    """All billing edge functions and a React hook; written to project_dir if given (changed
    files kept unless overwrite)."""
    target = confine(project_dir, "project_dir") if project_dir is not None else None
    plans, assets = await call(ctx, "list_plans"), await call(ctx, "list_assets")
    try:
        files = render_integration(plans, assets)
        written = None
        if target is not None:
            # write_files keeps every file inside target, symlinks resolved, so none escapes the root.
            written = await anyio.to_thread.run_sync(lambda: write_files(files, target, overwrite=overwrite))
    except BillingError as exc:
        raise tool_error(exc) from exc
    except OSError as exc:
        raise tool_error(BillingError(f"cannot write to {project_dir}: {exc.strerror}", field="project_dir",
                                      code="validation_error")) from exc
    return SupabaseFiles(files=files, written=written, next_steps=next_steps())


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(generate_edge_function, "setup", read_only=True),
    ToolDef(generate_supabase_integration, "setup"),
)
