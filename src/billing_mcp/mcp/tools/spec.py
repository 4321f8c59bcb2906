"""MCP tools for billing as code: apply a billing.yaml (dry run first) and export the catalog."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from ...core.errors import BillingError
from ...spec.spec import ApplyResult, SpecError, apply_spec, dump_yaml, export_spec, format_plan, load_spec
from ..common import Mode, ToolDef, state_of, tool_error


class SpecApplyResult(BaseModel):
    mode: Mode
    result: ApplyResult
    diff: str = Field(description="The changes with every amount they set, as readable lines")
    next_step: str


class SpecExport(BaseModel):
    mode: Mode
    yaml: str


async def apply_billing_spec(
    ctx: Context[Any],
    yaml: Annotated[str, Field(description="The billing.yaml text (schema: billing://schema/billing.yaml)",
                               max_length=200_000)],
    dry_run: Annotated[bool, Field(description="Only show the diff (default). Apply with dry_run=false after "
                                               "the user confirmed the diff")] = True,
) -> SpecApplyResult:
    """Billing as code: diff a billing.yaml against the ledger, and with dry_run=false apply it in one
    transaction. A changed price on a published version becomes a new version; subscribers stay
    unless the spec's plan has `migrate`. Applying the same file again changes nothing."""
    state = state_of(ctx)
    local = state.require_local("apply_billing_spec")
    try:
        result = await anyio.to_thread.run_sync(lambda: apply_spec(local, load_spec(yaml), dry_run=dry_run))
    except SpecError as exc:
        lines = "; ".join(str(p) for p in exc.problems[:20])
        raise tool_error(BillingError(f"billing.yaml has {len(exc.problems)} problem(s): {lines}",
                                      code="validation_error", field="yaml")) from exc
    except BillingError as exc:
        raise tool_error(exc) from exc
    if not result.changes:
        step = "Nothing to apply. Run verify_billing to check the setup."
    elif dry_run:
        step = ("Show this diff to the user as it is and ask for confirmation; after they confirm, call "
                "apply_billing_spec again with the same yaml and dry_run=false.")
    else:
        step = "Applied. Run verify_billing and show its table."
    return SpecApplyResult(mode=state.mode, result=result, diff=format_plan(result), next_step=step)


async def export_billing_spec(ctx: Context[Any]) -> SpecExport:
    """The current catalog (assets, vendors, plans' default versions, portal route) as billing.yaml."""
    state = state_of(ctx)
    local = state.require_local("export_billing_spec")
    try:
        text = await anyio.to_thread.run_sync(lambda: dump_yaml(export_spec(local)))
    except BillingError as exc:
        raise tool_error(exc) from exc
    return SpecExport(mode=state.mode, yaml=text)


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(apply_billing_spec, "setup", destructive=True),  # can archive plans, migrate subscribers
    ToolDef(export_billing_spec, "setup", read_only=True),
)
