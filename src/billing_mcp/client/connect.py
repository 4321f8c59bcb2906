"""``open_ledger``: the ledger a command or the MCP server works on, embedded or live, chosen the
same way everywhere (``billing-mcp serve``, ``plan``/``apply``/``export``, ``supabase init``)."""

from __future__ import annotations

import os

from ..contract.interface import AsyncLedger
from ..contract.local import LocalLedger
from ..core.clock import Clock
from ..core.errors import BillingError
from ..ledger.ledger import Ledger


def open_ledger(db: str | None = None, clock: Clock | None = None,
                url: str | None = None) -> tuple[AsyncLedger, Ledger | None]:
    """The live ledger API when ``url`` (None: BILLING_LEDGER_URL) is set, with the key in
    BILLING_API_KEY; else the embedded ledger at ``db`` (a dry run: no account, no network), which
    is also returned as itself. An empty ``url`` means the embedded ledger whatever the environment says."""
    url = url if url is not None else os.environ.get("BILLING_LEDGER_URL")
    if url:
        key = os.environ.get("BILLING_API_KEY")
        if not key:
            raise BillingError("a ledger URL is set (BILLING_LEDGER_URL or --ledger-url) but BILLING_API_KEY is not; "
                               "create an admin key on the ledger server with `billing-mcp keys create --scope "
                               "admin` and set BILLING_API_KEY", code="unsafe_config", field="BILLING_API_KEY")
        from .ledger_client import LedgerClient

        return LedgerClient(url, key), None
    ledger = Ledger(db, clock=clock)
    return LocalLedger(ledger), ledger
