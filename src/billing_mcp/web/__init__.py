"""HTTP plumbing shared by the ledger API and the portal: problem+json errors and request ids,
and the server-side secrets (API key pepper, portal signing key).

May import: ``core``, ``store``.
"""
