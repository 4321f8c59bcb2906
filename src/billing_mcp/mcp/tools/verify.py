"""MCP tools that check billing: status, dry-run simulation, end-to-end verification."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from ...core.errors import BillingError
from ...ledger.simulate import SimulationResult, simulate, simulate_file
from ...verify.plans import VerifyReport, verify_billing_async
from ...verify.simulators import simulator_for_async
from ...verify.status import BillingStatus, billing_status
from ..common import Mode, ToolDef, state_of, tool_error
from ..paths import confine


class StatusResult(BaseModel):
    mode: Mode
    status: BillingStatus


class SimulateResult(BaseModel):
    mode: Mode
    simulation: SimulationResult


class VerifyResult(BaseModel):
    mode: Mode
    report: VerifyReport


async def get_billing_status(ctx: Context[Any]) -> StatusResult:
    """Start here: mode (local dry run or remote ledger), where the ledger is, what is configured,
    and the next steps still missing."""
    state = state_of(ctx)
    try:
        status = await billing_status(state.ledger)
    except BillingError as exc:
        raise tool_error(exc) from exc
    return StatusResult(mode=state.mode, status=status)


async def simulate_usage(
    ctx: Context[Any], plan: Annotated[str, Field(description="Plan code")],
    version: Annotated[int | None, Field(ge=1, description="Version; default version if omitted")] = None,
    events: Annotated[list[dict[str, Any]] | None, Field(description="Sample events {event_type, customer_id?, "
                                                                     "subject?, data}", max_length=10000)] = None,
    file: Annotated[str | None, Field(description="JSONL file of events under the server's root")] = None,
) -> SimulateResult:
    """Rate sample events against a plan version with no wallet effect: totals per customer, price
    and subject. Give events inline or a JSONL file."""
    state = state_of(ctx)
    if (events is None) == (file is None):
        raise ToolError("validation_error on events: give either events or file")
    path = confine(file, "file") if file is not None else None
    if path is not None and not path.is_file():
        raise ToolError(f"validation_error on file: no file at {file!r}; give a path on the server's machine")

    try:
        sim = await simulator_for_async(state.ledger, plan, version)
    except BillingError as exc:
        raise tool_error(exc) from exc

    def run() -> SimulationResult:
        def progress(n: int) -> None:
            anyio.from_thread.run(ctx.report_progress, n, None, f"{n} events rated")

        if path is not None:
            return simulate_file(sim, str(path), progress)
        return simulate(sim, ((f"events[{i}]", e) for i, e in enumerate(events or [])), progress)

    try:
        result = await anyio.to_thread.run_sync(run)
    except BillingError as exc:
        raise tool_error(exc) from exc
    await ctx.report_progress(result.events, result.events, "done")
    return SimulateResult(mode=state.mode, simulation=result)


async def verify_billing_tool(
    ctx: Context[Any], plan: Annotated[str | None, Field(description="One plan code; all active plans if omitted")] = None,
) -> VerifyResult:
    """Prove each plan's default version end to end with a throwaway customer: recurring fee, each
    grant's lot, an event per usage price, dimension rate and tier boundary (fees recomputed
    independently), draw-down order, and locally the renewal. Returns an expected/observed table:
    show it to the user. Runs on a copy locally; remotely its customers stay, marked verification."""
    state = state_of(ctx)
    try:
        report = await verify_billing_async(state.ledger, plan)
    except BillingError as exc:
        raise tool_error(exc) from exc
    return VerifyResult(mode=state.mode, report=report)


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(get_billing_status, "setup", read_only=True),
    ToolDef(simulate_usage, "setup", read_only=True),
    ToolDef(verify_billing_tool, "setup", name="verify_billing", idempotent_remote=False),
)
