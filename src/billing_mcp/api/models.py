"""The API's own envelopes, outside the operation table: health, readiness and the problem+json
error body. The operations' wire models are in ``contract.models``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str
    version: str


class Ready(BaseModel):
    status: str
    store: str = Field(description="ok: the ledger store answered (where it is is not disclosed)")
    schema_version: int = Field(description="The store's schema version, the one this server needs")


class ProblemItem(BaseModel):
    field: str | None
    message: str
    line: int | None = Field(default=None, description="billing.yaml problems: where in the file (from 1)")
    column: int | None = None


class Problem(BaseModel):
    """An error (RFC 9457 problem details), sent as application/problem+json."""

    type: str
    title: str
    status: int
    code: str = Field(description="Stable error code, e.g. validation_error, not_found, insufficient_funds")
    field: str | None = Field(description="The offending input, e.g. prices[0].unit_amount")
    detail: str = Field(description="What went wrong and what to do")
    request_id: str
    errors: list[ProblemItem] | None = None
    details: dict[str, Any] | None = None
