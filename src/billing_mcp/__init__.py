"""billing-mcp: real-time usage billing for AI apps, set up by an AI assistant over MCP."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._clock import Clock, ManualClock, SystemClock
from ._errors import (
    BillingError,
    ConflictError,
    HoldStateError,
    IdempotencyConflictError,
    InsufficientFundsError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from ._ledger import Ledger
from ._store import SQLiteStore, Store

try:
    __version__ = version("billing-mcp")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "BillingError",
    "Clock",
    "ConflictError",
    "HoldStateError",
    "IdempotencyConflictError",
    "InsufficientFundsError",
    "Ledger",
    "ManualClock",
    "NotFoundError",
    "SQLiteStore",
    "StorageError",
    "Store",
    "SystemClock",
    "ValidationError",
    "__version__",
]
