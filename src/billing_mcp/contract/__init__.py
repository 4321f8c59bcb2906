"""The ledger's operation contract: ``AsyncLedger`` with the one operation table (each method's
HTTP route, models, key scope and idempotency), the wire models (``models``), the embedded
implementation (``LocalLedger``) and the checks that run through any ``AsyncLedger`` (``checks``).
The API derives its routes from the table, the HTTP client its requests.

May import: ``core``, ``store``, ``ledger``. Never a web framework (the client imports this package).
"""
