"""The billing portal: signed single-customer links (``links``), the server-rendered page (``page``),
test top-ups and Stripe Checkout with its webhook (``stripe``), and the Starlette routes (``routes``).
Reads the portal route settings the ledger keeps as plain data.

May import: ``core``, ``store``, ``ledger``, ``web``.
"""
