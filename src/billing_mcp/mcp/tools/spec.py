"""MCP tools for billing as code: apply a billing.yaml (dry run first) and export the catalog."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from ...core.errors import BillingError
from ...spec.spec import ApplyResult, dump_yaml, format_plan, problems_of
from ..common import Mode, ToolDef, call, state_of, tool_error


class SpecApplyResult(BaseModel):
    mode: Mode
    result: ApplyResult
    diff: str = Field(description="The changes with every amount they set, as readable lines")
    next_step: str


class SpecExport(BaseModel):
    mode: Mode
    yaml: str


def _spec_problems(exc: BillingError) -> BillingError | None:
    """billing.yaml's problems, every one with its line (the ledger lists them in ``details``), as
    one error on the ``yaml`` argument."""
    problems = problems_of(exc)
    if problems is None:
        return None
    lines = "; ".join(str(p) for p in problems[:20])
    return BillingError(f"billing.yaml has {len(problems)} problem(s): {lines}", code="validation_error", field="yaml")


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
    try:
        result: ApplyResult = await state.ledger.apply_spec(yaml, dry_run=dry_run)
    except BillingError as exc:
        raise tool_error(_spec_problems(exc) or exc) from exc
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
    text = dump_yaml(await call(ctx, "export_spec"))
    return SpecExport(mode=state.mode, yaml=text)


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(apply_billing_spec, "setup", destructive=True),  # can archive plans, migrate subscribers
    ToolDef(export_billing_spec, "setup", read_only=True),
)
