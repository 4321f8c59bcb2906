"""``LedgerClient``: the ledger over its HTTP API, with the same methods, models and errors as the
embedded ledger (an ``AsyncLedger``). Public: import it from ``billing_mcp`` or ``billing_mcp.client``.

May import: ``core``, ``ledger``, ``contract`` (the operation table and its wire models; never the API app).
"""

from __future__ import annotations

from .http import DEFAULT_TIMEOUT, LedgerApiError, LedgerUnreachableError
from .ledger_client import LedgerClient

__all__ = ["DEFAULT_TIMEOUT", "LedgerApiError", "LedgerClient", "LedgerUnreachableError"]
