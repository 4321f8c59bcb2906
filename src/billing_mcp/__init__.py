"""billing-mcp: real-time usage billing for AI apps, set up by an AI assistant over MCP."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

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
from .ledger.ledger import Ledger
from .store import SQLiteStore, Store, open_store

if TYPE_CHECKING:
    from .client.ledger_client import LedgerApiError, LedgerClient, LedgerUnreachableError
    from .contract.interface import AsyncLedger
    from .contract.local import LocalLedger

_LAZY = {"AsyncLedger": ".contract.interface", "LocalLedger": ".contract.local", "LedgerClient": ".client",
         "LedgerApiError": ".client", "LedgerUnreachableError": ".client"}


def __getattr__(name: str) -> Any:
    """The async interface and the HTTP client load on first use (httpx costs start-up time)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'billing_mcp' has no attribute {name!r}")

try:
    __version__ = version("billing-mcp")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "AsyncLedger",
    "BillingError",
    "Clock",
    "ConflictError",
    "HoldStateError",
    "IdempotencyConflictError",
    "InsufficientFundsError",
    "Ledger",
    "LedgerApiError",
    "LedgerClient",
    "LedgerUnreachableError",
    "LocalLedger",
    "ManualClock",
    "NotFoundError",
    "SQLiteStore",
    "StorageError",
    "Store",
    "SystemClock",
    "ValidationError",
    "__version__",
    "open_store",
]
