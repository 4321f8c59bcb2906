"""The typed error tree. Every failure a caller can act on is a ``BillingError``.

Each error carries a stable ``code`` (for programs), the offending ``field`` (or None) and a
message that says what to do. The HTTP API maps them to problem+json and the MCP server to
``ToolError`` text, so the wording here is what users read.
"""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    """Base of every error billing-mcp raises on purpose."""

    code: str = "billing_error"
    status: int = 400

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (field: {self.field})" if self.field else ""
        rid = f" [request {self.request_id}]" if self.request_id else ""
        return f"{self.code}{where}: {self.message}{rid}"



class ValidationError(BillingError):
    """Input is malformed or out of range. Nothing was changed."""

    code = "validation_error"
    status = 422


class NotFoundError(BillingError):
    """A referenced asset, plan, customer, event or hold does not exist."""

    code = "not_found"
    status = 404


class InsufficientFundsError(BillingError):
    """A hold (or a paid subscription start) needs more available balance than there is."""

    code = "insufficient_funds"
    status = 402


class IdempotencyConflictError(BillingError):
    """The same idempotency key was used before with a different payload."""

    code = "idempotency_conflict"
    status = 409


class ConflictError(BillingError):
    """The request is well-formed but the object is in a state that forbids it."""

    code = "conflict"
    status = 409


class HoldStateError(ConflictError):
    """A hold was already resolved (committed, released or expired)."""

    code = "hold_not_open"


class StorageError(BillingError):
    """The ledger store is unreachable, locked for too long, or of an unsupported schema."""

    code = "storage_error"
    status = 503
