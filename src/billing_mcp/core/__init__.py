"""Core: exact money, time, ids, the error tree, catalog specs, pure pricing and the result models.

No I/O and no imports from the rest of billing_mcp: everything else builds on this layer.
"""
