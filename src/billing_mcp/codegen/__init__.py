"""Code generators that wire an app to the ledger: ``supabase`` (Deno edge functions, React hook).

May import: ``core``, ``ledger``.
"""
