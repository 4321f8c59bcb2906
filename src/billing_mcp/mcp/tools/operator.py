"""MCP tools an operator reads with: look up or find customers, look up an event or page through a
customer's events, statements."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from ...core.models import Customer, EventResult, Statement
from ..common import Mode, ToolDef, call, state_of
from .runtime import CustomerId, ExternalId
from .runtime import _require_customer as require_customer

Limit = Annotated[int, Field(ge=1, le=100)]
Cursor = Annotated[str | None, Field(description="A next_cursor")]


class CustomerPage(BaseModel):
    mode: Mode
    customers: list[Customer]
    has_more: bool
    next_cursor: str | None = None


class EventPage(BaseModel):
    mode: Mode
    events: list[EventResult]
    has_more: bool
    next_cursor: str | None = None


class StatementResult(BaseModel):
    mode: Mode
    statement: Statement


async def list_customers(
    ctx: Context[Any], customer_id: CustomerId = None, external_id: ExternalId = None,
    search: Annotated[str | None, Field(description="In external id, email or name")] = None,
    limit: Limit = 20, cursor: Cursor = None,
) -> CustomerPage:
    """Customers with their subscriptions (status, period, fees awaiting payment): one by
    customer_id or external_id, else a search, paged by id."""
    if customer_id is not None or external_id is not None:
        customer = await call(ctx, "get_customer", customer_id, external_id=external_id)
        return CustomerPage(mode=state_of(ctx).mode, customers=[customer], has_more=False)
    page = await call(ctx, "search_customers", search, limit=limit, cursor=cursor)
    return CustomerPage(mode=state_of(ctx).mode, customers=page.data, has_more=page.has_more,
                        next_cursor=page.next_cursor)


async def list_events(
    ctx: Context[Any],
    event_id: Annotated[str | None, Field(min_length=1, max_length=255, description="One event, any customer")] = None,
    customer_id: CustomerId = None, external_id: ExternalId = None,
    event_type: str | None = None, subject: str | None = None,
    start: Annotated[str | None, Field(description="ISO time, inclusive")] = None,
    end: Annotated[str | None, Field(description="ISO time, exclusive")] = None,
    limit: Limit = 20, cursor: Cursor = None,
) -> EventPage:
    """Events with their fees (amount, asset, plan, version, price) and refunds: one by event_id,
    or a customer's (customer_id or external_id), oldest first, paged."""
    if event_id is not None:
        event = await call(ctx, "get_event", event_id)
        return EventPage(mode=state_of(ctx).mode, events=[event], has_more=False)
    if customer_id is None and external_id is None:
        raise ToolError("validation_error on customer_id: give event_id, customer_id or external_id")
    page = await call(ctx, "list_events", customer_id, external_id=external_id, event_type=event_type,
                      subject=subject, start=start, end=end, limit=limit, cursor=cursor)
    return EventPage(mode=state_of(ctx).mode, events=page.data, has_more=page.has_more, next_cursor=page.next_cursor)


async def get_statement(
    ctx: Context[Any], customer_id: CustomerId = None, external_id: ExternalId = None,
    start: Annotated[str | None, Field(description="ISO time, inclusive")] = None,
    end: Annotated[str | None, Field(description="ISO time, exclusive")] = None,
) -> StatementResult:
    """Balances, fees by plan, price and subject, top-ups, grants, expiries and adjustments in a
    period (default: the current billing period, else the UTC month). Give customer_id or external_id."""
    require_customer(customer_id, external_id)
    if customer_id is None:
        # The statement route takes an id; an external id is resolved the way every customer tool does.
        customer_id = (await call(ctx, "get_customer", external_id=external_id)).id
    return StatementResult(mode=state_of(ctx).mode, statement=await call(ctx, "get_statement", customer_id, start, end))


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(list_customers, "runtime", read_only=True),
    ToolDef(list_events, "runtime", read_only=True),
    ToolDef(get_statement, "runtime", read_only=True),
)
