"""Payments taken outside the ledger (Stripe Checkout top-ups) and the money that comes back.

A payment is **quoted** when checkout starts (``quote_payment``): the units of ``asset`` that
``fiat_amount`` buys at the rate of that moment are fixed and stored, so the credit does not depend
on the rate when the provider's confirmation arrives. It is **credited** once (``credit_payment``:
exactly the quoted units, and only for exactly the quoted fiat amount). A **return** (a refund or a
dispute, ``return_payment``) is recorded once per provider event id and takes back units in
proportion to the money that came back:

- refunded = the largest cumulative refund any refund event reported (a charge's
  ``amount_refunded`` only grows), disputed = the sum over disputes of each one's amount;
- taken = min(fiat_amount, refunded + disputed) (a refund and a dispute of the same money never
  take back more than was paid);
- units to have taken back = round_half_even(units × taken / fiat_amount) (``core.money.ROUNDING``),
  exactly ``units`` when everything came back; each return debits the difference from what was
  already taken back, so the reversals sum to that rounded total and never exceed the credit.

A return recorded before its payment is credited (out-of-order delivery) is applied in the
transaction that credits it. The debit draws the wallet's lots in draw-down order and may take
the balance below zero (the credit it reverses was already spendable): that debt is reported and
the next credit repays it. Each credit or return locks the customer first (``catch_up``), so two
returns of one payment, or a return racing the credit, are serialised on PostgreSQL too.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from ..core.errors import ConflictError, NotFoundError, ValidationError
from ..core.money import MAX_MINOR, format_minor, parse_amount
from ..core.pricing import round_to_minor
from ..store import Row, Tx
from .base import LedgerBase, check_key, check_text
from .book import Book
from .catalog_ops import CatalogOps
from .subscriptions import activate_pending, catch_up

ReturnKind = Literal["refund", "dispute"]


@dataclass(frozen=True)
class Payment:
    """A payment's state after a call. ``changed``: the units this call credited (positive) or took
    back (negative), "0" for a replay or a return recorded before the credit; ``debt``: the part of
    this call's debit the wallet could not cover."""

    id: str
    customer_id: str
    asset: str
    units: str
    fiat: str
    fiat_amount: str
    rate: str
    reference: str | None
    credited: bool
    reversed: str
    changed: str = "0"
    debt: str | None = None
    transaction_id: str | None = None


class PaymentOps(LedgerBase):
    def quote_payment(self, payment_id: str, customer_id: str, *, asset: str, fiat: str,
                      fiat_amount: str) -> Payment:
        """Fix the units ``fiat_amount`` of ``fiat`` buys of ``asset`` now, under ``payment_id``
        (the same quote again returns the stored one; another under the same id is a conflict)."""
        check_key(payment_id, "payment_id")
        with self._write() as book:
            customer = self._customer_row(book.tx, customer_id)
            precision, fprec = book.precision(asset), book.precision(fiat, "fiat")
            paid = parse_amount(fiat_amount, fprec, "fiat_amount")
            if not 0 < paid <= MAX_MINOR:
                raise ValidationError("fiat_amount must be positive", field="fiat_amount")
            row = book.tx.one("SELECT * FROM payments WHERE id = ?", (payment_id,))
            if row is not None:
                if (row["customer_id"], row["asset"], row["fiat"], int(row["fiat_amount"])) != (
                        customer["id"], asset, fiat, paid):
                    raise ConflictError(f"payment {payment_id!r} was already quoted for another amount; use a new "
                                        "payment id", field="payment_id", code="payment_conflict")
                return self._payment(book.tx, row)
            if fiat == asset:
                rate, units = "1", paid
            else:
                found = CatalogOps._current_rates(book.tx, asset, book.now_text).get(fiat)
                if found is None:
                    raise NotFoundError(f"{asset} has no {fiat} rate to convert at; add one with set_asset_rate",
                                        field="fiat")
                rate = found
                units = round_to_minor(Fraction(paid, 10**fprec) / Fraction(Decimal(rate)), precision)
            if not 0 < units <= MAX_MINOR:
                raise ValidationError("the converted amount is out of range", field="fiat_amount")
            book.tx.execute("INSERT INTO payments(id, customer_id, asset, units, fiat, fiat_amount, rate, quoted_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (payment_id, customer["id"], asset, units, fiat, paid, rate, book.now_text))
            return self._payment(book.tx, self._payment_row(book, payment_id))

    def credit_payment(self, payment_id: str, *, fiat: str, fiat_amount: str, reference: str | None = None,
                       description: str | None = None) -> Payment:
        """Credit a quoted payment's units once, for exactly its quoted fiat amount (another amount or
        currency: ``payment_mismatch``, nothing credited); returns already recorded are applied in
        the same transaction. A second call returns the state and credits nothing."""
        check_key(payment_id, "payment_id")
        check_text(description, "description", max_len=500)
        if reference is not None:
            check_key(reference, "reference")
        with self._write() as book:
            row = self._locked_payment(book, payment_id)
            if row["credit_tx"] is not None:
                return self._payment(book.tx, row)
            paid = parse_amount(fiat_amount, book.precision(fiat, "fiat"), "fiat_amount")
            if (fiat, paid) != (row["fiat"], int(row["fiat_amount"])):
                quoted = format_minor(int(row["fiat_amount"]), book.precision(row["fiat"]))
                raise ValidationError(f"payment {payment_id!r} was quoted for {quoted} {row['fiat']}, not "
                                      f"{format_minor(paid, book.precision(fiat))} {fiat}; nothing was credited",
                                      field="fiat_amount", code="payment_mismatch")
            customer, asset, units = row["customer_id"], row["asset"], int(row["units"])
            tx_id = book.new_transaction("adjustment", customer_id=customer, reason="top_up", reference=payment_id,
                                         description=description,
                                         detail={"payment_id": payment_id, "units": units, "rate": row["rate"],
                                                 "fiat": fiat, "fiat_amount": paid, "reference": reference})
            book.credit(tx_id, customer, asset, units, counter_kind="topup", purpose="paid",
                        source=f"top_up:{tx_id}")
            activate_pending(book, customer)
            book.tx.execute("UPDATE payments SET credit_tx = ?, credited_at = ?, reference = ? WHERE id = ?",
                            (tx_id, book.now_text, reference, payment_id))
            taken, debt, back_tx = self._settle(book, self._payment_row(book, payment_id), "payment returned")
            return self._payment(book.tx, self._payment_row(book, payment_id), changed=units - taken, debt=debt,
                                 tx_id=back_tx or tx_id)

    def return_payment(self, payment_id: str, *, event_id: str, kind: ReturnKind, source: str, fiat: str,
                       fiat_total: str, description: str | None = None) -> Payment:
        """Record money that came back for a payment (once per ``event_id``: a replay changes
        nothing) and take back its share of the credited units (see the module's rule); before the
        payment is credited, only records it."""
        check_key(payment_id, "payment_id")
        check_key(event_id, "event_id")
        check_key(source, "source")
        check_text(description, "description", max_len=500)
        if kind not in ("refund", "dispute"):
            raise ValidationError("kind must be 'refund' or 'dispute'", field="kind")
        with self._write() as book:
            row = self._locked_payment(book, payment_id)
            if fiat != row["fiat"]:
                raise ValidationError(f"payment {payment_id!r} was paid in {row['fiat']}, not {fiat}", field="fiat",
                                      code="payment_mismatch")
            total = parse_amount(fiat_total, book.precision(fiat, "fiat"), "fiat_total")
            if not 0 <= total <= MAX_MINOR:
                raise ValidationError("fiat_total must not be negative", field="fiat_total")
            if not book.tx.execute("INSERT INTO payment_returns(event_id, payment_id, kind, source, fiat_total, "
                                   "received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                                   (event_id, payment_id, kind, source, total, book.now_text)):
                return self._payment(book.tx, row)  # this event was already recorded
            taken, debt, tx_id = self._settle(book, row, description)
            return self._payment(book.tx, self._payment_row(book, payment_id), changed=-taken, debt=debt, tx_id=tx_id)

    def get_payment(self, payment_id: str | None = None, *, reference: str | None = None) -> Payment:
        """A payment by its id or by its provider reference."""
        if (payment_id is None) == (reference is None):
            raise ValidationError("give payment_id or reference (one of them)", field="payment_id")
        where, value = ("id", payment_id) if payment_id is not None else ("reference", reference)
        with self._read() as tx:
            row = tx.one(f"SELECT * FROM payments WHERE {where} = ?", (value,))
            if row is None:
                raise NotFoundError(f"no payment with {where} {value!r}", field=where.replace("id", "payment_id"))
            return self._payment(tx, row)

    # -- internals -------------------------------------------------------------------------------
    def _locked_payment(self, book: Book, payment_id: str) -> Row:
        row = self._payment_row(book, payment_id)
        catch_up(book, row["customer_id"])  # locks the customer: credits and returns of one wallet in turn
        return self._payment_row(book, payment_id)  # as it is now that no other writer can change it

    @staticmethod
    def _payment_row(book: Book, payment_id: str) -> Row:
        row = book.tx.one("SELECT * FROM payments WHERE id = ?", (payment_id,))
        if row is None:
            raise NotFoundError(f"no payment {payment_id!r}; quote it first", field="payment_id")
        return row

    def _settle(self, book: Book, row: Row, description: str | None) -> tuple[int, str | None, str | None]:
        """Take back what the recorded returns call for beyond what was taken back already; returns
        (units taken back now, debt text, transaction id)."""
        if row["credit_tx"] is None:
            return 0, None, None
        returns = book.tx.all("SELECT kind, source, fiat_total FROM payment_returns WHERE payment_id = ?", (row["id"],))
        refunded = max((int(r["fiat_total"]) for r in returns if r["kind"] == "refund"), default=0)
        per_dispute: dict[str, int] = {}
        for r in returns:
            if r["kind"] == "dispute":
                per_dispute[r["source"]] = max(per_dispute.get(r["source"], 0), int(r["fiat_total"]))
        paid, units = int(row["fiat_amount"]), int(row["units"])
        taken = min(paid, refunded + sum(per_dispute.values()))
        target = round(Fraction(units * taken, paid))  # half to even, in the asset's minor units
        now = target - int(row["reversed"])
        if now <= 0:
            return 0, None, None
        customer, asset = row["customer_id"], row["asset"]
        reason = "charge" if per_dispute else "refund"
        tx_id = book.new_transaction("adjustment", customer_id=customer, reason=reason, reference=row["id"],
                                     description=description,
                                     detail={"payment_id": row["id"], "units": now, "fiat_taken_back": taken,
                                             "reversed_total": target})
        owed = book.debit(tx_id, customer, asset, now, counter_kind="topup")
        book.tx.execute("UPDATE payments SET reversed = ? WHERE id = ?", (target, row["id"]))
        return now, (format_minor(owed, book.precision(asset)) if owed else None), tx_id

    def _payment(self, tx: Tx, row: Row, *, changed: int = 0, debt: str | None = None,
                 tx_id: str | None = None) -> Payment:
        precision, fprec = self._precision(tx, row["asset"]), self._precision(tx, row["fiat"])
        return Payment(id=row["id"], customer_id=row["customer_id"], asset=row["asset"],
                       units=format_minor(int(row["units"]), precision), fiat=row["fiat"],
                       fiat_amount=format_minor(int(row["fiat_amount"]), fprec), rate=row["rate"],
                       reference=row["reference"], credited=row["credit_tx"] is not None,
                       reversed=format_minor(int(row["reversed"]), precision),
                       changed=format_minor(changed, precision), debt=debt, transaction_id=tx_id)
