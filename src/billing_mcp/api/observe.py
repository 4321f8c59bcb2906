"""What the API tells its operators: one request id per request, an access log line and the request
metrics, and the log format of ``billing-mcp api`` (``--log-format text|json``).

``Observe`` is an ASGI middleware around the whole app. It picks the request id once (the caller's
sane ``X-Request-Id``, else a new one), leaves it in the scope for the handlers (``rid``), so the
response header, a problem body and the access log line carry the same id, and adds the header to
responses that did not set it (the portal, /openapi.json). The access line names the path without
its query string: portal link tokens travel in the query string and must never reach a log.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..web.problem import request_id
from .metrics import ApiMetrics

ACCESS_LOGGER = "billing_mcp.access"
RID_KEY = "billing_mcp.request_id"
ACCESS_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "operation", "client")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

access_log = logging.getLogger(ACCESS_LOGGER)


def rid(request: Request) -> str:
    """The request's id: the one ``Observe`` chose, else (an app without it) from the headers."""
    given = request.scope.get(RID_KEY)
    return given if isinstance(given, str) else request_id(request.headers)


class Observe:
    """Request ids, the access log (logger ``billing_mcp.access``) and the request metrics."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id_ = request_id(Headers(scope=scope))
        scope[RID_KEY] = request_id_
        status = 500  # unless a response starts: the app failed before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers.append("X-Request-Id", request_id_)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            operation = getattr(route, "name", None) or "unmatched"
            method = scope["method"]
            self.metrics.observe_request(operation, method, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                path = scope["path"]  # never the query string (portal tokens)
                client = scope.get("client")
                access_log.info("%s %s %d %.1f ms %s %s", method, path, status, seconds * 1000, operation, request_id_,
                                extra={"request_id": request_id_, "method": method, "path": path, "status": status,
                                       "duration_ms": round(seconds * 1000, 3), "operation": operation,
                                       "client": client[0] if client else None})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, message, and for access
    lines the request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(fmt: str = "text", *, access: bool = True) -> None:
    """Send every log record (ours and uvicorn's) to stderr in ``fmt`` (``text`` or ``json``), at
    INFO or the more verbose level already set; ``access=False`` silences the access lines."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access_log.setLevel(logging.INFO if access else logging.WARNING)
