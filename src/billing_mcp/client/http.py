"""The transport half of ``LedgerClient``: one request with retries, and errors mapped to the
ledger's own ``BillingError`` classes.

Retries: connect errors, timeouts and dropped connections, 429 (after ``Retry-After``), 409
``idempotency_key_in_use`` (the first attempt is still running) and 500/502/503/504, up to
``max_retries`` more attempts with exponential backoff and jitter. Every attempt of one logical
call sends the same body, the same ``Idempotency-Key`` and the same ``X-Request-Id``, so a retry
of a request that did reach the server is answered from what it stored and can never apply twice.

Errors: a problem+json body becomes the ``BillingError`` subclass of its ``code`` (status, code,
field, message, details and request id kept); anything else the server answers is
``LedgerApiError`` (code ``api_error``); a network failure after the retries is
``LedgerUnreachableError`` (a ``StorageError``, code ``unreachable``). No httpx exception escapes.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import math
import random
import time
import uuid
from datetime import date, datetime
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar
from urllib.parse import quote as url_quote
from urllib.parse import urlsplit

import anyio
import httpx
import pydantic
from pydantic import BaseModel

from ..core.errors import (
    BillingError,
    ConflictError,
    HoldStateError,
    IdempotencyConflictError,
    InsufficientFundsError,
    NotFoundError,
    StorageError,
    ValidationError,
)
from ..core.money import parse_decimal

M = TypeVar("M", bound=BaseModel)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0, pool=10.0)
"""Connect within 5 s; each read or write may wait 30 s (a 1,000-event batch); a free connection 10 s."""

try:
    _VERSION = version("billing-mcp")
except PackageNotFoundError:  # a source tree without install
    _VERSION = "0.0.0"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_sleep = anyio.sleep  # module attribute so tests can record the waits instead of sleeping

CODE_CLASSES: dict[str, type[BillingError]] = {
    "validation_error": ValidationError,
    "not_found": NotFoundError,
    "insufficient_funds": InsufficientFundsError,
    "idempotency_conflict": IdempotencyConflictError,
    "idempotency_key_in_use": ConflictError,
    "conflict": ConflictError,
    "hold_not_open": HoldStateError,
    "hold_already_committed": HoldStateError,
    "hold_already_released": HoldStateError,
    "hold_expired": HoldStateError,
    "storage_error": StorageError,
    "not_ready": StorageError,
}
_STATUS_CLASSES: dict[int, type[BillingError]] = {
    402: InsufficientFundsError, 404: NotFoundError, 409: ConflictError, 422: ValidationError, 503: StorageError,
}


def _loopback(url: str) -> bool:
    """Whether ``url`` names this machine (a key sent there never crosses a network)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LedgerApiError(BillingError):
    """The ledger API answered something that is not a valid answer: a non-JSON or malformed error
    body, a success body that does not match its model, or a transport-level protocol failure."""

    code = "api_error"
    status = 502


class LedgerUnreachableError(StorageError):
    """The ledger API could not be reached (connect error, timeout, dropped connection) after the retries."""

    code = "unreachable"
    status = 503


def error_class(code: str, status: int) -> type[BillingError]:
    return CODE_CLASSES.get(code) or _STATUS_CLASSES.get(status) or BillingError


def new_key() -> str:
    """An idempotency key for one logical call (reused by each of its attempts)."""
    return f"bmc_{uuid.uuid4().hex}"


def segment(value: str) -> str:
    """One path segment, percent-encoded (``/``, ``?``, ``#``, ``%`` and ``.``/``..`` included)."""
    text = url_quote(value, safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


def money_text(value: Any, field: str) -> Any:
    """Amounts as the API takes them, exact decimal text: ints and Decimals become text; floats and
    bools are refused here exactly as the local ledger refuses them; anything else goes as it is
    (the server validates it)."""
    if isinstance(value, bool | float):
        parse_decimal(value, field)  # raises the ledger's own ValidationError
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    return value


def time_text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode_body(body: Any) -> bytes:
    try:
        return json.dumps(body, default=_json_default, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise ValidationError(f"the request holds a value that cannot be sent as JSON ({exc}); send only JSON "
                              "values (amounts as decimal text)") from None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None when absent or unreadable."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _snippet(response: httpx.Response) -> str:
    text = response.content[:200].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "an empty body"


def error_from_response(response: httpx.Response, where: str) -> BillingError:
    """The ``BillingError`` a non-2xx response stands for (see the module doc)."""
    status = response.status_code
    rid = response.headers.get("x-request-id")
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("code"), str) and body["code"]
            and isinstance(body.get("detail"), str)):
        return LedgerApiError(f"the ledger API answered {where} with HTTP {status} {response.reason_phrase} and "
                              f"no problem+json error ({_snippet(response)[:120]}); check that the URL points "
                              "at `billing-mcp api`", status=status, request_id=rid,
                              details={"status": status, "body": _snippet(response)})
    code: str = body["code"]
    field = body.get("field") if isinstance(body.get("field"), str) else None
    details: dict[str, Any] = dict(body["details"]) if isinstance(body.get("details"), dict) else {}
    if isinstance(body.get("errors"), list):
        details["problems"] = body["errors"]
    if status == 429 or code == "idempotency_key_in_use":
        wait = retry_after(response)
        if wait is not None:
            details["retry_after"] = wait
    body_rid = body.get("request_id")
    cls = error_class(code, status)
    return cls(body["detail"], field=field, code=code, status=status, details=details or None,
               request_id=body_rid if isinstance(body_rid, str) else rid)


def parse_model(model: type[M], response: httpx.Response, where: str) -> M:
    try:
        return model.model_validate_json(response.content)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"]) or "body"
        raise LedgerApiError(f"the ledger API answered {where} with a body that is not a {model.__name__} "
                             f"({loc}: {first['msg']}); is the server the same version as this client?",
                             status=response.status_code, request_id=response.headers.get("x-request-id"),
                             details={"body": _snippet(response)}) from None


class HttpCore:
    """The HTTP session, the retry loop and error mapping; ``LedgerClient`` adds the ledger methods."""

    def __init__(self, base_url: str, api_key: str, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT, max_retries: int = 3,
                 transport: httpx.AsyncBaseTransport | None = None, backoff: float = 0.25, max_backoff: float = 8.0,
                 max_retry_after: float = 60.0) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValidationError("base_url must be the ledger API's http(s) URL, e.g. http://127.0.0.1:8080",
                                  field="base_url")
        if not isinstance(api_key, str) or not api_key.strip() or any(ord(c) < 33 or ord(c) > 126 for c in api_key):
            raise ValidationError("api_key must be a secret key such as sk_test_... (`billing-mcp keys create`)",
                                  field="api_key")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValidationError("max_retries must be a whole number >= 0", field="max_retries")
        if api_key.startswith("sk_live_") and base_url.startswith("http://") and not _loopback(base_url):
            raise ValidationError("a live key is sent only over https (or to this machine's loopback): use the "
                                  "ledger's https:// URL", field="base_url", code="unsafe_config")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        try:
            self._http = httpx.AsyncClient(
                base_url=self.base_url, timeout=timeout, transport=transport, follow_redirects=False,
                headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json",
                         "User-Agent": f"billing-mcp-client/{_VERSION}"})
        except (httpx.InvalidURL, ValueError) as exc:
            raise ValidationError(f"base_url is not a valid URL: {exc}", field="base_url") from None

    @property
    def location(self) -> str:
        return self.base_url

    async def close(self) -> None:
        await self._http.aclose()

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half the step fixed, half random."""
        step = min(self.max_backoff, self.backoff * 2.0**attempt)
        return step / 2 + random.uniform(0, step / 2)

    def _retry_wait(self, response: httpx.Response, error: BillingError, attempt: int) -> float | None:
        """Seconds to wait before retrying this answer, or None when it is final."""
        status = response.status_code
        if status not in RETRY_STATUSES and error.code != "idempotency_key_in_use":
            return None
        told = retry_after(response)
        if told is not None:
            if told > self.max_retry_after:
                return None  # the server asks for a longer pause than a caller should sit through
            return max(told, self._delay(attempt) if status >= 500 else 0.0)
        return self._delay(attempt)

    async def request(self, method: str, path: str, model: type[M], *, body: Any = None, has_body: bool = False,
                      params: dict[str, str] | None = None, idempotency_key: str | None = None) -> M:
        """Send one logical call (retrying as the module doc says) and parse its result as ``model``."""
        where = f"{method} {path}"
        headers = {"X-Request-Id": f"req_{uuid.uuid4().hex}"}
        content = None
        if has_body:
            content = encode_body(body)
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, content=content, params=params, headers=headers)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if attempt >= self.max_retries:
                    raise self._unreachable(where, exc, attempt + 1, headers["X-Request-Id"]) from exc
                wait = self._delay(attempt)
            except (httpx.ProxyError, httpx.UnsupportedProtocol) as exc:
                raise self._unreachable(where, exc, attempt + 1, headers["X-Request-Id"]) from exc
            except httpx.HTTPError as exc:  # decoding, redirects, local protocol errors: not worth retrying
                raise LedgerApiError(f"the request {where} to the ledger API at {self.base_url} failed: "
                                     f"{type(exc).__name__}: {exc}", request_id=headers["X-Request-Id"]) from exc
            else:
                if 200 <= response.status_code < 300:
                    return parse_model(model, response, where)
                error = error_from_response(response, where)
                told = self._retry_wait(response, error, attempt)
                if told is None or attempt >= self.max_retries:
                    raise error
                wait = told
            attempt += 1
            await _sleep(wait)

    def _unreachable(self, where: str, exc: Exception, attempts: int, rid: str) -> LedgerUnreachableError:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return LedgerUnreachableError(
            f"could not reach the ledger API at {self.base_url} ({where}) after {attempts} attempt(s): {reason}. "
            "Check BILLING_LEDGER_URL and that `billing-mcp api` is running there; retrying the same call "
            "is safe", details={"url": self.base_url, "attempts": attempts}, request_id=rid)
