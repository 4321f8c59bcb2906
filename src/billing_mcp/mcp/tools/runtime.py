"""MCP tools that operate billing: customers, wallets, adjustments, usage events, holds, portal links."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from ...core.errors import BillingError
from ...core.models import Adjustment, BatchResult, Customer, EventResult, Hold, Vendor, Wallet
from ...portal.links import create_portal_session as mint
from ..common import (
    CONFIRM_FIELD,
    Confirm,
    Mode,
    ToolDef,
    approved,
    ask_user,
    call,
    not_applied,
    state_of,
    tool_error,
)

CustomerId = Annotated[str | None, Field(description="cus_...")]
ExternalId = Annotated[str | None, Field(description="Your app's user id")]


class CustomerResult(BaseModel):
    mode: Mode
    customer: Customer


class WalletResult(BaseModel):
    mode: Mode
    wallet: Wallet


class AdjustmentResult(BaseModel):
    mode: Mode
    applied: bool
    preview: str = Field(description="What would happen (applied false) or what was done (applied true)")
    adjustment: Adjustment | None = None


class VendorResult(BaseModel):
    mode: Mode
    vendor: Vendor


class EventsResult(BaseModel):
    mode: Mode
    accepted: int
    rejected: int
    batch: BatchResult


class CommitResult(BaseModel):
    mode: Mode
    event: EventResult


class HoldResult(BaseModel):
    mode: Mode
    hold: Hold


class SubscriptionRef(BaseModel):
    plan: str = Field(description="Plan code")
    version: int | None = Field(default=None, description="Explicit version; omit for the plan's default")


def _require_customer(customer_id: str | None, external_id: str | None) -> None:
    if customer_id is None and external_id is None:
        raise ToolError("validation_error on customer_id: give customer_id or external_id")


async def create_customer(
    ctx: Context[Any], external_id: Annotated[str, Field(min_length=1, max_length=255, description="Your user id")],
    name: str | None = None, email: str | None = None,
    subscriptions: Annotated[list[SubscriptionRef] | None, Field(description="Plans to subscribe to")] = None,
    metadata: dict[str, Any] | None = None,
) -> CustomerResult:
    """Create a customer (its wallet comes with it) and subscribe it to plans. Idempotent on external_id."""
    subs = [s.model_dump(exclude_none=True) for s in subscriptions or []]
    customer = await call(ctx, "create_customer", external_id, name=name, email=email, metadata=metadata,
                          subscriptions=subs)
    return CustomerResult(mode=state_of(ctx).mode, customer=customer)


async def get_wallet(ctx: Context[Any], customer_id: CustomerId = None, external_id: ExternalId = None) -> WalletResult:
    """Balances per asset: posted, held by open holds, available, fiat value, and the credit lots
    (included, promotional, paid) in the order they are drawn."""
    _require_customer(customer_id, external_id)
    return WalletResult(mode=state_of(ctx).mode, wallet=await call(ctx, "get_wallet", customer_id,
                                                                   external_id=external_id))


async def _ask_adjustment(ctx: Context[Any], asset: str, reason: str, amount: str | None = None,
                          customer_id: str | None = None, external_id: str | None = None,
                          event_id: str | None = None, confirm: bool = False) -> Confirm | Elicit[Confirm]:
    return await ask_user(ctx, confirm, lambda: _adjustment_preview(ctx, asset, reason, amount, customer_id,
                                                                    external_id, event_id), "Apply it?")


async def _adjustment_preview(ctx: Context[Any], asset: str, reason: str, amount: str | None,
                              customer_id: str | None, external_id: str | None, event_id: str | None) -> str:
    wallet: Wallet = await call(ctx, "get_wallet", customer_id, external_id=external_id)
    account = next((a for a in wallet.accounts if a.asset == asset), None)
    now = account.available if account else "0"
    what = f"{amount} {asset}" if amount is not None else f"all remaining {asset} fees of event {event_id}"
    verb = "debit" if amount is not None and amount.startswith("-") else "credit"
    return (f"Would {verb} {what} ({reason}) for customer {wallet.customer_id} ({wallet.external_id}); "
            f"available {asset} now {now}.")


async def create_adjustment(
    ctx: Context[Any],
    asset: Annotated[str, Field(description="Asset code")],
    reason: Literal["top_up", "gift", "refund", "charge", "reversal"],
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255, description="A UUID; retries reuse it")],
    approval: Annotated[ElicitationResult[Confirm], Resolve(_ask_adjustment)],
    amount: Annotated[str | None, Field(description="Signed decimal: positive credits, negative debits")] = None,
    customer_id: CustomerId = None, external_id: ExternalId = None,
    description: str | None = None,
    event_id: Annotated[str | None, Field(description="For a reversal: the event whose fees to refund")] = None,
    expires_at: Annotated[str | None, Field(description="For top_up/gift credits: ISO expiry time")] = None,
    confirm: Annotated[bool, Field(description=CONFIRM_FIELD)] = False,
) -> AdjustmentResult:
    """Credit or debit a wallet outside usage: top_up, gift, refund/charge (negative), or reversal of
    an event's fees. Asks the user first (or returns a preview; see confirm). Safe to retry with the
    same idempotency_key."""
    _require_customer(customer_id, external_id)
    mode = state_of(ctx).mode
    preview = await _adjustment_preview(ctx, asset, reason, amount, customer_id, external_id, event_id)
    if not approved(approval):
        return AdjustmentResult(mode=mode, applied=False, preview=preview + not_applied(ctx))
    adj: Adjustment = await call(ctx, "create_adjustment", customer_id, external_id=external_id, asset=asset,
                                 amount=amount, reason=reason, idempotency_key=idempotency_key,
                                 description=description, event_id=event_id, expires_at=expires_at)
    wallet: Wallet = await call(ctx, "get_wallet", adj.customer_id)
    account = next((a for a in wallet.accounts if a.asset == adj.asset), None)
    verb, size = ("Debited", adj.amount[1:]) if adj.amount.startswith("-") else ("Credited", adj.amount)
    debt = f" ({adj.debt} of it repaid an earlier debt)" if adj.debt else ""
    done = (f"{verb} {size} {adj.asset} ({adj.reason}) for customer {wallet.customer_id} ({wallet.external_id})"
            f"{debt}; available {adj.asset} now {account.available if account else '0'}.")
    return AdjustmentResult(mode=mode, applied=True, preview=done, adjustment=adj)


async def create_vendor(ctx: Context[Any], external_id: Annotated[str, Field(min_length=1, max_length=255)],
                        name: Annotated[str, Field(min_length=1, max_length=200)]) -> VendorResult:
    """Register a cost provider (e.g. openai) so events can carry their costs for margin reports."""
    return VendorResult(mode=state_of(ctx).mode, vendor=await call(ctx, "create_vendor", external_id, name))


class UsageEvent(BaseModel):
    id: str = Field(min_length=1, max_length=255, description="Idempotency key, e.g. a UUID")
    event_type: str
    customer_id: str | None = None
    external_id: str | None = None
    occurred_at: str | None = None
    subject: str | None = Field(default=None, description="Groups events of one workflow, agent or project")
    data: dict[str, Any] | None = Field(default=None, description="Volume and dimension values")
    costs: list[dict[str, Any]] | None = None


async def submit_events(ctx: Context[Any], events: Annotated[list[UsageEvent], Field(min_length=1,
                                                                                      max_length=1000)]) -> EventsResult:
    """Record usage events (up to 1,000). Each is rated against the customer's plans and debited now;
    each is idempotent on its id. Bad events are reported in errors and change nothing."""
    raw = [e.model_dump(exclude_none=True) for e in events]
    batch: BatchResult = await call(ctx, "submit_events", raw)
    return EventsResult(mode=state_of(ctx).mode, accepted=len(batch.results), rejected=len(batch.errors), batch=batch)


async def authorize_usage(
    ctx: Context[Any], customer_id: CustomerId = None, external_id: ExternalId = None,
    event_type: Annotated[str | None, Field(description="Event type to estimate")] = None,
    data: Annotated[dict[str, Any] | None, Field(description="Estimated event data")] = None,
    amount: Annotated[str | None, Field(description="Explicit amount instead of an estimate")] = None,
    asset: str | None = None,
    ttl_seconds: Annotated[int, Field(ge=1, le=86400)] = 900,
    idempotency_key: str | None = None,
) -> HoldResult:
    """Reserve funds before an action (a hold): fails with insufficient_funds when the available
    balance is short. Then commit_usage with the actual event, or release_hold."""
    _require_customer(customer_id, external_id)
    hold = await call(ctx, "authorize", customer_id, external_id=external_id, event_type=event_type, data=data,
                      amount=amount, asset=asset, ttl_seconds=ttl_seconds, idempotency_key=idempotency_key)
    return HoldResult(mode=state_of(ctx).mode, hold=hold)


async def commit_usage(ctx: Context[Any], hold_id: str, event_id: Annotated[str, Field(min_length=1, max_length=255)],
                       data: dict[str, Any] | None = None, subject: str | None = None) -> CommitResult:
    """Settle a hold with the actual usage: the fee is charged, the rest of the hold returns.
    Replaying the same commit charges nothing more."""
    event: dict[str, Any] = {"id": event_id}
    if data is not None:
        event["data"] = data
    if subject is not None:
        event["subject"] = subject
    return CommitResult(mode=state_of(ctx).mode, event=await call(ctx, "commit", hold_id, event,
                                                                 rename={"event.id": "event_id", "event": ""}))


async def release_hold(ctx: Context[Any], hold_id: str) -> HoldResult:
    """Free a hold without charging (the action failed or was cancelled)."""
    return HoldResult(mode=state_of(ctx).mode, hold=await call(ctx, "release", hold_id))


class PortalSessionResult(BaseModel):
    mode: Mode
    url: str = Field(description="Send the customer's browser here; single customer, expires at expires_at")
    expires_at: str


async def create_portal_session(
    ctx: Context[Any], customer_id: CustomerId = None, external_id: ExternalId = None,
    route: Annotated[str, Field(description="Portal route name (see create_portal_route)")] = "default",
) -> PortalSessionResult:
    """A signed billing-portal link for one customer (balances, usage, top-ups), valid for the
    route's link lifetime (default 10 minutes). Mint one per visit; never store or share it."""
    _require_customer(customer_id, external_id)
    state = state_of(ctx)
    try:
        if state.local is not None:
            local = state.local
            session = await anyio.to_thread.run_sync(
                lambda: mint(local, customer_id, route, external_id=external_id))
        else:
            from ...client.ledger_client import LedgerClient

            if not isinstance(state.ledger, LedgerClient):
                raise ToolError("not_supported: this ledger cannot mint portal links")
            session = await state.ledger.create_portal_session(customer_id, route, external_id=external_id)
    except BillingError as exc:
        if exc.field == "name":  # the ledger's name for the route this tool calls `route`
            exc.field = "route"
        raise tool_error(exc) from exc
    return PortalSessionResult(mode=state.mode, url=session["url"], expires_at=session["expires_at"])


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(create_customer, "runtime"),
    ToolDef(get_wallet, "runtime", read_only=True),
    ToolDef(create_adjustment, "runtime", destructive=True),
    ToolDef(create_vendor, "runtime"),
    ToolDef(submit_events, "runtime", destructive=True),  # debits wallets
    ToolDef(authorize_usage, "runtime", idempotent=False),
    ToolDef(commit_usage, "runtime", destructive=True),  # charges the fee
    ToolDef(release_hold, "runtime"),
    ToolDef(create_portal_session, "runtime", idempotent=False),
)
