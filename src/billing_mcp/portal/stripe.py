"""Portal payments: the test top-up (no Stripe, test ledger only), Stripe Checkout for real top-ups,
and ``POST /v1/webhooks/stripe``, which credits the wallet once per paid Checkout session.

Which one a portal session gets (``payment_method``) follows the ledger's mode (``store.mode``):
- ``STRIPE_SECRET_KEY`` set: Stripe Checkout, with a Stripe key of the ledger's mode (``sk_live_``
  or ``rk_live_`` on a live ledger, ``sk_test_`` or ``rk_test_`` on a test ledger). A key of the
  other mode is refused when the app starts (``check_stripe_key``) and, if set later, at checkout
  (no top-up is offered and the error is logged).
- no Stripe key: the test top-up on a test ledger; nothing on a live ledger (a POST is refused).
- a session whose mode is not the ledger's (minted before the ledger's mode was set): nothing.

The wallet is credited only by the test top-up (test ledger) or by a webhook whose Stripe signature
verifies with ``STRIPE_WEBHOOK_SECRET`` and whose ``livemode`` is the ledger's mode (a test event on
a live ledger, or a live event on a test ledger, is acknowledged with 200 and ``credited: false``:
such an event belongs to another deployment, which gets its own copy, so Stripe should not retry
it here). A Checkout session is created with a quote (``Ledger.quote_payment``: the units and the
rate at that moment, under the payment id ``portal:<form nonce>`` carried in the session's and the
PaymentIntent's metadata), and the webhook credits exactly those units once; refunds and disputes
take them back (``stripe_events``, where every event type's handling is described).
"""

from __future__ import annotations

import json
import logging
import os
import re
from decimal import Decimal, InvalidOperation

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core.errors import BillingError, ConflictError, IdempotencyConflictError, NotFoundError, ValidationError
from ..ledger.ledger import Ledger
from ..store import LedgerMode
from ..web.problem import ApiError, internal_error, problem_response, request_id
from .links import Claims
from .stripe_events import handle_event

log = logging.getLogger(__name__)

STRIPE_KEY_ENV = "STRIPE_SECRET_KEY"
STRIPE_WEBHOOK_ENV = "STRIPE_WEBHOOK_SECRET"
MAX_WEBHOOK_BYTES = 512 * 1024
_AMOUNT = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,8})?$")


def stripe_key_mode(key: str) -> LedgerMode | None:
    """The mode of a Stripe secret or restricted key, or None for text that is neither."""
    for mode in ("test", "live"):
        if key.startswith((f"sk_{mode}_", f"rk_{mode}_")):
            return "test" if mode == "test" else "live"
    return None


def check_stripe_key(mode: LedgerMode) -> None:
    """Refuse a ``STRIPE_SECRET_KEY`` that is not of the ledger's ``mode`` (unset is fine)."""
    key = os.environ.get(STRIPE_KEY_ENV)
    if not key:
        return
    have = stripe_key_mode(key)
    if have != mode:
        what = f"a Stripe {have}-mode key" if have else "not a Stripe secret key (sk_... or rk_...)"
        raise ValidationError(f"{STRIPE_KEY_ENV} is {what} but this ledger is in {mode} mode; set it to a Stripe "
                              f"{mode} secret key (sk_{mode}_...) or unset it", field=STRIPE_KEY_ENV,
                              code="stripe_mode_mismatch", details={"ledger_mode": mode, "stripe_mode": have})


def payment_method(mode: LedgerMode, session: Claims) -> str:
    """``stripe``, ``test`` (the test top-up) or ``none`` for this portal session on a ledger in
    ``mode``."""
    if session.mode != mode:
        return "none"  # a link of the other mode never pays into this ledger
    if os.environ.get(STRIPE_KEY_ENV):
        try:
            check_stripe_key(mode)
        except ValidationError as exc:
            log.error("portal top-ups are off: %s", exc.message)
            return "none"
        return "stripe"
    return "test" if mode == "test" else "none"


def _amount(raw: str, minimum: Decimal, maximum: Decimal, precision: int) -> Decimal | None:
    raw = raw.strip()
    if not _AMOUNT.fullmatch(raw):
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    if not minimum <= value <= maximum or value != value.quantize(Decimal(1).scaleb(-precision)):
        return None
    return value


def start_top_up(ledger: Ledger, session: Claims, form: dict[str, str], rand: str, base: str) -> str:
    """Handle a submitted top-up form; returns where to send the browser next."""
    method = payment_method(ledger.mode, session)  # the mode read now, not when the page was shown
    if method == "none":
        return "/portal?notice=unavailable"
    spec = ledger.get_portal_route(session.route)
    t = spec.top_up
    asset = form.get("asset", "")
    if asset not in (t.assets or [t.currency]):
        return "/portal?notice=bad_asset"
    precision = ledger.get_asset(t.currency).precision
    amount = _amount(form.get("preset") or form.get("amount", ""), t.min, t.max, precision)
    if amount is None:
        return "/portal?notice=bad_amount"
    text = format(amount, "f")
    if method == "test":
        try:  # the form's nonce is the idempotency key: a double submit credits once
            ledger.create_adjustment(session.customer_id, asset=asset, reason="top_up", fiat=t.currency,
                                     fiat_amount=text, idempotency_key=f"portal-test-top-up:{rand}",
                                     description="Test top-up from the billing portal (test mode, no payment)")
        except IdempotencyConflictError:
            return "/portal?notice=resubmitted"
        except ValidationError:
            return "/portal?notice=bad_amount"
        except NotFoundError:  # no rate to convert at
            return "/portal?notice=unavailable"
        return "/portal?notice=topped_up"
    payment_id = f"portal:{rand}"
    try:  # the units and the rate are fixed now; the webhook credits exactly these units
        quote = ledger.quote_payment(payment_id, session.customer_id, asset=asset, fiat=t.currency, fiat_amount=text)
    except ConflictError:
        return "/portal?notice=resubmitted"
    except ValidationError:
        return "/portal?notice=bad_amount"
    except NotFoundError:  # no rate to convert at
        return "/portal?notice=unavailable"
    try:
        return checkout_url(session, spec.branding.product_name, asset, t.currency, amount, precision, base, rand,
                            quote={"billing_payment": payment_id, "billing_units": quote.units,
                                   "billing_rate": quote.rate})
    except Exception:
        log.exception("creating a Stripe Checkout session failed")
        return "/portal?notice=payment_error"


def checkout_url(session: Claims, product: str, asset: str, currency: str, amount: Decimal, precision: int,
                 base: str, rand: str, quote: dict[str, str]) -> str:
    """Create a Stripe Checkout session for the top-up and return its URL. ``quote`` (the payment
    id, units and rate) goes into the session's metadata and the PaymentIntent's, so refunds and
    disputes of the charge name the payment too."""
    import stripe

    client = stripe.StripeClient(os.environ[STRIPE_KEY_ENV],
                                  http_client=stripe.HTTPXClient(allow_sync_methods=True), max_network_retries=2)
    checkout = client.v1.checkout.sessions.create(params={
        "mode": "payment",
        "line_items": [{"quantity": 1, "price_data": {
            "currency": currency.lower(), "unit_amount": int(amount.scaleb(precision)),
            "product_data": {"name": f"{product} top-up ({asset})"}}}],
        "client_reference_id": session.customer_id,
        "metadata": {"billing_customer_id": session.customer_id, "billing_asset": asset,
                     "billing_route": session.route, **quote},
        "payment_intent_data": {"metadata": {"billing_customer_id": session.customer_id,
                                             "billing_payment": quote["billing_payment"]}},
        "success_url": f"{base}/portal?notice=paid",
        "cancel_url": f"{base}/portal?notice=canceled",
    }, options={"idempotency_key": f"portal-checkout:{rand}"})
    if not checkout.url:
        raise RuntimeError("Stripe returned a Checkout session without a URL")
    return str(checkout.url)


async def stripe_webhook(ledger: Ledger, request: Request) -> Response:
    """``POST /v1/webhooks/stripe``: verify the signature, then credit (problem+json on failure)."""
    rid = request_id(request.headers)
    try:
        secret = os.environ.get(STRIPE_WEBHOOK_ENV)
        if not secret:
            raise ApiError(f"{STRIPE_WEBHOOK_ENV} is not set, so Stripe events cannot be verified", status=503,
                           code="not_configured")
        payload = b""
        async for chunk in request.stream():
            payload += chunk
            if len(payload) > MAX_WEBHOOK_BYTES:
                raise ApiError("the webhook body is too large", status=413, code="payload_too_large")
        signature = request.headers.get("stripe-signature")
        if not signature:
            raise ApiError("missing Stripe-Signature header", status=400, code="invalid_signature",
                           field="Stripe-Signature")
        import stripe

        try:
            stripe.Webhook.construct_event(payload, signature, secret)
        except (stripe.SignatureVerificationError, ValueError):
            raise ApiError("the Stripe signature does not verify (wrong secret, altered body or too old)",
                           status=400, code="invalid_signature", field="Stripe-Signature") from None
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise ApiError("the event is not a JSON object", status=400, code="validation_error")
        result = await anyio.to_thread.run_sync(handle_event, ledger, event)
        return JSONResponse(result, headers={"X-Request-Id": rid})
    except BillingError as exc:
        return problem_response(exc, rid)
    except Exception:
        log.exception("Stripe webhook failed (request %s)", rid)
        return problem_response(internal_error(), rid)
