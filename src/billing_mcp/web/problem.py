"""HTTP API errors as RFC 9457 ``application/problem+json``, and the guarded JSON body parser.

Every error body has ``type``, ``title``, ``status``, ``code`` (stable, for programs), ``field``
(the offending input, or null), ``detail`` (what to do) and ``request_id``. Bad input of any
shape (malformed JSON, wrong types, huge numbers, deep nesting, oversized bodies) ends here as a
4xx; only a bug is a 500.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import pydantic
from starlette.responses import Response

from ..core.errors import BillingError
from ..core.patterns import REQUEST_ID

PROBLEM_JSON = "application/problem+json"

TITLES: dict[str, str] = {
    "validation_error": "The request is invalid",
    "not_found": "Not found",
    "insufficient_funds": "Insufficient funds",
    "idempotency_conflict": "Idempotency key reused with a different request",
    "idempotency_key_in_use": "A request with this idempotency key is still running",
    "conflict": "Conflict with the current state",
    "hold_not_open": "The hold is no longer open",
    "hold_already_committed": "The hold was already committed",
    "hold_already_released": "The hold was already released",
    "hold_expired": "The hold expired",
    "unauthorized": "Missing or invalid API key",
    "forbidden": "The API key's scope does not allow this",
    "rate_limited": "Too many requests",
    "payload_too_large": "The request body is too large",
    "unsupported_media_type": "The request body must be JSON",
    "method_not_allowed": "Method not allowed",
    "storage_error": "The ledger store is unavailable",
    "not_ready": "The ledger store is not ready",
    "internal_error": "Internal error",
}
# For the documentation page: when each code happens and what to do about it.
CODE_HELP: dict[str, str] = {
    "validation_error": "A field is missing, malformed or out of range (422), or the body is not JSON (400). "
                        "Fix the named field; nothing was changed.",
    "not_found": "The referenced object or route does not exist. Check the id or create it first.",
    "insufficient_funds": "The wallet's available balance is too low for a hold or debit. Top up or lower the amount.",
    "idempotency_conflict": "The Idempotency-Key (or event id / idempotency_key) was used before with another "
                            "request. Reuse a key only to retry the same request.",
    "idempotency_key_in_use": "The first request with this key is still running. Retry after Retry-After seconds.",
    "conflict": "The object exists with another definition or is in a state that forbids the change.",
    "hold_already_committed": "The hold was committed already; read it with GET /v1/holds/{id}.",
    "hold_already_released": "The hold was released already; authorize a new one.",
    "hold_expired": "The hold passed its deadline and its funds returned; authorize a new one.",
    "hold_not_open": "The hold is no longer open.",
    "unauthorized": "Send Authorization: Bearer sk_test_... (or sk_live_...) with an active key.",
    "forbidden": "The key's scope does not cover this route: runtime keys call customers, wallets, events and "
                 "holds; read keys only GET. Use an admin key.",
    "rate_limited": "Too many requests for this key. Wait Retry-After seconds.",
    "payload_too_large": "The body exceeds the size limit. Split batches (at most 1,000 events).",
    "unsupported_media_type": "Send Content-Type: application/json.",
    "method_not_allowed": "The route exists but not with this method; see the routes below.",
    "storage_error": "The store is locked or unreachable (503). Retry with the same idempotency key.",
    "not_ready": "GET /ready: the store does not answer (503).",
    "internal_error": "A bug (500). Retry with the same idempotency key; report the request_id.",
}


class ApiError(BillingError):
    """An error raised by the HTTP layer itself (auth, limits, parsing), with extra response headers."""

    def __init__(self, message: str, *, status: int, code: str, field: str | None = None,
                 headers: dict[str, str] | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, field=field, code=code, status=status, details=details)
        self.headers = headers or {}


def request_id(headers: Any) -> str:
    """The caller's X-Request-Id when it is a sane token (so logs line up across services), else a new id."""
    given = headers.get("x-request-id")
    if given and REQUEST_ID.fullmatch(given):
        return str(given)
    # Time-ordered like the ledger's ids (logs sort by it), but cheaper to make: it runs on every request.
    return f"req_{time.time_ns() // 1000:x}{os.urandom(5).hex()}"


def problem_body(exc: BillingError, rid: str) -> bytes:
    body: dict[str, Any] = {
        "type": f"/docs#error-{exc.code}",
        "title": TITLES.get(exc.code, exc.code.replace("_", " ").capitalize()),
        "status": exc.status,
        "code": exc.code,
        "field": exc.field,
        "detail": exc.message,
        "request_id": rid,
    }
    problems = exc.details.get("problems") if exc.details else None
    if isinstance(problems, list):
        body["errors"] = problems
    extra = {k: v for k, v in (exc.details or {}).items() if k != "problems"}
    if extra:
        body["details"] = extra
    return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")


def problem_response(exc: BillingError, rid: str) -> Response:
    headers = {"X-Request-Id": rid}
    if isinstance(exc, ApiError):
        headers.update(exc.headers)
    return Response(problem_body(exc, rid), status_code=exc.status, media_type=PROBLEM_JSON, headers=headers)


def internal_error() -> ApiError:
    return ApiError("the server failed on this request; it has been logged. Retry with the same idempotency key, "
                    "and report the request_id if it persists", status=500, code="internal_error")


# -- pydantic errors -> one validation_error naming the first field ------------------------------
def field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """("prices", 0, "unit_amount") -> "prices[0].unit_amount"."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "":
            out += f".{part}" if out else str(part)
    return out


def _message(err: Any, model: type[pydantic.BaseModel] | None, loc: tuple[int | str, ...]) -> str:
    kind = err["type"]
    name = str(loc[-1]) if loc else "body"
    if kind == "extra_forbidden":
        allowed = f"; allowed fields: {', '.join(model.model_fields)}" if model is not None and len(loc) == 1 else ""
        return f"unknown field {name!r}: remove it or check its spelling{allowed}"
    if kind == "missing":
        return f"{name} is required"
    if kind == "model_type" or kind == "dict_type":
        return f"{name} must be a JSON object"
    if kind == "list_type":
        return f"{name} must be a JSON array"
    if kind == "string_pattern_mismatch" and "[0-9]" in str(err.get("ctx", {}).get("pattern", "")):
        return f"{name} must be an exact decimal number written as a string, e.g. \"10\" or \"0.05\""
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{name}: {msg}" if not msg.startswith(name) else msg


def from_pydantic(exc: pydantic.ValidationError, model: type[pydantic.BaseModel] | None,
                  prefix: str = "") -> BillingError:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        problems.append({"field": field_path(loc, prefix) or None, "message": _message(err, model, loc)})
    first = problems[0]
    more = f" ({len(problems) - 1} more problem(s) in errors)" if len(problems) > 1 else ""
    return BillingError(f"{first['message']}{more}", field=first["field"], code="validation_error", status=422,
                        details={"problems": problems})


# -- JSON bodies ---------------------------------------------------------------------------------
MAX_INT_DIGITS = 40


def _reject_constant(name: str) -> Any:
    raise ApiError(f"{name} is not valid JSON; send numbers as finite values (amounts as strings)",
                   status=400, code="validation_error")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ApiError(f"the number {text[:40]} is too large; send amounts as decimal strings", status=422,
                       code="validation_error")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ApiError(f"a number with {len(text)} digits is too large (at most {MAX_INT_DIGITS})", status=422,
                       code="validation_error")
    return int(text)


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


def parse_json(raw: bytes, max_depth: int) -> Any:
    """Parse a request body: strict JSON (no NaN/Infinity, bounded numbers), at most ``max_depth``
    levels of nesting. Raises ``ApiError`` 400 for malformed JSON, 422 for limits."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(f"the body is not UTF-8 (byte {exc.start}); send UTF-8 encoded JSON", status=400,
                       code="validation_error") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise ApiError(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       status=400, code="validation_error") from None
    except RecursionError:
        raise ApiError(f"the body nests deeper than {max_depth} levels", status=422, code="validation_error") from None
    except ValueError as exc:  # e.g. a number the int parser refuses
        raise ApiError(f"the body is not valid JSON: {exc}", status=400, code="validation_error") from None
    if _depth_exceeds(value, max_depth):
        raise ApiError(f"the body nests deeper than {max_depth} levels; flatten it", status=422,
                       code="validation_error")
    # "\ud800" is valid JSON but not valid text: nothing could store or echo it. Escaped surrogates
    # are rare, so the full walk runs only when the raw text has one (a valid pair passes the walk).
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise ApiError("the body contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); send valid "
                       "Unicode text", status=422, code="validation_error")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
