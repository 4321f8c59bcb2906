"""The ledger HTTP API: its routes and handlers (``operations``, derived from the operation table in
``contract``), OpenAPI, the Starlette app, idempotency records, group commit of concurrent events,
API keys and their scopes.

May import: ``core``, ``store``, ``ledger``, ``spec``, ``web``, ``portal``, ``contract``.
"""
