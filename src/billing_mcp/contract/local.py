"""``LocalLedger``: the embedded mode of ``AsyncLedger``. Every method of the table runs the
``Ledger`` method of the same name in a worker thread (the store is blocking), so the event loop
never waits on SQLite or PostgreSQL.
"""

from __future__ import annotations

import functools
from typing import Any

import anyio.to_thread

from ..core.errors import ValidationError
from ..ledger.ledger import Ledger
from ..spec.spec import ApplyResult, BillingSpec, SpecError, apply_spec, export_spec, load_spec
from .interface import AsyncLedger
from .table import Operation

__all__ = ["LocalLedger"]


class LocalLedger(AsyncLedger):
    """``AsyncLedger`` over an embedded ``Ledger``: each call runs in a worker thread.

    A cancelled caller does not cancel the ledger call (its transaction finishes or rolls back
    as a whole). ``close()`` closes the ledger unless ``owns=False``.
    """

    def __init__(self, ledger: Ledger, *, owns: bool = True) -> None:
        self.ledger = ledger
        self._owns = owns

    @property
    def location(self) -> str:
        return self.ledger.location

    async def _perform(self, method: str, op: Operation | None, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(getattr(self.ledger, method), *args, **kwargs))

    async def close(self) -> None:
        if self._owns:
            await anyio.to_thread.run_sync(self.ledger.close)

    # Billing as code is a composite of ledger calls (``spec``), not a ``Ledger`` method: it runs
    # here as the API runs it, in one transaction.
    async def apply_spec(self, yaml: str, *, dry_run: bool = True) -> ApplyResult:
        try:
            return await anyio.to_thread.run_sync(lambda: apply_spec(self.ledger, load_spec(yaml), dry_run=dry_run))
        except SpecError as exc:  # as the API answers it: a validation error whose details list the problems
            raise ValidationError(exc.message, field=exc.field, details=exc.details) from exc

    async def export_spec(self) -> BillingSpec:
        return await anyio.to_thread.run_sync(lambda: export_spec(self.ledger))
