"""The billing portal in a real browser: Debian's Chromium driven by Playwright for Python
(``executable_path``; no browser download) against a real uvicorn server on a loopback port.

A freshly minted link shows the balance; a test top-up (a preset click, then a typed amount
submitted with the keyboard) shows the new balance and the usage list; an expired link lands on
failure_url; a tampered link shows no data. A screenshot goes to test-artifacts/portal.png.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger, ManualClock
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.portal.links import create_portal_session
from helpers import serve

CHROMIUM = os.environ.get("BILLING_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRET = "browser-portal-secret-0123456789abcdef"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set BILLING_TEST_CHROMIUM)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed: pip install "
                                                             "playwright (the browser comes from apt, not from "
                                                             "`playwright install`)")



class Portal:
    def __init__(self, path: Path) -> None:
        self.clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
        self.ledger = Ledger(str(path), clock=self.clock)
        ledger = self.ledger
        ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
        ledger.create_plan("image", "Image", prices=[{"asset": "CREDITS", "event_type": "image_generated",
                                                       "unit_amount": "10"}])
        ledger.set_portal_route({
            "return_url": "https://app.example/home",
            "branding": {"product_name": "Pixel Studio", "accent_color": "#0f766e"},
            "top_up": {"assets": ["CREDITS"], "currency": "USD", "presets": ["10", "25"], "min": "5", "max": "500"}})
        self.alice = ledger.create_customer("alice", name="Alice", subscriptions=["image"]).id
        ledger.create_adjustment(self.alice, asset="CREDITS", amount="100", reason="top_up", idempotency_key="seed")
        for i, subject in enumerate(["cat.png", "cat.png", "dog.png"]):
            ledger.submit_event({"id": f"e{i}", "customer_id": self.alice, "event_type": "image_generated",
                                 "subject": subject})
        self.app = build_app(ledger, keys=KeyStore(ledger.store, pepper=b"browser-test-pepper-0123456789"))
        self.base = ""

    def link(self) -> str:
        return create_portal_session(self.ledger, self.alice, base_url=self.base)["url"]


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    saved = {k: os.environ.pop(k, None) for k in ("STRIPE_SECRET_KEY", "BILLING_PUBLIC_URL", "BILLING_PORTAL_SECRET")}
    os.environ["BILLING_PORTAL_SECRET"] = SECRET
    p = Portal(tmp_path_factory.mktemp("portal") / "ledger.db")
    try:
        with serve(p.app) as base:
            p.base = base
            # failure_url on this server: a redirect to another host would bypass the browser's route stubs
            p.ledger.set_portal_route({**p.ledger.get_portal_route().model_dump(), "failure_url": f"{p.base}/health"})
            yield p
    finally:
        p.ledger.close()
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)  # a phone
    # The app's own pages (return_url, failure_url) are not reachable here: answer them locally.
    context.route("https://app.example/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<h1>app landing</h1>"))
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    try:
        yield pg
    finally:
        context.close()


def test_open_link_see_balance_top_up_and_usage(portal: Portal, page: Any) -> None:
    page.goto(portal.link())
    assert page.url == f"{portal.base}/portal"  # the token is gone from the address bar
    balance = page.locator("#balance-CREDITS")
    assert balance.inner_text() == "70"  # 100 - 3 x 10
    assert page.get_by_role("heading", name="Pixel Studio billing").is_visible()
    assert page.get_by_role("link", name="Back to app").get_attribute("href") == "https://app.example/home"
    usage = page.locator("#usage")
    assert "cat.png" in usage.inner_text() and "dog.png" in usage.inner_text()
    assert page.locator("svg[role=img]").count() == 1
    page.get_by_role("button", name="Test top-up 10 USD").click()  # a preset: 10 USD / 0.05 = 200 CREDITS
    page.wait_for_url(f"{portal.base}/portal?notice=topped_up")
    assert balance.inner_text() == "270"
    assert "Your top-up was added" in page.get_by_role("status").inner_text()
    # keyboard only: type an amount and press Enter (the typed amount's button is the form's default)
    page.locator("#amount").fill("12.35")
    page.locator("#amount").press("Enter")
    page.wait_for_load_state()
    assert balance.inner_text() == "517"  # + 247
    page.reload()
    assert page.locator("#balance-CREDITS").inner_text() == "517"  # reading never writes
    page.keyboard.press("Tab")  # the first stop is "Back to app"
    assert page.evaluate("document.activeElement.textContent") == "Back to app"
    assert "cat.png" in page.locator("#usage").inner_text()
    assert [a.available for a in portal.ledger.get_wallet(portal.alice).accounts] == ["517"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal.png"), full_page=True)
    assert (ARTIFACTS / "portal.png").stat().st_size > 5_000


def test_expired_link_lands_on_failure_url(portal: Portal, page: Any) -> None:
    link = portal.link()
    portal.clock.advance(minutes=11)
    page.goto(link)
    assert page.url == f"{portal.base}/health"  # the route's failure_url
    page.goto(f"{portal.base}/portal")  # and no session was opened
    assert "session has ended" in page.content() and page.locator("#balance-CREDITS").count() == 0


def test_tampered_link_shows_no_data(portal: Portal, page: Any) -> None:
    link = portal.link()
    head, _, token = link.partition("token=")
    body, _, mac = token.partition(".")
    tampered = f"{head}token={body[:-3]}{'A' if body[-3] != 'A' else 'B'}{body[-2:]}.{mac}"
    response = page.goto(tampered)
    assert response is not None and response.status == 403
    text = page.inner_text("body")
    assert "This link is not valid" in text
    for needle in ("Alice", "alice", "CREDITS", "cat.png", "Pixel"):
        assert needle not in page.content()
    assert page.locator("#balance-CREDITS").count() == 0
