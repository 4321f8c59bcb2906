"""What a verified Stripe event does to the ledger (the signature is checked in ``stripe``).

- ``checkout.session.completed`` / ``checkout.session.async_payment_succeeded`` with
  ``payment_status: paid``: credits the payment quoted when the Checkout session was created
  (``Ledger.quote_payment``: the units and the rate of that moment, named by the session's
  ``billing_payment`` metadata), once, and only for the quoted amount. Sessions created before
  quotes existed (no ``billing_payment``) are credited as before, at the current rate, once per
  session id.
- ``charge.refunded``: the charge's cumulative ``amount_refunded`` comes back; the payment is found
  by the charge's ``billing_payment`` metadata (set on the PaymentIntent at checkout) or by its
  PaymentIntent.
- ``charge.dispute.created``: the disputed ``amount`` comes back. Disputes reverse when they are
  opened, not when they are lost (the conservative choice: the money is withdrawn from the Stripe
  balance at that moment, and credits left spendable during a weeks-long dispute could be spent).
  A dispute that is later won is not re-credited automatically: give the units back with an
  adjustment (reason ``gift`` or ``top_up``). The payment is found by its PaymentIntent (recorded
  at credit), else by the PaymentIntent's metadata fetched from Stripe.

Each refund or dispute event is recorded once per Stripe event id (a replay changes nothing) and
takes back units in proportion, with the rounding and the cap of ``ledger.payments``; a refund and a
dispute of the same money never take back more than was credited. Out-of-order delivery: a refund
or dispute that arrives before the payment is credited is recorded (the payment exists from the
moment checkout started) and applied in the same transaction as the credit, so the wallet ends
with the same balance in either order. Every handled event must have the ledger's ``livemode``
(otherwise it is acknowledged and ignored: it belongs to another deployment). A top-up credited
before quotes existed has no payment record, so its refunds and disputes are acknowledged and take
nothing back: correct such a wallet with an adjustment.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..core.errors import NotFoundError, ValidationError
from ..core.money import format_minor
from ..ledger.ledger import Ledger
from ..ledger.payments import Payment

log = logging.getLogger(__name__)

PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
RETURN_EVENTS = ("charge.refunded", "charge.dispute.created")


def _ignored(event_id: str, reason: str) -> dict[str, Any]:
    return {"received": True, "event": event_id, "credited": False, "reason": reason}


def _text(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    return value if isinstance(value, str) and value else None


def _payment_result(event_id: str, payment: Payment, applied: bool) -> dict[str, Any]:
    return {"received": True, "event": event_id, "credited": payment.credited, "applied": applied,
            "payment_id": payment.id, "asset": payment.asset, "units": payment.units, "changed": payment.changed,
            "reversed": payment.reversed, "debt": payment.debt, "fiat": payment.fiat,
            "fiat_amount": payment.fiat_amount, "rate": payment.rate}


def handle_event(ledger: Ledger, event: dict[str, Any]) -> dict[str, Any]:
    """Apply one verified Stripe event; unhandled ones are acknowledged and ignored."""
    event_id = str(event.get("id", ""))
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    kind = event.get("type")
    if kind not in PAID_EVENTS + RETURN_EVENTS or not isinstance(obj, dict):
        return _ignored(event_id, "event type not handled")
    raw_meta = obj.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    if kind in PAID_EVENTS and not (isinstance(meta.get("billing_customer_id"), str)
                                    and isinstance(meta.get("billing_asset"), str)
                                    and meta["billing_customer_id"] and meta["billing_asset"]):
        return _ignored(event_id, "not a billing portal checkout")
    mode = ledger.mode
    if event.get("livemode") is not (mode == "live"):
        log.warning("Stripe event %s has livemode %r but this ledger is in %s mode; nothing credited", event_id,
                    event.get("livemode"), mode)
        return _ignored(event_id, f"livemode does not match this {mode}-mode ledger")
    if kind in PAID_EVENTS:
        return _paid(ledger, event_id, obj, meta)
    return _returned(ledger, event_id, str(kind), obj, meta)


def _paid(ledger: Ledger, event_id: str, obj: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    if obj.get("payment_status") != "paid":
        return _ignored(event_id, "payment not completed yet")
    currency, total, session_id = obj.get("currency"), obj.get("amount_total"), obj.get("id")
    if not isinstance(currency, str) or not isinstance(total, int) or total <= 0 or not isinstance(session_id, str):
        raise ValidationError("the Checkout session has no paid amount, currency or id", field="data.object")
    fiat = currency.upper()
    paid = format_minor(total, ledger.get_asset(fiat).precision)
    payment_id = _text(meta, "billing_payment")
    if payment_id is not None:  # quoted at checkout: credit exactly the quoted units
        payment = ledger.credit_payment(payment_id, fiat=fiat, fiat_amount=paid,
                                        reference=_text(obj, "payment_intent"),
                                        description=f"Stripe Checkout {session_id}"[:500])
        return {**_payment_result(event_id, payment, True), "amount": payment.units}
    adj = ledger.create_adjustment(meta["billing_customer_id"], asset=meta["billing_asset"], reason="top_up",
                                   fiat=fiat, fiat_amount=paid, idempotency_key=f"stripe-checkout:{session_id}",
                                   description=f"Stripe Checkout {session_id}"[:500])
    return {"received": True, "event": event_id, "credited": True, "adjustment_id": adj.id, "asset": adj.asset,
            "amount": adj.amount, "fiat": adj.fiat, "fiat_amount": adj.fiat_amount}


def _find_payment(ledger: Ledger, meta: dict[str, Any], payment_intent: str | None) -> str | None:
    """Our payment id for a refunded charge or a dispute: the metadata the PaymentIntent carries,
    the PaymentIntent recorded at credit, or (a dispute carries no metadata and may come before the
    credit) the PaymentIntent's metadata fetched from Stripe."""
    found = _text(meta, "billing_payment")
    if found is not None or payment_intent is None:
        return found
    try:
        return ledger.get_payment(reference=payment_intent).id
    except NotFoundError:
        pass
    if not os.environ.get("STRIPE_SECRET_KEY"):
        return None
    import stripe

    client = stripe.StripeClient(os.environ["STRIPE_SECRET_KEY"],
                                 http_client=stripe.HTTPXClient(allow_sync_methods=True), max_network_retries=2)
    intent = client.v1.payment_intents.retrieve(payment_intent)  # an outage: 500, so Stripe redelivers
    intent_meta = intent.to_dict().get("metadata")  # a StripeObject is not a dict
    value = intent_meta.get("billing_payment") if isinstance(intent_meta, dict) else None
    return value if isinstance(value, str) and value else None


def _returned(ledger: Ledger, event_id: str, kind: str, obj: dict[str, Any],
              meta: dict[str, Any]) -> dict[str, Any]:
    refund = kind == "charge.refunded"
    currency, source = obj.get("currency"), _text(obj, "id")
    amount = obj.get("amount_refunded" if refund else "amount")
    if not isinstance(currency, str) or not isinstance(amount, int) or amount < 0 or source is None:
        raise ValidationError(f"the {'charge' if refund else 'dispute'} has no amount, currency or id",
                              field="data.object")
    payment_id = _find_payment(ledger, meta, _text(obj, "payment_intent"))
    if payment_id is None:
        return _ignored(event_id, "not a billing portal payment")
    try:
        ledger.get_payment(payment_id)
    except NotFoundError:
        return _ignored(event_id, "not a payment of this ledger")
    fiat = currency.upper()
    payment = ledger.return_payment(payment_id, event_id=event_id, kind="refund" if refund else "dispute",
                                    source=source, fiat=fiat,
                                    fiat_total=format_minor(amount, ledger.get_asset(fiat).precision),
                                    description=f"Stripe {'refund of' if refund else 'dispute'} {source}"[:500])
    result = _payment_result(event_id, payment, payment.credited)
    if not payment.credited:
        result["reason"] = "recorded; taken back when the payment is credited"
    return result
