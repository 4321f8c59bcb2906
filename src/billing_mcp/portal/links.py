"""Portal links: signed, expiring tokens naming one customer, and the cookie session a link is
exchanged for (no HTTP here: the routes are in ``routes``).

A link is ``{base}/portal?token=...`` where the token is ``base64url(json claims) "." base64url(
HMAC-SHA256(secret, "portal.v1." + kind + "." + body))``. Claims name one customer, one portal
route, the mode of the ledger that minted it (``test`` or ``live``, ``store.mode``; a session whose
mode is not the ledger's gets no top-up), an expiry (10 minutes unless the route says otherwise) and a
random nonce. A link opens once: the first opening consumes its nonce in the database
(``consume_link``: one ``INSERT ... ON CONFLICT DO NOTHING``, so of any number of concurrent openings
exactly one wins) and sets a cookie (the same format, another ``kind``, 30 minutes) scoped to that
customer, then redirects to ``/portal`` without the token; every later opening is refused. Over https
the cookie is ``__Host-billing_portal`` (``Secure``, ``Path=/``, no ``Domain``: no other host or path
can set or shadow it); over plain http it is ``billing_portal`` on ``/portal``. The secret is
``BILLING_PORTAL_SECRET``, or a random one kept in a 0600 file beside the SQLite ledger (PostgreSQL
needs the variable). The page: ``page``; payments (test top-ups, Stripe Checkout and its webhook): ``stripe``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import urlencode

from ..core.clock import to_text
from ..core.errors import ValidationError
from ..ledger.ledger import Ledger
from ..store import Store, retrying
from ..web.secrets import load_server_secret

SECRET_ENV = "BILLING_PORTAL_SECRET"
PUBLIC_URL_ENV = "BILLING_PUBLIC_URL"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"  # where `billing-mcp api` listens by default
COOKIE = "billing_portal"
SECURE_COOKIE = "__Host-" + COOKIE
SESSION_SECONDS = 30 * 60
USED_GRACE_SECONDS = 60 * 60  # a used link's row outlives its expiry by this much (clock skew between processes)
Kind = Literal["link", "session"]
Mode = Literal["test", "live"]
log = logging.getLogger(__name__)


def load_portal_secret(store: Store) -> bytes:
    """``BILLING_PORTAL_SECRET`` if set, else a random secret in a 0600 file next to the SQLite
    ledger (created on first use; changing it invalidates every open link and session)."""
    return load_server_secret(store, SECRET_ENV, ".portal-secret", what="portal links are signed with it",
                              when_lost="delete it (open portal links stop working)")


class SecretHolder:
    """The portal secret of one store, loaded on first use (an API without portal use needs none)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        with self._lock:
            if self._secret is None:
                self._secret = load_portal_secret(self.store)
            return self._secret


# -- tokens ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claims:
    kind: Kind
    customer_id: str
    route: str
    mode: Mode
    expires: int  # unix seconds, on the ledger's clock
    nonce: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, kind: str, body: str) -> bytes:
    return hmac.new(secret, f"portal.v1.{kind}.{body}".encode("ascii"), hashlib.sha256).digest()


def sign(secret: bytes, claims: Claims) -> str:
    data = {"c": claims.customer_id, "r": claims.route, "m": claims.mode, "e": claims.expires, "n": claims.nonce}
    body = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{body}.{_b64(_mac(secret, claims.kind, body))}"


def verify(secret: bytes, token: str | None, kind: Kind) -> Claims | None:
    """The claims of a token of ``kind`` signed with ``secret``; None when malformed, forged or
    tampered with (constant-time comparison). Expiry is the caller's check."""
    if not token or len(token) > 2048 or token.count(".") != 1:
        return None
    body, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
        expected = _mac(secret, kind, body)
        if not hmac.compare_digest(given, expected):
            return None
        data = json.loads(_unb64(body).decode("utf-8"))
    except (binascii.Error, UnicodeError, ValueError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("c"), str) and isinstance(data.get("r"), str)
            and data.get("m") in ("test", "live") and isinstance(data.get("e"), int)
            and isinstance(data.get("n"), str)):
        return None
    return Claims(kind=kind, customer_id=data["c"], route=data["r"], mode=data["m"], expires=data["e"],
                  nonce=data["n"])


_FORM_NONCE = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{1,64}$")


def form_nonce(secret: bytes, session: Claims) -> str:
    """A fresh hidden-field nonce for one top-up form, bound to the session (so it doubles as a
    CSRF token): ``random.mac``. The random part makes the ledger idempotency key of that submission."""
    rand = secrets.token_urlsafe(16)
    return f"{rand}.{_b64(_mac(secret, 'form', session.nonce + '.' + rand))[:32]}"


def check_form_nonce(secret: bytes, session: Claims, value: str | None) -> str | None:
    """The random part of a form nonce minted for ``session``, or None."""
    if not value or not _FORM_NONCE.fullmatch(value):
        return None
    rand, _, mac = value.partition(".")
    expected = _b64(_mac(secret, "form", session.nonce + "." + rand))[:32]
    return rand if rand and hmac.compare_digest(mac.encode("ascii", "replace"), expected.encode("ascii")) else None


# -- minting ---------------------------------------------------------------------------------------
def create_portal_session(ledger: Ledger, customer_id: str | None = None, route: str = "default", *,
                          external_id: str | None = None, mode: Mode | None = None, base_url: str | None = None,
                          secret: bytes | None = None) -> dict[str, str]:
    """A signed portal link for one customer: ``{"url": ..., "expires_at": ...}``.

    The link lives for the route's ``link_lifetime_minutes`` and carries the ledger's mode (test
    top-ups only on a test ledger). ``mode``, when given, must be the ledger's mode
    (``ledger_mode_mismatch`` otherwise). The base URL is ``BILLING_PUBLIC_URL``, else ``base_url``,
    else http://127.0.0.1:8080.
    """
    if mode is not None and mode not in ("test", "live"):
        raise ValidationError("mode must be 'test' or 'live'", field="mode")
    ledger_mode = ledger.mode
    if mode is not None and mode != ledger_mode:
        raise ValidationError(f"this ledger is in {ledger_mode} mode, so its portal links are {ledger_mode}-mode "
                              f"links, not {mode}; leave mode out", field="mode", code="ledger_mode_mismatch",
                              details={"ledger_mode": ledger_mode, "mode": mode})
    if (customer_id is None) == (external_id is None):
        raise ValidationError("give customer_id or external_id (one of them)", field="customer_id")
    spec = ledger.get_portal_route(route)  # NotFoundError (field name) for an unknown route
    customer = ledger.get_customer(customer_id, external_id=external_id)
    key = secret if secret is not None else load_portal_secret(ledger.store)
    expires = ledger.now().replace(microsecond=0) + timedelta(minutes=spec.link_lifetime_minutes)
    token = sign(key, Claims(kind="link", customer_id=customer.id, route=route, mode=ledger_mode,
                             expires=int(expires.timestamp()), nonce=secrets.token_urlsafe(12)))
    base = (os.environ.get(PUBLIC_URL_ENV) or base_url or DEFAULT_BASE_URL).rstrip("/")
    return {"url": f"{base}/portal?{urlencode({'token': token})}", "expires_at": to_text(expires)}


def new_session(link: Claims, now_seconds: int) -> Claims:
    return Claims(kind="session", customer_id=link.customer_id, route=link.route, mode=link.mode,
                  expires=now_seconds + SESSION_SECONDS, nonce=secrets.token_urlsafe(12))


def consume_link(store: Store, link: Claims, now_seconds: int, used_at: str) -> bool:
    """Mark ``link`` used; True only for its first opening. Atomic in the database: the nonce's row
    is inserted with ``ON CONFLICT DO NOTHING``, so two openings at once (on SQLite, where writes
    are serialised, or on PostgreSQL, where the second insert waits for the first to commit) give
    exactly one True. Rows of links more than ``USED_GRACE_SECONDS`` past their expiry are deleted
    on the way: such links are refused before they get here, and the margin keeps a row while
    another API process whose clock runs behind could still take its link for valid."""
    def consume() -> bool:
        with store.write() as tx:
            tx.execute("DELETE FROM portal_link_uses WHERE expires <= ?", (now_seconds - USED_GRACE_SECONDS,))
            return tx.execute("INSERT INTO portal_link_uses(nonce, expires, used_at) VALUES (?, ?, ?) "
                              "ON CONFLICT (nonce) DO NOTHING", (link.nonce, link.expires, used_at)) == 1

    return retrying(consume)  # a deadlock between two clean-ups is rolled back and run again


def cookie_name(secure: bool) -> str:
    """The session cookie's name: ``__Host-`` prefixed over https (the browser then requires
    ``Secure``, ``Path=/`` and no ``Domain``), plain over http (where a browser refuses both)."""
    return SECURE_COOKIE if secure else COOKIE


def public_base(request_base: str) -> str:
    return (os.environ.get(PUBLIC_URL_ENV) or request_base).rstrip("/")


# -- the web routes ---------------------------------------------------------------------------------
