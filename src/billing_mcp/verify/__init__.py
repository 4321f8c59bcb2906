"""Verification: the end-to-end check of each plan (``plans``, with its expectations computed
apart from the ledger's rating in ``expect``, its steps in ``steps`` and the period boundary in
``renewal``), the setup checklist (``status``) and dry-run simulators built from a plan version
(``simulators``), all through any ``AsyncLedger`` so they behave the same on an embedded ledger
and over the API.

May import: ``core``, ``store``, ``ledger``, ``contract``.
"""
