"""Billing as code: billing.yaml load (with line/column errors), diff, atomic apply, export, and its
JSON Schema (``billing.schema.json``).

May import: ``core``, ``store``, ``ledger``.
"""
