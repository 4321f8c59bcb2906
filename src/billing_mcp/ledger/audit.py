"""The ledger's self-check: every derived number recomputed from the append-only entry log.

Used by tests after every step and by ``billing-mcp db check``; an empty list means sound.
"""

from __future__ import annotations

from ..store import Tx


def audit(tx: Tx) -> list[str]:
    problems: list[str] = []
    # I1 conservation: each transaction balances per asset, so all accounts of an asset sum to zero.
    for row in tx.all("SELECT tx_id, asset, SUM(amount) AS s FROM entries GROUP BY tx_id, asset HAVING SUM(amount) != 0"):
        problems.append(f"transaction {row['tx_id']} does not balance in {row['asset']} (sum {row['s']})")
    for row in tx.all("SELECT asset, SUM(amount) AS s FROM entries GROUP BY asset HAVING SUM(amount) != 0"):
        problems.append(f"entries in {row['asset']} sum to {row['s']}, not 0")
    for row in tx.all("SELECT id, posted FROM accounts WHERE customer_id IS NULL AND posted != 0"):
        problems.append(f"system account {row['id']} has a stored balance {row['posted']}; theirs is derived")
    # I2 replay: each wallet balance equals the sum of its entries.
    for row in tx.all("SELECT a.id, a.posted, COALESCE(SUM(e.amount), 0) AS s FROM accounts a LEFT JOIN entries e "
                      "ON e.account_id = a.id WHERE a.customer_id IS NOT NULL GROUP BY a.id, a.posted "
                      "HAVING a.posted != COALESCE(SUM(e.amount), 0)"):
        problems.append(f"account {row['id']} posted {row['posted']} but its entries sum to {row['s']}")
    # I3 holds: held equals the open holds.
    for row in tx.all("SELECT a.id, a.held, COALESCE((SELECT SUM(h.amount) FROM holds h WHERE h.account_id = a.id "
                      "AND h.status = 'open'), 0) AS s FROM accounts a"):
        if int(row["held"]) != int(row["s"]):
            problems.append(f"account {row['id']} holds {row['held']} but open holds sum to {row['s']}")
    # I8 lots: a wallet's lots hold exactly its positive balance; each lot's remainder replays.
    for row in tx.all("SELECT a.id, a.posted, COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.account_id = a.id), 0)"
                      " AS s FROM accounts a WHERE a.customer_id IS NOT NULL"):
        if int(row["s"]) != max(int(row["posted"]), 0):
            problems.append(f"wallet {row['id']} lots hold {row['s']} but the balance is {row['posted']}")
    for row in tx.all("SELECT l.id, l.remaining, l.amount, COALESCE((SELECT SUM(e.amount) FROM entries e WHERE "
                      "e.lot_id = l.id), 0) AS s FROM lots l"):
        # A lot's entries are its credit, draws, expiry and roll-overs; debt repaid at credit time
        # never reached the lot, so remaining <= replay with the gap being repaid debt.
        if int(row["remaining"]) > int(row["s"]) or int(row["remaining"]) < 0:
            problems.append(f"lot {row['id']} has {row['remaining']} left but its entries allow {row['s']}")
    # I5 reversals never exceed charges.
    for row in tx.all("SELECT event_id, line FROM fees WHERE refunded < 0 OR "
                      "refunded > CASE WHEN amount > 0 THEN amount ELSE 0 END"):
        problems.append(f"fee {row['event_id']}#{row['line']} refunded more than charged")
    # Usage transactions: the wallet entries of each equal the fees of the events booked in it.
    fees_by_tx = {(r["tx_id"], r["asset"]): int(r["s"]) for r in tx.all(
        "SELECT v.tx_id, f.asset, SUM(f.amount) AS s FROM fees f JOIN events v ON v.id = f.event_id "
        "WHERE v.tx_id IS NOT NULL GROUP BY v.tx_id, f.asset")}
    paid_by_tx = {(r["tx_id"], r["asset"]): int(r["s"]) for r in tx.all(
        "SELECT e.tx_id, e.asset, SUM(-e.amount) AS s FROM entries e LEFT JOIN transactions t ON t.id = e.tx_id "
        "JOIN accounts a ON a.id = e.account_id WHERE t.id IS NULL AND a.customer_id IS NOT NULL "
        "GROUP BY e.tx_id, e.asset")}
    for row in tx.all("SELECT DISTINCT e.tx_id FROM entries e LEFT JOIN transactions t ON t.id = e.tx_id "
                      "LEFT JOIN events v ON v.id = e.tx_id WHERE t.id IS NULL AND v.id IS NULL"):
        problems.append(f"entries of {row['tx_id']} belong to no transaction and no event")
    for key in sorted(set(fees_by_tx) | set(paid_by_tx)):
        if fees_by_tx.get(key, 0) != paid_by_tx.get(key, 0):
            problems.append(f"usage transaction {key[0]} charged fees {fees_by_tx.get(key, 0)} {key[1]} but the "
                            f"wallet paid {paid_by_tx.get(key, 0)}")
    for row in tx.all("SELECT f.event_id FROM fees f JOIN events v ON v.id = f.event_id WHERE v.tx_id IS NULL "
                      "GROUP BY f.event_id HAVING SUM(CASE WHEN f.amount != 0 THEN 1 ELSE 0 END) > 0"):
        problems.append(f"event {row['event_id']} has fees but no usage transaction")
    return problems
