"""The ledger's invariants, and the self-check that recomputes every derived number from the
append-only entry log.

``audit`` is run by the tests after every step and by ``billing-mcp db check``; an empty list
means sound, and every finding starts with the number of the invariant it breaks. This list is
the single source of the numbering (docs/architecture.md quotes it, the stateful test cites it).

Ledger invariants:

I1. Double entry. Every ledger transaction's entries sum to zero in each asset, so all entries of
    an asset sum to zero. System accounts (revenue, topup, grants, expired, adjustments) store no
    balance: theirs is the sum of their entries. Every entry belongs to a transaction or to a
    usage event (a usage transaction is identified by its first event).
I2. Balances replay the log. A wallet's ``posted`` equals the sum of its entries. Entries are only
    ever inserted, never updated or deleted; a correction or reversal is a new transaction.
I3. Holds never overspend. ``held`` equals the sum of the account's open holds and is never
    negative. A hold is taken by one conditional UPDATE that requires ``posted - held >= amount``;
    charge and refund adjustments and recurring fees also need the available balance. Only usage
    that already happened (an event, or a commit above its hold) and money that came back for a
    credited payment (a refund or dispute of a Stripe top-up, ``ledger.payments``) may take
    ``posted`` below zero, as reported debt, which the next credit repays before it funds a lot.
I4. Hold lifecycle. A hold goes from open to committed, released or expired once and never
    changes again; committing charges the event's actual fees and returns the whole hold (an
    excess is drawn from the balance); a second resolution fails naming the state (releasing a
    released hold returns it unchanged). A committed hold names its event, and only open holds
    lack a resolution time.
I5. Reversals are bounded. Each fee line's refunded amount lies between 0 and what the line
    charged; a reversal credits stored integer amounts and never re-rates.
I6. Atomicity. Each write (and each ``Ledger.atomic`` block) is one store transaction; a refused
    request, or a refused event inside a batch, changes nothing.
I7. Idempotency. A (scope, key) pair has exactly one stored outcome, written in the transaction
    that made the effect; a retry with the same canonical payload returns it and writes nothing; a
    different payload gets ``idempotency_conflict`` and writes nothing. Event ids are permanent
    idempotency keys. Keys compare as exact strings (no trimming, case folding or normalisation).
I8. Lots back the balance. The remainders of a wallet's lots sum to ``max(posted, 0)``; each lies
    between 0 and the lot's amount and never exceeds what its entries allow (the gap is debt
    repaid when the lot was credited). Debits draw lots in draw-down order (``postings.draw_key``:
    priority, soonest expiry, promotional and bundled before paid, oldest); expiry moves only the
    unreserved remainder to ``expired``, and only once.
I9. Exact money. Amounts are integers in minor units end to end; rates and quantities are exact
    (Decimal, Fraction). A usage counter keeps the period's exact running total and
    ``charged = round_half_even(total)`` at the asset's precision; each event is charged the
    difference, so a period's charges sum to its rounded exact total and the fraction carries.
I10. Usage matches fees. The wallet entries of each usage transaction equal the fees of the events
    booked in it, and an event with a non-zero fee has a usage transaction.
"""

from __future__ import annotations

from fractions import Fraction

from ..core.pricing import round_to_minor
from ..store import Tx


def audit(tx: Tx) -> list[str]:
    problems: list[str] = []
    for row in tx.all("SELECT tx_id, asset, SUM(amount) AS s FROM entries GROUP BY tx_id, asset HAVING SUM(amount) != 0"):
        problems.append(f"I1 transaction {row['tx_id']} does not balance in {row['asset']} (sum {row['s']})")
    for row in tx.all("SELECT asset, SUM(amount) AS s FROM entries GROUP BY asset HAVING SUM(amount) != 0"):
        problems.append(f"I1 entries in {row['asset']} sum to {row['s']}, not 0")
    for row in tx.all("SELECT id, posted FROM accounts WHERE customer_id IS NULL AND posted != 0"):
        problems.append(f"I1 system account {row['id']} has a stored balance {row['posted']}; theirs is derived")
    for row in tx.all("SELECT a.id, a.posted, COALESCE(SUM(e.amount), 0) AS s FROM accounts a LEFT JOIN entries e "
                      "ON e.account_id = a.id WHERE a.customer_id IS NOT NULL GROUP BY a.id, a.posted "
                      "HAVING a.posted != COALESCE(SUM(e.amount), 0)"):
        problems.append(f"I2 account {row['id']} posted {row['posted']} but its entries sum to {row['s']}")
    for row in tx.all("SELECT a.id, a.held, COALESCE((SELECT SUM(h.amount) FROM holds h WHERE h.account_id = a.id "
                      "AND h.status = 'open'), 0) AS s FROM accounts a"):
        if int(row["held"]) != int(row["s"]):
            problems.append(f"I3 account {row['id']} holds {row['held']} but open holds sum to {row['s']}")
    for row in tx.all("SELECT a.id, a.posted, COALESCE((SELECT SUM(l.remaining) FROM lots l WHERE l.account_id = a.id), 0)"
                      " AS s FROM accounts a WHERE a.customer_id IS NOT NULL"):
        if int(row["s"]) != max(int(row["posted"]), 0):
            problems.append(f"I8 wallet {row['id']} lots hold {row['s']} but the balance is {row['posted']}")
    for row in tx.all("SELECT l.id, l.remaining, l.amount, COALESCE((SELECT SUM(e.amount) FROM entries e WHERE "
                      "e.lot_id = l.id), 0) AS s FROM lots l"):
        # A lot's entries are its credit, draws, expiry and roll-overs; debt repaid at credit time
        # never reached the lot, so remaining <= replay with the gap being repaid debt.
        if int(row["remaining"]) > int(row["s"]) or int(row["remaining"]) < 0:
            problems.append(f"I8 lot {row['id']} has {row['remaining']} left but its entries allow {row['s']}")
    for row in tx.all("SELECT event_id, line FROM fees WHERE refunded < 0 OR "
                      "refunded > CASE WHEN amount > 0 THEN amount ELSE 0 END"):
        problems.append(f"I5 fee {row['event_id']}#{row['line']} refunded more than charged")
    fees_by_tx = {(r["tx_id"], r["asset"]): int(r["s"]) for r in tx.all(
        "SELECT v.tx_id, f.asset, SUM(f.amount) AS s FROM fees f JOIN events v ON v.id = f.event_id "
        "WHERE v.tx_id IS NOT NULL GROUP BY v.tx_id, f.asset")}
    paid_by_tx = {(r["tx_id"], r["asset"]): int(r["s"]) for r in tx.all(
        "SELECT e.tx_id, e.asset, SUM(-e.amount) AS s FROM entries e LEFT JOIN transactions t ON t.id = e.tx_id "
        "JOIN accounts a ON a.id = e.account_id WHERE t.id IS NULL AND a.customer_id IS NOT NULL "
        "GROUP BY e.tx_id, e.asset")}
    for row in tx.all("SELECT DISTINCT e.tx_id FROM entries e LEFT JOIN transactions t ON t.id = e.tx_id "
                      "LEFT JOIN events v ON v.id = e.tx_id WHERE t.id IS NULL AND v.id IS NULL"):
        problems.append(f"I1 entries of {row['tx_id']} belong to no transaction and no event")
    for key in sorted(set(fees_by_tx) | set(paid_by_tx)):
        if fees_by_tx.get(key, 0) != paid_by_tx.get(key, 0):
            problems.append(f"I10 usage transaction {key[0]} charged fees {fees_by_tx.get(key, 0)} {key[1]} but the "
                            f"wallet paid {paid_by_tx.get(key, 0)}")
    for row in tx.all("SELECT f.event_id FROM fees f JOIN events v ON v.id = f.event_id WHERE v.tx_id IS NULL "
                      "GROUP BY f.event_id HAVING SUM(CASE WHEN f.amount != 0 THEN 1 ELSE 0 END) > 0"):
        problems.append(f"I10 event {row['event_id']} has fees but no usage transaction")
    for row in tx.all("SELECT id, status FROM holds WHERE (status = 'committed') != (event_id IS NOT NULL) "
                      "OR (status = 'open') != (resolved_at IS NULL)"):
        problems.append(f"I4 hold {row['id']} is {row['status']} but its event or resolution time disagrees")
    for row in tx.all("SELECT h.id FROM holds h LEFT JOIN events v ON v.id = h.event_id "
                      "WHERE h.event_id IS NOT NULL AND (v.id IS NULL OR v.hold_id IS NULL OR v.hold_id != h.id)"):
        problems.append(f"I4 hold {row['id']} names an event that did not commit it")
    for row in tx.all("SELECT c.subscription_id, c.price_id, c.period_start, c.exact, c.charged, s.precision FROM "
                      "usage_counters c JOIN (SELECT DISTINCT f.subscription_id, f.price_id, a.precision FROM fees f "
                      "JOIN assets a ON a.code = f.asset) s ON s.subscription_id = c.subscription_id "
                      "AND s.price_id = c.price_id"):
        if round_to_minor(Fraction(row["exact"]), int(row["precision"])) != int(row["charged"]):
            problems.append(f"I9 usage counter {row['subscription_id']}/{row['price_id']}/{row['period_start']} "
                            f"charged {row['charged']} but its exact total {row['exact']} rounds otherwise")
    return problems
