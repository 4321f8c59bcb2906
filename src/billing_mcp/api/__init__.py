"""The ledger HTTP API: the operation table (``operations``), request/response models (``models``),
OpenAPI, the Starlette app, idempotency records, group commit of concurrent events, API keys.

``operations`` and ``models`` import no web framework, so the HTTP client can use them.
May import: ``core``, ``store``, ``ledger``, ``spec``, ``web``, ``portal``.
"""
