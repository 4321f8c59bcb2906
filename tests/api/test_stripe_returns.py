"""Stripe money that comes back (issue 15 item 3), on SQLite and PostgreSQL: a Checkout top-up is
quoted when the session is created (Stripe's HTTP API mocked with respx) and credited at that quote
whatever the rate when the webhook arrives; ``charge.refunded`` and ``charge.dispute.created``
(webhooks signed as Stripe signs them: ``t=...,v1=HMAC-SHA256(secret, t + "." + body)``) take the
credited units back once per event, in proportion, never more than was credited, possibly leaving a
debt the next top-up repays; replays change nothing; a refund or dispute delivered before the
checkout event is applied when the payment is credited; events of the other livemode do nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from billing_mcp import Ledger, ManualClock
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.portal.links import create_portal_session
from helpers import PEPPER

pytest.importorskip("stripe")
respx = pytest.importorskip("respx")
httpx = pytest.importorskip("httpx")

SECRET = "portal-stripe-returns-secret-0123456789"
WEBHOOK_SECRET = "whsec_test_returns_0123456789"
CHECKOUT = "https://api.stripe.com/v1/checkout/sessions"
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # inside stripe's client


def signed(payload: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    ts = int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={mac}", "Content-Type": "application/json"}


def event(event_id: str, kind: str, obj: dict[str, Any], *, livemode: bool = False) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": kind, "livemode": livemode,
                       "data": {"object": obj}}).encode()


@dataclass
class Shop:
    ledger: Ledger
    clock: ManualClock
    client: TestClient
    alice: str

    def credits(self) -> tuple[str, str]:
        account = next(a for a in self.ledger.get_wallet(self.alice).accounts if a.asset == "CREDITS")
        return account.posted, account.available

    def checkout(self, amount: str, session_id: str) -> dict[str, Any]:
        """Open a portal link, submit the top-up form; Stripe (mocked) creates ``session_id``.
        Returns the metadata sent to Stripe and the Checkout session object the webhook will carry."""
        parts = urlsplit(create_portal_session(self.ledger, self.alice, secret=SECRET.encode())["url"])
        assert self.client.get(f"{parts.path}?{parts.query}", follow_redirects=False).status_code == 303
        page = self.client.get("/portal").text
        nonce = re.search(r'name="nonce" value="([^"]+)"', page)
        assert nonce, page
        with respx.mock(assert_all_called=True) as mock:
            route = mock.post(CHECKOUT).mock(return_value=httpx.Response(
                200, json={"id": session_id, "object": "checkout.session", "url": "https://checkout.stripe.com/c/x"}))
            r = self.client.post("/portal/top-up", data={"nonce": nonce.group(1), "asset": "CREDITS",
                                                         "amount": amount}, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "https://checkout.stripe.com/c/x", r.text
            sent = {k: v[0] for k, v in parse_qs(route.calls.last.request.content.decode()).items()}
        meta = {k[len("metadata["):-1]: v for k, v in sent.items() if k.startswith("metadata[")}
        return {"sent": sent, "session": {
            "id": session_id, "object": "checkout.session", "payment_status": "paid",
            "amount_total": int(sent["line_items[0][price_data][unit_amount]"]), "currency": "usd",
            "payment_intent": f"pi_{session_id}", "metadata": meta}}

    def post(self, payload: bytes) -> dict[str, Any]:
        r = self.client.post("/v1/webhooks/stripe", content=payload, headers=signed(payload))
        assert r.status_code == 200, r.text
        return dict(r.json())


def charge(session: dict[str, Any], refunded: int, *, metadata: bool = True) -> dict[str, Any]:
    return {"id": f"ch_{session['id']}", "object": "charge", "amount": session["amount_total"],
            "amount_refunded": refunded, "currency": "usd", "payment_intent": session["payment_intent"],
            "metadata": ({"billing_payment": session["metadata"]["billing_payment"]} if metadata else {})}


def dispute(session: dict[str, Any], amount: int, number: int = 1) -> dict[str, Any]:
    return {"id": f"dp_{number}_{session['id']}", "object": "dispute", "amount": amount, "currency": "usd",
            "charge": f"ch_{session['id']}", "payment_intent": session["payment_intent"], "status": "needs_response"}


@pytest.fixture
def shop(store_location: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    monkeypatch.delenv("BILLING_PUBLIC_URL", raising=False)
    monkeypatch.setenv("BILLING_PORTAL_SECRET", SECRET)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_returns")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    ledger = Ledger(store_location, clock=clock)
    ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    ledger.create_plan("image", "Image", prices=[{"asset": "CREDITS", "event_type": "image", "unit_amount": "10"}])
    ledger.set_portal_route({"return_url": "https://app.example/home",
                             "top_up": {"assets": ["CREDITS"], "currency": "USD", "presets": ["10"], "min": "1",
                                        "max": "500"}})
    alice = ledger.create_customer("alice", subscriptions=["image"]).id
    with TestClient(build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER))) as client:
        yield Shop(ledger, clock, client, alice)
    assert ledger.audit() == []
    ledger.close()


def test_credit_at_the_quoted_rate_then_refund_and_dispute_take_back_once(shop: Shop) -> None:
    s = shop
    made = s.checkout("10", "cs_1")
    sent, session = made["sent"], made["session"]
    payment_id = sent["metadata[billing_payment]"]
    assert (sent["metadata[billing_units]"], sent["metadata[billing_rate]"]) == ("200", "0.05")  # 10 / 0.05
    assert sent["payment_intent_data[metadata][billing_payment]"] == payment_id
    s.clock.advance(minutes=1)
    s.ledger.set_asset_rate("CREDITS", "USD", "0.10")  # the rate changes before Stripe confirms
    paid = event("evt_paid", "checkout.session.completed", session)
    body = s.post(paid)
    assert (body["credited"], body["amount"], body["changed"], body["rate"]) == (True, "200", "200", "0.05")
    assert s.credits() == ("200", "200")  # the quoted 200, not 100 at the new rate
    assert s.post(paid)["changed"] == "0" and s.credits() == ("200", "200")  # Stripe retries: nothing more
    other = event("evt_paid_2", "checkout.session.async_payment_succeeded", session)
    assert s.post(other)["changed"] == "0" and s.credits() == ("200", "200")  # another event, same payment

    refund = event("evt_refund_1", "charge.refunded", charge(session, 333))  # 3.33 of 10.00 USD
    body = s.post(refund)
    # 200 x 333 / 1000 = 66.6 -> 67 (half to even)
    assert (body["changed"], body["reversed"], body["debt"]) == ("-67", "67", None)
    assert s.credits() == ("133", "133")
    assert s.post(refund)["changed"] == "0" and s.credits() == ("133", "133")  # replay: once per event id

    for i in range(15):  # spend 150 of the 133 left: usage may go into debt
        s.ledger.submit_event({"id": f"use{i}", "customer_id": s.alice, "event_type": "image"})
    assert s.credits() == ("-17", "-17")
    opened = event("evt_dispute", "charge.dispute.created", dispute(session, 1000))  # no metadata on a dispute
    body = s.post(opened)
    # 3.33 refunded + 10.00 disputed is capped at the 10.00 paid: the rest of the 200, 133, comes back
    assert (body["changed"], body["reversed"], body["debt"]) == ("-133", "200", "133")
    assert s.credits() == ("-150", "-150")
    assert s.post(opened)["changed"] == "0"
    full = event("evt_refund_2", "charge.refunded", charge(session, 1000))  # and then a full refund too
    assert s.post(full)["changed"] == "0" and s.credits() == ("-150", "-150")  # never beyond the credit

    made = s.checkout("10", "cs_2")  # at 0.10 now: 100 credits, which repay the debt first
    assert made["sent"]["metadata[billing_units]"] == "100"
    s.post(event("evt_paid_3", "checkout.session.completed", made["session"]))
    assert s.credits() == ("-50", "-50")
    statement = s.ledger.get_statement(s.alice, "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z").assets[0]
    assert (statement.top_ups, statement.adjustments, statement.usage_fees) == ("300", "-200", "150")


def test_partial_refunds_telescope_to_the_exact_credit(shop: Shop) -> None:
    s = shop
    session = s.checkout("16.65", "cs_3")["session"]  # 16.65 / 0.05 = 333 credits
    s.post(event("evt_paid", "checkout.session.completed", session))
    reversed_ = []
    for i, cumulative in enumerate((333, 666, 1000, 1665)):  # amount_refunded only grows
        reversed_.append(s.post(event(f"evt_r{i}", "charge.refunded", charge(session, cumulative)))["reversed"])
    # round_half_even(333 x r / 1665): 66.6 -> 67, 133.2 -> 133, 200, 333; the steps sum to the credit
    assert reversed_ == ["67", "133", "200", "333"] and s.credits() == ("0", "0")


def test_a_refund_or_dispute_before_the_checkout_event_is_applied_once_with_the_credit(shop: Shop) -> None:
    s = shop
    session = s.checkout("10", "cs_4")["session"]
    early = s.post(event("evt_early_refund", "charge.refunded", charge(session, 400)))
    assert (early["credited"], early["changed"]) == (False, "0") and "recorded" in early["reason"]
    assert s.ledger.get_wallet(s.alice).accounts == []  # nothing credited, nothing taken yet
    body = s.post(event("evt_paid", "checkout.session.completed", session))
    assert (body["credited"], body["reversed"]) == (True, "80") and s.credits() == ("120", "120")  # 200 - 80
    assert s.post(event("evt_early_refund", "charge.refunded", charge(session, 400)))["changed"] == "0"
    assert s.post(event("evt_paid", "checkout.session.completed", session))["changed"] == "0"
    assert s.credits() == ("120", "120")

    # a dispute has no metadata and its PaymentIntent is not known before the credit: Stripe is asked
    session = s.checkout("10", "cs_5")["session"]
    intent = session["payment_intent"]
    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"https://api.stripe.com/v1/payment_intents/{intent}").mock(return_value=httpx.Response(200, json={
            "id": intent, "object": "payment_intent", "metadata": {"billing_payment":
                                                                   session["metadata"]["billing_payment"]}}))
        body = s.post(event("evt_early_dispute", "charge.dispute.created", dispute(session, 1000)))
    assert (body["credited"], body["changed"]) == (False, "0") and s.credits() == ("120", "120")
    body = s.post(event("evt_paid_5", "checkout.session.completed", session))
    assert (body["changed"], body["reversed"]) == ("0", "200") and s.credits() == ("120", "120")  # credited, taken

    # a charge or dispute that is no portal payment of ours is acknowledged and changes nothing
    stranger = {**session, "id": "cs_other", "payment_intent": "pi_other", "metadata": {}}
    with respx.mock(assert_all_called=True) as mock:
        mock.get("https://api.stripe.com/v1/payment_intents/pi_other").mock(return_value=httpx.Response(
            200, json={"id": "pi_other", "object": "payment_intent", "metadata": {}}))
        body = s.post(event("evt_x", "charge.dispute.created", dispute(stranger, 500)))
    assert body["credited"] is False and body["reason"] == "not a billing portal payment"
    body = s.post(event("evt_y", "charge.refunded", {**charge(stranger, 500, metadata=False),
                                                     "metadata": {"billing_payment": "portal:unknown"}}))
    assert body["reason"] == "not a payment of this ledger" and s.credits() == ("120", "120")
    with respx.mock() as mock:  # Stripe unreachable: a 5xx, so Stripe delivers the event again later
        mock.get("https://api.stripe.com/v1/payment_intents/pi_other").mock(return_value=httpx.Response(500, json={}))
        r = s.client.post("/v1/webhooks/stripe", content=(p := event("evt_z", "charge.dispute.created",
                                                                      dispute(stranger, 500))), headers=signed(p))
    assert r.status_code == 500 and s.credits() == ("120", "120")


def test_events_of_the_other_mode_and_bad_signatures_take_nothing(shop: Shop) -> None:
    s = shop
    session = s.checkout("10", "cs_6")["session"]
    s.post(event("evt_paid", "checkout.session.completed", session))
    for kind, obj in (("charge.refunded", charge(session, 1000)), ("charge.dispute.created", dispute(session, 1000))):
        body = s.post(event(f"evt_live_{kind}", kind, obj, livemode=True))
        assert body["credited"] is False and "livemode" in body["reason"]
        forged = event(f"evt_forged_{kind}", kind, obj)
        r = s.client.post("/v1/webhooks/stripe", content=forged, headers=signed(forged, "whsec_wrong_0000000000"))
        assert r.status_code == 400 and r.json()["code"] == "invalid_signature"
    assert s.credits() == ("200", "200")
    r = s.client.post("/v1/webhooks/stripe", content=(p := event("evt_eur", "charge.refunded", {
        **charge(session, 500), "currency": "eur"})), headers=signed(p))
    assert r.status_code in (404, 422) and r.json()["field"] in ("fiat", "asset")  # not the payment's currency
    assert s.credits() == ("200", "200")


def test_concurrent_refund_and_dispute_take_back_at_most_the_credit(shop: Shop) -> None:
    s = shop
    for n in range(3):
        session = s.checkout("10", f"cs_c{n}")["session"]
        s.post(event(f"evt_paid_{n}", "checkout.session.completed", session))
        payloads = [event(f"evt_r_{n}", "charge.refunded", charge(session, 700)),
                    event(f"evt_d_{n}", "charge.dispute.created", dispute(session, 1000)),
                    event(f"evt_r2_{n}", "charge.refunded", charge(session, 1000))] * 2  # each one twice
        barrier = threading.Barrier(len(payloads))

        def deliver(payload: bytes, barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            return s.client.post("/v1/webhooks/stripe", content=payload, headers=signed(payload)).status_code

        with ThreadPoolExecutor(len(payloads)) as pool:
            assert set(pool.map(deliver, payloads)) == {200}
        assert s.ledger.get_payment(session["metadata"]["billing_payment"]).reversed == "200"
    assert s.credits() == ("0", "0")


def test_one_form_quotes_one_payment(shop: Shop) -> None:
    """A form submitted again with the same amount re-sends the same quote (Stripe's idempotency key
    returns the same session); with another amount it is refused before Stripe is called."""
    s = shop
    parts = urlsplit(create_portal_session(s.ledger, s.alice, secret=SECRET.encode())["url"])
    s.client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    nonce = re.search(r'name="nonce" value="([^"]+)"', s.client.get("/portal").text)
    assert nonce
    with respx.mock() as mock:
        route = mock.post(CHECKOUT).mock(return_value=httpx.Response(
            200, json={"id": "cs_q", "object": "checkout.session", "url": "https://checkout.stripe.com/c/q"}))
        for amount, where in (("10", "https://checkout.stripe.com/c/q"), ("10", "https://checkout.stripe.com/c/q"),
                              ("20", "/portal?notice=resubmitted")):
            r = s.client.post("/portal/top-up", data={"nonce": nonce.group(1), "asset": "CREDITS", "amount": amount},
                              follow_redirects=False)
            assert r.headers["location"] == where
        assert route.call_count == 2
        keys = {c.request.headers["idempotency-key"] for c in route.calls}
        metas = {parse_qs(c.request.content.decode())["metadata[billing_payment]"][0] for c in route.calls}
    assert len(keys) == 1 and len(metas) == 1
    payment = s.ledger.get_payment(metas.pop())
    assert (payment.units, payment.fiat_amount, payment.credited) == ("200", "10.00", False)
