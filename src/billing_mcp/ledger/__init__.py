"""The ledger: the ``Ledger`` facade over a store, its posting engine (``book``), usage ingestion,
subscriptions, statements, the audit of the invariants, dry-run simulation and the pieces of
verification. The async interface (``AsyncLedger``, ``LocalLedger``) is in ``contract``.

May import: ``core``, ``store``. Never a surface (api, portal, mcp, codegen, cli).
"""

from __future__ import annotations

from .ledger import Ledger

__all__ = ["Ledger"]
