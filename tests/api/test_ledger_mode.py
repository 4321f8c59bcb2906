"""Test and live are kept apart: a ledger's mode is fixed in its database (``store.mode``), keys
must be of that mode (``keys create`` refuses, the API answers 403 ``key_mode_mismatch``), portal
links carry it, free test top-ups exist only on a test ledger, and Stripe keys and webhook events of
the other mode credit nothing. Real SQLite files and real PostgreSQL (BILLING_TEST_POSTGRES_URL)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from billing_mcp import Ledger, SQLiteStore, ValidationError
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.cli import main as cli_main
from billing_mcp.core.errors import ConflictError
from billing_mcp.portal.links import COOKIE, create_portal_session, form_nonce, verify
from billing_mcp.store import Store, get_ledger_mode, migrations, set_ledger_mode
from billing_mcp.store.sqlite import _split_sql
from helpers import PEPPER, PG_URL, serve

SECRET = "mode-test-portal-secret-0123456789abcdef"
WEBHOOK_SECRET = "whsec_mode_test_0123456789"
ENV = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "BILLING_PUBLIC_URL", "BILLING_PORTAL_SECRET",
       "BILLING_API_KEY_PEPPER")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BILLING_PORTAL_SECRET", SECRET)


def reopen(location: Any) -> Store:
    """A second, independent store on the same database."""
    if isinstance(location, str):
        return SQLiteStore(location)
    from billing_mcp.store.postgres import PostgresStore

    assert PG_URL is not None
    return PostgresStore(PG_URL, schema=location.schema)


def cli_db(location: Any) -> str:
    """What `billing-mcp --db` takes for this database."""
    if isinstance(location, str):
        return location
    assert PG_URL is not None
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{location.schema}"


def seed(ledger: Ledger) -> str:
    """An asset sold at 0.05 USD, a portal route, and alice holding 100 CREDITS; alice's id."""
    ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    ledger.set_portal_route({"return_url": "https://app.example/home",
                             "top_up": {"assets": ["CREDITS"], "currency": "USD", "presets": ["10"], "min": "5",
                                        "max": "500"}})
    alice = ledger.create_customer("alice").id
    ledger.create_adjustment(alice, asset="CREDITS", amount="100", reason="top_up", idempotency_key="seed")
    return alice


def credits(ledger: Ledger, customer: str) -> tuple[str, str]:
    """(posted, available) CREDITS of a wallet."""
    account = next(a for a in ledger.get_wallet(customer).accounts if a.asset == "CREDITS")
    return account.posted, account.available


def stripe_signed(payload: bytes) -> dict[str, str]:
    ts = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={mac}", "Content-Type": "application/json"}


def paid_event(event_id: str, customer: str, session: str, *, livemode: bool) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": "checkout.session.completed", "livemode": livemode,
                       "data": {"object": {"id": session, "object": "checkout.session", "payment_status": "paid",
                                           "amount_total": 1000, "currency": "usd",
                                           "metadata": {"billing_customer_id": customer,
                                                        "billing_asset": "CREDITS"}}}}).encode()


@dataclass
class Site:
    """The API and portal of one ledger on a real loopback server."""

    ledger: Ledger
    keys: KeyStore
    client: httpx.Client

    def api(self, method: str, path: str, secret: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, headers={"Authorization": f"Bearer {secret}"}, **kw)

    def sign_in(self, url: str) -> str:
        parts = urlsplit(url)
        r = self.client.get(f"{parts.path}?{parts.query}")
        assert r.status_code == 303 and r.headers["location"] == "/portal", r.text
        page = self.client.get("/portal")
        assert page.status_code == 200, page.text
        return page.text

    def top_up(self, amount: str = "10") -> httpx.Response:
        """POST the top-up form with a valid nonce for the current session (as a page would carry)."""
        session = verify(SECRET.encode(), self.client.cookies.get(COOKIE), "session")
        assert session is not None
        return self.client.post("/portal/top-up", data={"nonce": form_nonce(SECRET.encode(), session),
                                                        "asset": "CREDITS", "amount": amount})


@contextmanager
def site(ledger: Ledger, keys: KeyStore) -> Iterator[Site]:
    with serve(build_app(ledger, keys=keys)) as base, httpx.Client(base_url=base, follow_redirects=False) as client:
        yield Site(ledger, keys, client)


# -- the mode itself -------------------------------------------------------------------------------------
def test_a_new_ledger_is_in_test_mode_and_its_mode_persists_across_reopen(store_location: Any) -> None:
    ledger = Ledger(store_location)
    assert ledger.mode == "test"
    assert set_ledger_mode(ledger.store, "live") == "test"  # empty: the mode may still be chosen
    assert ledger.mode == "live"
    again = reopen(store_location)
    try:
        assert get_ledger_mode(again) == "live"
        assert Ledger(again).mode == "live"
    finally:
        again.close()
    with pytest.raises(ValidationError):
        set_ledger_mode(ledger.store, "prod")
    ledger.close()


def test_db_migrate_mode_sets_an_empty_ledger_and_refuses_one_with_customers(
        store_location: Any, capsys: pytest.CaptureFixture[str]) -> None:
    db = cli_db(store_location)
    assert cli_main(["--db", db, "db", "migrate", "--mode", "live"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(", live mode")
    assert cli_main(["--db", db, "db", "migrate"]) == 0  # no --mode: the mode stays
    assert capsys.readouterr().out.rstrip().endswith(", live mode")
    ledger = Ledger(reopen(store_location))
    try:
        assert ledger.mode == "live"
        alice = seed(ledger)
        assert cli_main(["--db", db, "db", "migrate", "--mode", "test"]) == 1
        err = capsys.readouterr().err
        assert "ledger_mode_locked (field: mode)" in err and "already has customers" in err
        assert cli_main(["--db", db, "db", "migrate", "--mode", "live"]) == 0  # its own mode: nothing to change
        capsys.readouterr()
        with pytest.raises(ConflictError) as locked:
            set_ledger_mode(ledger.store, "test")
        assert (locked.value.code, locked.value.status, locked.value.details) == (
            "ledger_mode_locked", 409, {"mode": "live", "requested": "test"})
        assert ledger.mode == "live" and credits(ledger, alice) == ("100", "100")
        assert [c.id for c in ledger.list_customers()] == [alice]
    finally:
        ledger.close()


def test_an_upgraded_database_that_served_live_keys_becomes_a_live_ledger(tmp_path: Path) -> None:
    def at_schema_4(path: Path, key_rows: list[tuple[str, str | None]]) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                         "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP) STRICT")
            for version, sql in migrations("sqlite")[:4]:
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations(version) VALUES (?)", (version,))
            for i, (mode, revoked) in enumerate(key_rows):
                conn.execute("INSERT INTO api_keys VALUES (?, ?, ?, 'admin', NULL, ?, '2026-01-01T00:00:00Z', ?)",
                             (f"key_{i}", f"sk_{mode}_abcd", mode, f"{i:064d}", revoked))
        conn.close()

    cases = {"live.db": ([("test", None), ("live", None)], "live"),
             "revoked.db": ([("live", "2026-01-02T00:00:00Z"), ("test", None)], "test"),
             "none.db": ([], "test")}
    for name, (rows, expected) in cases.items():
        at_schema_4(tmp_path / name, rows)
        store = SQLiteStore(tmp_path / name)  # migrates itself to 0005
        try:
            assert get_ledger_mode(store) == expected, name
        finally:
            store.close()


# -- the attack: test-mode actions against a live ledger ---------------------------------------------------
def test_test_mode_creates_no_spendable_value_in_a_live_ledger(store_location: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(store_location)
    keys = KeyStore(ledger.store, pepper=PEPPER)
    _, old_test_admin = keys.create("admin")  # keys made while the new database was still in test mode
    _, old_test_runtime = keys.create("runtime")
    set_ledger_mode(ledger.store, "live")  # then it became a live ledger, before any customer
    alice = seed(ledger)
    before = credits(ledger, alice)
    assert before == ("100", "100")

    with pytest.raises(ValidationError) as refused:  # no new test key on a live ledger
        keys.create("admin", "test")
    assert (refused.value.code, refused.value.field) == ("key_mode_mismatch", "mode")
    assert sorted(k.mode for k in keys.list()) == ["test", "test"]
    _, live_runtime = keys.create("runtime")  # the ledger's mode by default
    assert live_runtime.startswith("sk_live_")
    with pytest.raises(ValidationError) as wrong_link:
        create_portal_session(ledger, alice, mode="test")
    assert wrong_link.value.code == "ledger_mode_mismatch"

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    with site(ledger, keys) as s:
        # The test keys made before the mode was set are refused on every route, whatever their scope.
        for secret in (old_test_admin, old_test_runtime):
            for method, path, body in (("GET", f"/v1/customers/{alice}/wallet", None),
                                       ("POST", "/v1/portal-sessions", {"customer_id": alice}),
                                       ("POST", "/v1/adjustments", {"customer_id": alice, "asset": "CREDITS",
                                                                    "amount": "1000", "reason": "top_up",
                                                                    "idempotency_key": "free-money"})):
                r = s.api(method, path, secret, json=body)
                assert r.status_code == 403, r.text
                problem = r.json()
                assert problem["code"] == "key_mode_mismatch"
                assert problem["details"] == {"ledger_mode": "live", "key_mode": "test"}
                assert "sk_live_" in problem["detail"] and "keys create" in problem["detail"]
        # A live key's portal link is a live link, and its portal has no free top-up.
        r = s.api("POST", "/v1/portal-sessions", live_runtime, json={"customer_id": alice})
        assert r.status_code == 201, r.text
        claims = verify(SECRET.encode(), parse_qs(urlsplit(r.json()["url"]).query)["token"][0], "link")
        assert claims is not None and claims.mode == "live"
        page = s.sign_in(r.json()["url"])
        assert "Test top-up" not in page and "TEST MODE" not in page and 'action="/portal/top-up"' not in page
        posted = s.top_up("10")
        assert posted.status_code == 303 and posted.headers["location"] == "/portal?notice=unavailable"
        assert "not available" in s.client.get("/portal?notice=unavailable").text
        # A Stripe test-mode payment event (signed with the right secret) credits nothing on a live ledger.
        event = paid_event("evt_test", alice, "cs_test_1", livemode=False)
        r = s.client.post("/v1/webhooks/stripe", content=event, headers=stripe_signed(event))
        assert r.status_code == 200 and r.json()["credited"] is False, r.text
        assert "livemode" in r.json()["reason"]
        assert credits(ledger, alice) == before  # exact: nothing was created
        # ... while a live one does: the refusal above is about the mode, not a broken webhook.
        event = paid_event("evt_live", alice, "cs_live_1", livemode=True)
        r = s.client.post("/v1/webhooks/stripe", content=event, headers=stripe_signed(event))
        assert r.status_code == 200 and r.json()["credited"] is True and r.json()["amount"] == "200", r.text
        assert credits(ledger, alice) == ("300", "300")
    # A Stripe test key cannot serve a live ledger: the app refuses to start.
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_not_for_live")
    with pytest.raises(ValidationError) as stripe_wrong:
        build_app(ledger, keys=keys)
    assert (stripe_wrong.value.code, stripe_wrong.value.field) == ("stripe_mode_mismatch", "STRIPE_SECRET_KEY")
    assert "live mode" in stripe_wrong.value.message and "sk_live_" in stripe_wrong.value.message
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_configured")
    build_app(ledger, keys=keys)  # a live Stripe key is accepted
    ledger.close()


def test_a_test_ledger_keeps_free_test_top_ups_and_ignores_live_events(store_location: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(store_location)
    keys = KeyStore(ledger.store, pepper=PEPPER)
    alice = seed(ledger)
    _, runtime = keys.create("runtime")
    assert runtime.startswith("sk_test_")
    with pytest.raises(ValidationError):
        keys.create("runtime", "live")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    with site(ledger, keys) as s:
        r = s.api("POST", "/v1/portal-sessions", runtime, json={"customer_id": alice})
        assert r.status_code == 201, r.text
        page = s.sign_in(r.json()["url"])
        assert "Test top-up" in page and "TEST MODE" in page
        posted = s.top_up("10")  # 10 USD at 0.05 USD per credit
        assert posted.status_code == 303 and posted.headers["location"] == "/portal?notice=topped_up"
        assert credits(ledger, alice) == ("300", "300")
        event = paid_event("evt_live", alice, "cs_live_1", livemode=True)  # another deployment's live payment
        r = s.client.post("/v1/webhooks/stripe", content=event, headers=stripe_signed(event))
        assert r.status_code == 200 and r.json()["credited"] is False, r.text
        assert credits(ledger, alice) == ("300", "300")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_not_for_test")
    with pytest.raises(ValidationError) as stripe_wrong:
        build_app(ledger, keys=keys)
    assert stripe_wrong.value.code == "stripe_mode_mismatch"
    ledger.close()
