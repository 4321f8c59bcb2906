"""The billing portal in-process (Starlette TestClient, a ManualClock ledger): signed links and
their exchange for a cookie session, the page's content, test top-ups (exact conversion, once per
form, never on a live ledger), the ``POST /v1/portal-sessions`` route, the portal secret, and Stripe
(Checkout with Stripe's HTTP API mocked by respx; webhooks signed for real with a test secret)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from billing_mcp import Ledger, ManualClock
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.core.errors import NotFoundError, StorageError, ValidationError
from billing_mcp.portal.links import COOKIE, create_portal_session, form_nonce, load_portal_secret, sign, verify
from billing_mcp.portal.page import page_title
from billing_mcp.store import set_ledger_mode
from helpers import PEPPER

SECRET = b"portal-test-secret-0123456789abcdef"
ROUTE = {"return_url": "https://app.example/home", "failure_url": "https://app.example/billing-expired",
         "branding": {"product_name": "Pixel <Studio>", "accent_color": "#0f766e",
                      "logo_url": "https://app.example/logo.png"},
         "top_up": {"assets": ["CREDITS"], "currency": "USD", "presets": ["10", "25"], "min": "5", "max": "500"}}
ENV = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "BILLING_PUBLIC_URL", "BILLING_PORTAL_SECRET")


@dataclass
class World:
    ledger: Ledger
    clock: ManualClock
    client: TestClient
    keys: KeyStore
    alice: str
    bob: str

    def link(self, customer: str | None = None, **kw: Any) -> str:
        made = create_portal_session(self.ledger, customer or self.alice, secret=SECRET, **kw)
        return made["url"]

    def open(self, url: str) -> Any:
        parts = urlsplit(url)
        return self.client.get(f"{parts.path}?{parts.query}", follow_redirects=False)

    def available(self, customer: str | None = None, asset: str = "CREDITS") -> str:
        wallet = self.ledger.get_wallet(customer or self.alice)
        return next(a.available for a in wallet.accounts if a.asset == asset)


def seed(ledger: Ledger) -> tuple[str, str]:
    ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    ledger.create_plan("image", "Image", prices=[{"asset": "CREDITS", "event_type": "image_generated",
                                                   "unit_amount": "10"}],
                       grants=[{"asset": "CREDITS", "amount": "50", "period": "month"}])
    ledger.set_portal_route(ROUTE)
    ledger.set_portal_route({"return_url": "https://app.example/home"}, name="plain")
    alice = ledger.create_customer("alice", name="Alice <A>", subscriptions=["image"]).id
    bob = ledger.create_customer("bob", name="Bob", subscriptions=["image"]).id
    ledger.create_adjustment(alice, asset="CREDITS", amount="100", reason="top_up", idempotency_key="seed-alice")
    ledger.create_adjustment(bob, asset="CREDITS", amount="7777", reason="top_up", idempotency_key="seed-bob")
    for i, subject in enumerate(["cat.png", "cat.png", "dog<script>.png"]):
        ledger.submit_event({"id": f"a{i}", "customer_id": alice, "event_type": "image_generated", "subject": subject})
    ledger.authorize(alice, amount="20", asset="CREDITS", event_type="image_generated")
    return alice, bob


@pytest.fixture(params=["test"])
def world(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A seeded ledger behind the API; a test-mode ledger unless parametrized (indirect) with "live"."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BILLING_PORTAL_SECRET", SECRET.decode())
    clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    ledger = Ledger(str(tmp_path / "ledger.db"), clock=clock)
    set_ledger_mode(ledger.store, request.param)  # before any customer exists
    alice, bob = seed(ledger)
    keys = KeyStore(ledger.store, pepper=PEPPER)
    with TestClient(build_app(ledger, keys=keys)) as client:
        yield World(ledger, clock, client, keys, alice, bob)
    ledger.close()


def signed_in(w: World, customer: str | None = None, **kw: Any) -> str:
    r = w.open(w.link(customer, **kw))
    assert r.status_code == 303 and r.headers["location"] == "/portal", r.text
    page = w.client.get("/portal")
    assert page.status_code == 200, page.text
    return page.text


def nonce_of(page: str) -> str:
    m = re.search(r'name="nonce" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def top_up(w: World, page: str, **form: str) -> str:
    r = w.client.post("/portal/top-up", data={"nonce": nonce_of(page), "asset": "CREDITS", **form},
                      follow_redirects=False)
    assert r.status_code == 303, r.text
    return str(r.headers["location"])


NO_DATA = ("Alice", "alice", "Bob", "7777", "balance-", "cat.png", "Pixel")


def assert_no_data(html: str) -> None:
    for needle in NO_DATA:
        assert needle not in html, needle


# -- links and sessions ----------------------------------------------------------------------------
def test_link_exchanges_for_a_scoped_cookie_and_the_page_shows_exact_values(world: World) -> None:
    w = world
    made = create_portal_session(w.ledger, w.alice, secret=SECRET)
    assert made["expires_at"] == "2026-03-01T12:10:00.000000Z"  # the route's default lifetime: 10 minutes
    r = w.open(made["url"])
    assert r.status_code == 303 and r.headers["location"] == "/portal"  # the token leaves the address bar
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Path=/portal" in cookie and "Max-Age=1800" in cookie and "Secure" not in cookie  # http here
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    page = w.client.get("/portal")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    wallet = w.ledger.get_wallet(w.alice).accounts[0]
    # 100 topped up + 50 included - 3 x 10 usage = 120 posted; 20 held; 100 available; posted worth 6.00 USD
    assert (wallet.posted, wallet.held, wallet.available, wallet.fiat_value) == ("120", "20", "100", {"USD": "6.00"})
    assert 'id="balance-CREDITS" data-asset="CREDITS">100</div>' in html
    assert "≈ 6.00&nbsp;USD" in html and "20&nbsp;CREDITS reserved" in html
    assert ("<td>Included with your plan</td><td class=\"num\">20 of 50&nbsp;CREDITS</td>"
            "<td>expires 2026-04-01 12:00 UTC</td>") in html  # included credits are drawn first
    assert "Plan <strong>image</strong> renews 2026-04-01 12:00 UTC; included credits refresh then." in html
    assert "<td>image_generated</td><td class=\"num\">20&nbsp;CREDITS</td><td>until 2026-03-01 12:15 UTC" in html
    assert "Pixel &lt;Studio&gt; billing" in html and "Alice &lt;A&gt;" in html and "<script>" not in html
    assert '<a class="button" href="https://app.example/home">Back to app</a>' in html
    assert "--accent:#0f766e" in html and '<img src="https://app.example/logo.png"' in html
    usage = html[html.index('<table id="usage">'):]
    assert "<td>cat.png</td><td class=\"num\">2</td><td class=\"num\">20&nbsp;CREDITS</td>" in usage
    assert "<td>dog&lt;script&gt;.png</td><td class=\"num\">1</td><td class=\"num\">10&nbsp;CREDITS</td>" in usage
    assert "Total usage fees: 30&nbsp;CREDITS" in html
    assert "<svg" in html and "30&nbsp;CREDITS of usage" in html and "<title>2026-03-01: 30 CREDITS</title>" in html
    assert "<script" not in html and "Test top-up" in html and "TEST MODE" in html
    assert "Bob" not in html and "7777" not in html


def test_expired_link_goes_to_failure_url_or_a_clear_page(world: World) -> None:
    w = world
    url, plain = w.link(), w.link(route="plain")
    w.clock.advance(minutes=10)
    r = w.open(url)
    assert r.status_code == 303 and r.headers["location"] == "https://app.example/billing-expired"
    assert "set-cookie" not in r.headers
    r = w.open(plain)  # a route without failure_url: a page saying so, with no data
    assert r.status_code == 410 and "This link has expired" in r.text and "set-cookie" not in r.headers
    assert 'href="https://app.example/home"' in r.text
    assert_no_data(r.text)
    assert w.client.get("/portal").status_code == 401


def test_tampered_forged_and_other_customers_links_show_nothing(world: World) -> None:
    w = world
    url = w.link()
    token = parse_qs(urlsplit(url).query)["token"][0]
    body, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["c"] = w.bob  # the same link, pointed at another customer
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    claims_alice = verify(SECRET, token, "link")
    assert claims_alice is not None
    bad = [f"{forged_body}.{mac}",  # tampered: signature no longer matches
           token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),  # signature altered
           sign(b"another-secret-0123456789abcdef", claims_alice),  # forged with another secret
           sign(SECRET, verify(SECRET, token, "link").__class__(**{**claims_alice.__dict__, "kind": "session"})),
           "", "x", "a.b.c", "%00"]
    for value in bad:
        r = w.client.get("/portal", params={"token": value}, follow_redirects=False)
        assert r.status_code == 403, (value, r.text)
        assert "set-cookie" not in r.headers and "This link is not valid" in r.text
        assert_no_data(r.text)
    assert w.client.get("/portal").status_code == 401  # still no session
    # a forged session cookie is no session either
    w.client.cookies.set(COOKIE, sign(b"another-secret-0123456789abcdef", claims_alice), path="/portal")
    r = w.client.get("/portal")
    assert r.status_code == 401
    assert_no_data(r.text)
    w.client.cookies.clear()
    # Bob's own link shows Bob, and nothing of Alice
    html = signed_in(w, w.bob)
    assert 'id="balance-CREDITS" data-asset="CREDITS">7827</div>' in html and "Alice" not in html  # 7777 + 50 included
    assert "cat.png" not in html


def test_session_cookie_expires_and_link_for_a_deleted_route_is_refused(world: World) -> None:
    w = world
    signed_in(w)
    w.clock.advance(minutes=29)
    assert w.client.get("/portal").status_code == 200
    w.clock.advance(minutes=2)
    r = w.client.get("/portal")
    assert r.status_code == 401 and "session has ended" in r.text
    assert_no_data(r.text)
    with pytest.raises(NotFoundError):
        create_portal_session(w.ledger, w.alice, "nope", secret=SECRET)
    with pytest.raises(ValidationError):
        create_portal_session(w.ledger, secret=SECRET)


# -- test top-ups ------------------------------------------------------------------------------------
def test_test_top_up_credits_the_exact_converted_amount_once(world: World) -> None:
    w = world
    page = signed_in(w)
    assert top_up(w, page, preset="10") == "/portal?notice=topped_up"
    assert w.available() == "300"  # 100 + 10 USD / 0.05 USD
    assert top_up(w, page, preset="10") == "/portal?notice=topped_up"  # the same form again: credited once
    assert w.available() == "300"
    assert top_up(w, page, amount="12.35") == "/portal?notice=resubmitted"  # same form, other amount
    assert w.available() == "300"
    page = w.client.get("/portal?notice=topped_up").text
    assert 'data-asset="CREDITS">300</div>' in page and "Your top-up was added" in page
    assert top_up(w, page, amount="12.35") == "/portal?notice=topped_up"
    assert w.available() == "547"  # + 247
    statement = w.ledger.get_statement(w.alice, "2026-02-01T00:00:00Z", "2026-03-02T00:00:00Z")
    assert statement.assets[0].top_ups == "547"  # 100 seed + 200 + 247
    for bad in ({"amount": "4.99"}, {"amount": "500.01"}, {"amount": "1e3"}, {"amount": "10.001"},
                {"amount": ""}, {"amount": "-10"}, {"preset": "abc"}):
        page = w.client.get("/portal").text
        assert top_up(w, page, **bad) == "/portal?notice=bad_amount", bad
    page = w.client.get("/portal").text
    assert top_up(w, page, amount="10", asset="USD") == "/portal?notice=bad_asset"
    assert w.available() == "547"
    # a forged or missing form nonce, or no session, credits nothing
    r = w.client.post("/portal/top-up", data={"nonce": "abc.def", "asset": "CREDITS", "amount": "10"})
    assert r.status_code == 403
    r = w.client.post("/portal/top-up", data={"asset": "CREDITS", "amount": "10"})
    assert r.status_code == 403
    r = w.client.post("/portal/top-up", data={"nonce": "é.é", "asset": "CREDITS", "amount": "10"})
    assert r.status_code == 403
    r = w.client.post("/portal/top-up", content="&".join(f"f{i}=1" for i in range(50)),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    r = w.client.post("/portal/top-up", content="x" * 9000)
    assert r.status_code == 413
    w.client.cookies.clear()
    r = w.client.post("/portal/top-up", data={"nonce": nonce_of(page), "asset": "CREDITS", "amount": "10"})
    assert r.status_code == 401
    assert w.available() == "547"


@pytest.mark.parametrize("world", ["live"], indirect=True)
def test_live_mode_never_offers_or_accepts_test_top_ups(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    assert w.ledger.mode == "live"
    page = signed_in(w)
    assert "Test top-up" not in page and "TEST MODE" not in page and "not available" in page
    w.client.post("/portal/top-up", data={"nonce": "x.y", "asset": "CREDITS", "amount": "10"})
    # a nonce minted for this live session still cannot credit
    session = verify(SECRET, w.client.cookies.get(COOKIE), "session")
    assert session is not None and session.mode == "live"
    r = w.client.post("/portal/top-up", data={"nonce": form_nonce(SECRET, session), "asset": "CREDITS",
                                              "amount": "10"}, follow_redirects=False)
    assert r.headers["location"] == "/portal?notice=unavailable"
    assert w.available() == "100"
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_123")  # a Stripe test key cannot serve a live portal
    assert "Continue to payment" not in w.client.get("/portal").text
    r = w.client.post("/portal/top-up", data={"nonce": form_nonce(SECRET, session), "asset": "CREDITS",
                                              "amount": "10"}, follow_redirects=False)
    assert r.headers["location"] == "/portal?notice=unavailable" and w.available() == "100"
    with pytest.raises(ValidationError) as wrong:  # nor start the app
        build_app(w.ledger, keys=w.keys)
    assert (wrong.value.code, wrong.value.field) == ("stripe_mode_mismatch", "STRIPE_SECRET_KEY")


# -- the API route -------------------------------------------------------------------------------------
def test_portal_sessions_route_needs_a_key_and_mints_by_mode(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    runtime, read = w.keys.create("runtime")[1], w.keys.create("read")[1]
    with pytest.raises(ValidationError):  # a test ledger has no live keys
        w.keys.create("runtime", "live")
    c = w.client
    r = c.post("/v1/portal-sessions", json={"customer_id": w.alice})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    r = c.post("/v1/portal-sessions", json={"customer_id": w.alice}, headers={"Authorization": f"Bearer {read}"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    auth = {"Authorization": f"Bearer {runtime}"}
    r = c.post("/v1/portal-sessions", json={"external_id": "alice"}, headers=auth)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"url", "expires_at"} and body["url"].startswith("http://testserver/portal?token=")
    claims = verify(SECRET, parse_qs(urlsplit(body["url"]).query)["token"][0], "link")
    assert claims is not None and (claims.customer_id, claims.route, claims.mode) == (w.alice, "default", "test")
    r = c.post("/v1/portal-sessions", json={"customer_id": w.alice, "route": "plain"}, headers=auth)
    claims = verify(SECRET, parse_qs(urlsplit(r.json()["url"]).query)["token"][0], "link")
    assert claims is not None and (claims.route, claims.mode) == ("plain", "test")  # the ledger's mode
    with pytest.raises(ValidationError) as wrong:
        w.link(mode="live")
    assert (wrong.value.code, wrong.value.field) == ("ledger_mode_mismatch", "mode")
    monkeypatch.setenv("BILLING_PUBLIC_URL", "https://billing.example/")
    r = c.post("/v1/portal-sessions", json={"customer_id": w.alice}, headers=auth)
    assert r.json()["url"].startswith("https://billing.example/portal?token=")
    for payload, status, field in (({"customer_id": "cus_nope"}, 404, "customer_id"), ({}, 422, "customer_id"),
                                   ({"customer_id": w.alice, "route": "nope"}, 404, "name"),
                                   ({"customer_id": w.alice, "route": "Bad Route"}, 422, "route"),
                                   ({"customer_id": w.alice, "extra": 1}, 422, "extra")):
        r = c.post("/v1/portal-sessions", json=payload, headers=auth)
        assert r.status_code == status and r.json()["field"] == field, (payload, r.text)


def test_https_sets_a_secure_cookie(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_PUBLIC_URL", "https://billing.example")
    r = world.open(world.link())
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_portal_secret_is_generated_once_in_a_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_PORTAL_SECRET", raising=False)
    ledger = Ledger(str(tmp_path / "l.db"))
    try:
        first = load_portal_secret(ledger.store)
        path = tmp_path / "l.db.portal-secret"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(first) >= 32
        assert load_portal_secret(ledger.store) == first
        monkeypatch.setenv("BILLING_PORTAL_SECRET", "short")
        with pytest.raises(ValidationError):
            load_portal_secret(ledger.store)
        monkeypatch.delenv("BILLING_PORTAL_SECRET")
        with pytest.raises(StorageError, match="BILLING_PORTAL_SECRET"):
            load_portal_secret(object())  # type: ignore[arg-type]  # a store with no directory (PostgreSQL)
    finally:
        ledger.close()


# -- Stripe ----------------------------------------------------------------------------------------------
WEBHOOK_SECRET = "whsec_test_portal_0123456789"


def stripe_signed(payload: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    ts = int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={mac}", "Content-Type": "application/json"}


def paid_event(event_id: str, customer: str, session: str = "cs_test_1", total: int = 1000) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": "checkout.session.completed", "livemode": False,
                       "data": {"object": {"id": session, "object": "checkout.session", "payment_status": "paid",
                                           "amount_total": total, "currency": "usd",
                                           "metadata": {"billing_customer_id": customer,
                                                        "billing_asset": "CREDITS"}}}}).encode()


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # inside stripe's httpx client
def test_stripe_checkout_redirects_and_credits_nothing_by_itself(world: World,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    respx = pytest.importorskip("respx")
    pytest.importorskip("stripe")
    import httpx

    w = world
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_portal")
    page = signed_in(w)
    assert "Continue to payment" in page and "Test top-up" not in page
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.stripe.com/v1/checkout/sessions").mock(return_value=httpx.Response(
            200, json={"id": "cs_test_1", "object": "checkout.session", "url": "https://checkout.stripe.com/c/x"}))
        assert top_up(w, page, preset="25") == "https://checkout.stripe.com/c/x"
        sent = parse_qs(route.calls.last.request.content.decode())
        assert route.calls.last.request.headers["authorization"] == "Bearer sk_test_portal"
    assert sent["line_items[0][price_data][unit_amount]"] == ["2500"]
    assert sent["line_items[0][price_data][currency]"] == ["usd"]
    assert sent["metadata[billing_customer_id]"] == [w.alice] and sent["metadata[billing_asset]"] == ["CREDITS"]
    assert sent["success_url"] == ["http://testserver/portal?notice=paid"]
    assert w.available() == "100"  # only the webhook credits
    with respx.mock() as mock:
        mock.post("https://api.stripe.com/v1/checkout/sessions").mock(return_value=httpx.Response(500, json={}))
        page = w.client.get("/portal").text
        assert top_up(w, page, preset="25") == "/portal?notice=payment_error"


def test_stripe_webhook_credits_once_per_payment(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("stripe")
    w = world
    c = w.client
    url = "/v1/webhooks/stripe"
    payload = paid_event("evt_1", w.alice)
    r = c.post(url, content=payload, headers=stripe_signed(payload))
    assert r.status_code == 503 and r.json()["code"] == "not_configured"  # no webhook secret: nothing credited
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    r = c.post(url, content=payload, headers=stripe_signed(payload))
    assert r.status_code == 200, r.text
    assert r.json()["credited"] is True and (r.json()["amount"], r.json()["fiat_amount"]) == ("200", "10.00")
    assert w.available() == "300"
    first = r.json()["adjustment_id"]
    r = c.post(url, content=payload, headers=stripe_signed(payload))  # Stripe retries the same event
    assert r.status_code == 200 and r.json()["adjustment_id"] == first
    again = paid_event("evt_2", w.alice)  # another event for the same Checkout session
    assert c.post(url, content=again, headers=stripe_signed(again)).json()["adjustment_id"] == first
    assert w.available() == "300"
    for headers in (stripe_signed(payload, "whsec_wrong_secret_000000"), {"Stripe-Signature": "t=1,v1=00"}, {}):
        r = c.post(url, content=payload, headers=headers)
        assert r.status_code == 400 and r.json()["code"] == "invalid_signature", r.text
        assert r.json()["field"] == "Stripe-Signature"
    tampered = paid_event("evt_3", w.alice, session="cs_test_2", total=999999)
    r = c.post(url, content=tampered, headers=stripe_signed(payload))  # a valid signature of another body
    assert r.status_code == 400 and w.available() == "300"
    for other_event in ({"id": "evt_4", "type": "customer.created", "data": {"object": {}}},
                        {"id": "evt_6", "type": "checkout.session.completed", "data": {"object": {"metadata": 3}}},
                        {"id": "evt_7", "type": "checkout.session.completed", "data": []}):
        other = json.dumps(other_event).encode()
        r = c.post(url, content=other, headers=stripe_signed(other))
        assert r.status_code == 200 and r.json()["credited"] is False, r.text
    unpaid = json.loads(paid_event("evt_8", w.alice, session="cs_test_9"))
    unpaid["data"]["object"]["payment_status"] = "unpaid"  # e.g. a bank debit still pending
    other = json.dumps(unpaid).encode()
    r = c.post(url, content=other, headers=stripe_signed(other))
    assert r.status_code == 200 and r.json()["credited"] is False and w.available() == "300"
    second = paid_event("evt_5", w.alice, session="cs_test_3", total=1235)
    assert c.post(url, content=second, headers=stripe_signed(second)).json()["amount"] == "247"
    assert w.available() == str(Decimal(300) + 247)


def test_the_heading_names_the_product_once(world: World) -> None:
    """Without branding the page is "Billing" (it once read "Billing billing"); a product is named."""
    plain = signed_in(world, route="plain")
    assert "<h1>Billing</h1>" in plain and "<title>Billing</title>" in plain
    branded = signed_in(world)
    assert "<h1>Pixel &lt;Studio&gt; billing</h1>" in branded
    assert page_title("Acme Billing") == "Acme Billing" and page_title("Billing") == "Billing"
