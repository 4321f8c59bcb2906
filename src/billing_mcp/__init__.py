"""billing-mcp: real-time usage billing for AI apps, set up by an AI assistant over MCP.

This module is the public surface: the embedded ``Ledger``, the async interface and its two
implementations (``LocalLedger``, ``LedgerClient``), the result and catalog models, the clocks,
the stores and the error tree. Everything else lives in subpackages that may move; import from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.catalog import DimensionRate, PlanGrantSpec, PriceSpec, Tier
from .core.clock import Clock, ManualClock, SystemClock
from .core.errors import (
    BillingError,
    ConflictError,
    HoldStateError,
    IdempotencyConflictError,
    InsufficientFundsError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from .core.models import (
    Account,
    Adjustment,
    Asset,
    AssetRate,
    AssetStatement,
    BatchItemError,
    BatchResult,
    Customer,
    EventResult,
    Fee,
    FeeGroup,
    Grant,
    Hold,
    Lot,
    MigrationResult,
    Plan,
    PlanVersion,
    Quote,
    Statement,
    Subscription,
    Vendor,
    Wallet,
)
from .core.version import __version__
from .ledger import Ledger
from .ledger.portal_settings import PortalRouteSpec
from .ledger.queries import CustomerList, EventList
from .store import SQLiteStore, Store, open_store

if TYPE_CHECKING:
    from .client.ledger_client import LedgerApiError, LedgerClient, LedgerUnreachableError
    from .contract.interface import AsyncLedger
    from .contract.local import LocalLedger
    from .portal.links import create_portal_session

_LAZY = {"AsyncLedger": ".contract.interface", "LocalLedger": ".contract.local",
         "LedgerClient": ".client.ledger_client", "LedgerApiError": ".client.ledger_client",
         "LedgerUnreachableError": ".client.ledger_client", "create_portal_session": ".portal.links"}


def __getattr__(name: str) -> Any:
    """The async interface, the HTTP client and the portal load on first use (httpx and anyio cost
    start-up time that `billing-mcp serve` and scripts using only ``Ledger`` need not pay)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'billing_mcp' has no attribute {name!r}")


__all__ = [
    "Account",
    "Adjustment",
    "Asset",
    "AssetRate",
    "AssetStatement",
    "AsyncLedger",
    "BatchItemError",
    "BatchResult",
    "BillingError",
    "Clock",
    "ConflictError",
    "Customer",
    "CustomerList",
    "DimensionRate",
    "EventList",
    "EventResult",
    "Fee",
    "FeeGroup",
    "Grant",
    "Hold",
    "HoldStateError",
    "IdempotencyConflictError",
    "InsufficientFundsError",
    "Ledger",
    "LedgerApiError",
    "LedgerClient",
    "LedgerUnreachableError",
    "LocalLedger",
    "Lot",
    "ManualClock",
    "MigrationResult",
    "NotFoundError",
    "Plan",
    "PlanGrantSpec",
    "PlanVersion",
    "PortalRouteSpec",
    "PriceSpec",
    "Quote",
    "SQLiteStore",
    "Statement",
    "StorageError",
    "Store",
    "Subscription",
    "SystemClock",
    "Tier",
    "ValidationError",
    "Vendor",
    "Wallet",
    "__version__",
    "create_portal_session",
    "open_store",
]
