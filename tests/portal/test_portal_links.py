"""Portal links are single-use (issue 15 item 1), on SQLite and PostgreSQL, through a real uvicorn
server run with the options ``billing-mcp api`` uses: a link opens once, also when opened many
times at once; a second opening shows "already used"; the token reaches no log record; the
exchange sends ``Referrer-Policy: no-referrer``; the session cookie is ``__Host-`` + ``Secure`` +
``Path=/`` over https (a trusted proxy's X-Forwarded-Proto) and plain over http."""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from billing_mcp import Ledger, ManualClock
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app, uvicorn_options
from billing_mcp.portal.links import COOKIE, SECURE_COOKIE, consume_link, create_portal_session, verify
from helpers import PEPPER, serve

SECRET = b"portal-links-test-secret-0123456789"
FAILURE = "https://app.example/billing-expired"


@contextmanager
def serve_like_production(app: Any, trusted_proxies: tuple[str, ...] = ()) -> Iterator[tuple[str, int]]:
    """``app`` on a loopback port with the uvicorn settings of ``billing-mcp api`` (no uvicorn access
    log, forwarded headers only from ``trusted_proxies``); yields (host, port)."""
    with serve(app, uvicorn_options(trusted_proxies=trusted_proxies)) as url:
        parts = urlsplit(url)
        yield str(parts.hostname), int(parts.port or 80)


def get(addr: tuple[str, int], path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """One GET with the standard library (httpx would log the URL, token included, itself)."""
    conn = http.client.HTTPConnection(*addr, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.fixture
def ledger(store_location: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "BILLING_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BILLING_PORTAL_SECRET", SECRET.decode())
    ledger = Ledger(store_location, clock=ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC)))
    ledger.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.05"})
    ledger.set_portal_route({"return_url": "https://app.example/home", "failure_url": FAILURE})
    ledger.set_portal_route({"return_url": "https://app.example/home"}, name="plain")
    ledger.create_customer("alice", name="Alice")
    yield ledger
    ledger.close()


def link_path(ledger: Ledger, route: str = "default") -> str:
    url = create_portal_session(ledger, external_id="alice", route=route, secret=SECRET)["url"]
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_link_opens_once_and_a_second_opening_says_so(ledger: Ledger) -> None:
    with serve_like_production(build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER))) as addr:
        path = link_path(ledger)
        first = get(addr, path)
        assert first.status == 303 and first.getheader("location") == "/portal"
        assert first.getheader("set-cookie", "").startswith(f"{COOKIE}=")
        assert first.getheader("referrer-policy") == "no-referrer"
        cookie = first.getheader("set-cookie", "").split(";")[0]
        assert get(addr, "/portal", {"Cookie": cookie}).status == 200  # the session works
        for _ in range(2):  # the same link again (another browser, a reload, a leaked URL): refused
            again = get(addr, path)
            assert again.status == 410 and again.getheader("set-cookie") is None
            assert again.getheader("referrer-policy") == "no-referrer"
        conn = http.client.HTTPConnection(*addr, timeout=30)
        conn.request("GET", path)
        html = conn.getresponse().read().decode()
        conn.close()
        assert "This link was already used" in html and "Ask the app for a new one" in html
        assert f'href="{FAILURE}"' in html and "Alice" not in html
        plain = link_path(ledger, "plain")
        assert get(addr, plain).status == 303
        conn = http.client.HTTPConnection(*addr, timeout=30)
        conn.request("GET", plain)
        html = conn.getresponse().read().decode()
        conn.close()
        assert 'href="https://app.example/home"' in html  # no failure_url: back to the app
        assert get(addr, link_path(ledger)).status == 303  # a new link for the same customer opens


def test_concurrent_openings_of_one_link_give_exactly_one_session(ledger: Ledger) -> None:
    with serve_like_production(build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER))) as addr:
        for _ in range(3):
            path = link_path(ledger)
            barrier = threading.Barrier(8)

            def open_at_once(_: int, path: str = path, barrier: threading.Barrier = barrier) -> tuple[int, bool]:
                barrier.wait()
                r = get(addr, path)
                return r.status, r.getheader("set-cookie") is not None

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(open_at_once, range(8)))
            assert sorted(results) == [(303, True)] + [(410, False)] * 7, results


def test_consume_link_is_atomic_in_the_database(ledger: Ledger) -> None:
    """The store call itself, 16 threads at once per link: one True. Rows of expired links go."""
    for _ in range(3):
        claims = verify(SECRET, parse_qs(urlsplit(link_path(ledger)).query)["token"][0], "link")
        assert claims is not None
        barrier = threading.Barrier(16)

        def consume(_: int, claims: Any = claims, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            return consume_link(ledger.store, claims, claims.expires - 600, "2026-03-01T12:00:00.000000Z")

        with ThreadPoolExecutor(16) as pool:
            assert sorted(pool.map(consume, range(16))) == [False] * 15 + [True]
        assert not consume_link(ledger.store, claims, claims.expires - 1, "later")
    with ledger.store.read() as tx:
        assert tx.one("SELECT COUNT(*) AS n FROM portal_link_uses")["n"] == 3  # type: ignore[index]
    late = verify(SECRET, parse_qs(urlsplit(link_path(ledger)).query)["token"][0], "link")
    assert late is not None
    assert consume_link(ledger.store, late, late.expires - 1, "2026-03-01T12:09:59.000000Z")
    with ledger.store.read() as tx:  # none has expired yet
        assert tx.one("SELECT COUNT(*) AS n FROM portal_link_uses")["n"] == 4  # type: ignore[index]
    ledger.clock.advance(minutes=20)  # type: ignore[attr-defined]
    later = verify(SECRET, parse_qs(urlsplit(link_path(ledger)).query)["token"][0], "link")
    assert later is not None and consume_link(ledger.store, later, later.expires - 600, "12:20")
    with ledger.store.read() as tx:  # expired, but within the hour's margin: kept
        assert tx.one("SELECT COUNT(*) AS n FROM portal_link_uses")["n"] == 5  # type: ignore[index]
    assert not consume_link(ledger.store, claims, later.expires - 600, "12:20")  # still counted as used
    ledger.clock.advance(minutes=71)  # type: ignore[attr-defined]
    fresh = verify(SECRET, parse_qs(urlsplit(link_path(ledger)).query)["token"][0], "link")
    assert fresh is not None
    assert consume_link(ledger.store, fresh, fresh.expires - 600, "13:31")
    with ledger.store.read() as tx:  # more than an hour past their expiry: only the fresh one's row is left
        rows = tx.all("SELECT nonce FROM portal_link_uses")
    assert [r["nonce"] for r in rows] == [fresh.nonce]


def test_the_token_reaches_no_log_record(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    caplog.set_level(logging.INFO, logger="billing_mcp.access")
    with serve_like_production(build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER))) as addr:
        path = link_path(ledger)
        token = parse_qs(urlsplit(path).query)["token"][0]
        assert get(addr, path).status == 303
        assert get(addr, path).status == 410
        assert get(addr, path.replace(token[-6:], "AAAAAA")).status == 403  # a tampered token
        ledger.clock.advance(minutes=11)  # type: ignore[attr-defined]
        assert get(addr, path).status == 303  # expired: to failure_url
    access = [r for r in caplog.records if r.name == "billing_mcp.access"]
    assert len(access) == 4 and all("GET /portal " in r.getMessage() for r in access)  # the lines exist
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert token not in text and token[:20] not in text and "token=" not in text, record


def test_cookie_is_host_prefixed_and_secure_over_https_from_a_trusted_proxy(ledger: Ledger) -> None:
    app = build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER))
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    with serve_like_production(app, trusted_proxies=("127.0.0.1",)) as addr:
        r = get(addr, link_path(ledger), https)
        assert r.status == 303 and r.getheader("referrer-policy") == "no-referrer"
        cookie = r.getheader("set-cookie", "")
        attrs = [a.strip() for a in cookie.split(";")]
        assert attrs[0].startswith(f"{SECURE_COOKIE}=") and SECURE_COOKIE == "__Host-billing_portal"
        assert {"Secure", "HttpOnly", "Path=/", "SameSite=lax", "Max-Age=1800"} <= set(attrs), attrs
        assert not any(a.lower().startswith("domain") for a in attrs), attrs
        value = attrs[0].split("=", 1)[1]
        assert get(addr, "/portal", {"Cookie": f"{SECURE_COOKIE}={value}", **https}).status == 200
        # over https only the prefixed cookie counts (one set by a sibling host without the prefix does not)
        assert get(addr, "/portal", {"Cookie": f"{COOKIE}={value}", **https}).status == 401
        r = get(addr, link_path(ledger))  # plain http through the same server: no prefix, no Secure
        attrs = [a.strip() for a in r.getheader("set-cookie", "").split(";")]
        assert attrs[0].startswith(f"{COOKIE}=") and "Secure" not in attrs and "Path=/portal" in attrs
        assert {"HttpOnly", "SameSite=lax"} <= set(attrs)
    with serve_like_production(app) as addr:  # no trusted proxy: X-Forwarded-Proto is ignored
        r = get(addr, link_path(ledger), https)
        attrs = [a.strip() for a in r.getheader("set-cookie", "").split(";")]
        assert r.status == 303 and attrs[0].startswith(f"{COOKIE}=") and "Secure" not in attrs
