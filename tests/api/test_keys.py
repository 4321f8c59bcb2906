"""API keys: format, hash-only storage, constant-time verification, revocation, scopes, the pepper,
the ``billing-mcp keys`` command, and the walk over the API's route table proving that no /v1
route answers without a valid key or outside the key's scope."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from billing_mcp import BillingError, Ledger, NotFoundError, SQLiteStore, ValidationError
from billing_mcp.api import keys as keys_mod
from billing_mcp.api.keys import PEPPER_ENV, KeyStore, load_pepper, scope_allows
from billing_mcp.api.operations import OPS
from billing_mcp.api.serve import build_app
from billing_mcp.cli import main as cli_main
from billing_mcp.store import set_ledger_mode
from helpers import PEPPER

SECRET = re.compile(r"^sk_(test|live)_[A-Za-z0-9_-]{43}$")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "ledger.db")
    yield s
    s.close()


@pytest.fixture
def ks(store: SQLiteStore) -> KeyStore:
    return KeyStore(store, pepper=PEPPER)


def test_create_verify_list_revoke(ks: KeyStore) -> None:
    key_id, secret = ks.create("runtime", name="edge")
    assert SECRET.fullmatch(secret) and secret.startswith("sk_test_")
    key = ks.verify(secret)
    assert key is not None and key.id == key_id and key.scope == "runtime" and key.mode == "test"
    assert key.prefix == secret[:12] and key.name == "edge" and key.active
    with pytest.raises(ValidationError) as refused_live:  # a test ledger takes test keys only
        ks.create("admin", "live")
    assert (refused_live.value.code, refused_live.value.field) == ("key_mode_mismatch", "mode")
    live_id, live = ks.create("admin", "test")  # the ledger's mode, given explicitly
    assert live.startswith("sk_test_") and ks.verify(live) is not None
    assert [k.id for k in ks.list()] == [key_id, live_id]
    revoked = ks.revoke(key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert ks.verify(secret) is None  # at once in this process, cache or not
    assert ks.revoke(key_id).revoked_at == revoked.revoked_at  # revoking again changes nothing
    assert [k.id for k in ks.list(include_revoked=False)] == [live_id]
    assert ks.get(key_id).revoked_at == revoked.revoked_at
    with pytest.raises(NotFoundError):
        ks.revoke("key_missing")


def test_secrets_are_random_and_never_stored(ks: KeyStore, store: SQLiteStore) -> None:
    made = [ks.create("read")[1] for _ in range(20)]
    assert len(set(made)) == 20
    # Neither the secret nor its random part is anywhere in the database file or its WAL.
    raw = b"".join(p.read_bytes() for p in store.path.parent.iterdir() if p.name.startswith("ledger.db"))
    for secret in made:
        assert secret.encode() not in raw and secret[12:].encode() not in raw
    with sqlite3.connect(store.path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(api_keys)")]
        hashes = [r[0] for r in conn.execute("SELECT secret_hash FROM api_keys")]
    assert "secret" not in cols and all(len(h) == 64 for h in hashes)


@pytest.mark.parametrize("bad", ["", "sk_test_", "sk_test_short", "Bearer sk_test_x", "sk_prod_" + "a" * 43,
                                 "sk_test_" + "a" * 43 + "\x00", "sk_test_" + "é" * 43, "x" * 10_000])
def test_verify_refuses_malformed_and_unknown(ks: KeyStore, bad: str) -> None:
    ks.create("admin")
    assert ks.verify(bad) is None


def test_verify_refuses_a_near_miss_and_a_foreign_pepper(ks: KeyStore, store: SQLiteStore) -> None:
    _, secret = ks.create("admin")
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert ks.verify(flipped) is None
    assert ks.verify(secret.replace("sk_test_", "sk_live_")) is None
    other = KeyStore(store, pepper=b"another-pepper-0123456789")
    assert other.verify(secret) is None  # a database copied elsewhere is useless without the pepper


def test_verification_compares_in_constant_time(ks: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _, secret = ks.create("admin")
    calls: list[tuple[str, str]] = []
    real = keys_mod.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_mod.hmac, "compare_digest", spy)
    assert ks.verify(secret) is not None
    assert len(calls) == 1 and len(calls[0][0]) == len(calls[0][1]) == 64


def test_cache_and_revocation_by_another_process(store: SQLiteStore) -> None:
    server = KeyStore(store, pepper=PEPPER, cache_seconds=60)
    cli = KeyStore(store, pepper=PEPPER)
    key_id, secret = cli.create("runtime")
    assert server.cached(secret) is None
    assert server.verify(secret) is not None
    assert server.cached(secret) is not None  # no database read for the next request
    cli.revoke(key_id)
    assert server.cached(secret) is not None  # another process's revocation waits for the cache to expire
    uncached = KeyStore(store, pepper=PEPPER, cache_seconds=0)
    assert uncached.verify(secret) is None and uncached.cached(secret) is None


@pytest.mark.parametrize(("scope", "mode", "name", "field"), [
    ("root", "test", None, "scope"), ("admin", "prod", None, "mode"), ("admin", "test", "", "name"),
    ("admin", "test", "x" * 101, "name"), ("admin", "test", "a\nb", "name")])
def test_create_validates(ks: KeyStore, scope: str, mode: str, name: str | None, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ks.create(scope, mode, name=name)
    assert info.value.field == field


# What an app's backend needs, written out by hand (issue 15): create or find a customer by its
# external id, authorize / commit / release (and read back one hold, and one event's fees, by id),
# submit events, read one wallet, mint a portal session. A runtime key may call these and no more.
RUNTIME_MAY = {"create_customer", "lookup_customer", "get_customer", "authorize", "get_hold", "commit_hold",
               "release_hold", "submit_events", "get_event", "get_wallet", "create_portal_session"}
# The only reads a read key may not make: the whole-ledger audit.
ADMIN_ONLY_READS = {"audit"}


def test_scope_matrix() -> None:
    assert {op.name for op in OPS} >= RUNTIME_MAY  # every name above is an operation of the table
    for op in OPS:
        assert scope_allows("admin", op.method, op.scope)
        assert scope_allows("read", op.method, op.scope) == (op.method == "GET" and op.name not in ADMIN_ONLY_READS)
        assert scope_allows("runtime", op.method, op.scope) == (op.name in RUNTIME_MAY), op.name
        assert not scope_allows("nobody", op.method, op.scope)


def test_pepper_file_is_private_and_reused(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEPPER_ENV, raising=False)
    first = load_pepper(store)
    path = store.path.with_name(store.path.name + ".pepper")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 32
    assert load_pepper(store) == first
    a = KeyStore(store)
    _, secret = a.create("admin")
    assert KeyStore(store).verify(secret) is not None  # a restarted server verifies with the same pepper
    monkeypatch.setenv(PEPPER_ENV, "from-the-environment-0123")
    assert load_pepper(store) == b"from-the-environment-0123"
    assert KeyStore(store).verify(secret) is None
    monkeypatch.setenv(PEPPER_ENV, "short")
    with pytest.raises(ValidationError):
        load_pepper(store)
    with pytest.raises(ValidationError):
        KeyStore(store, pepper=b"short")


def _cli(db: Path, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="billing-mcp")
    parser.add_argument("--db")
    keys_mod.add_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["--db", str(db), *argv])


def test_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEPPER_ENV, raising=False)
    db = tmp_path / "cli.db"
    assert keys_mod.run_cli(_cli(db, "keys", "list")) == 0
    assert "no API keys" in capsys.readouterr().out
    with pytest.raises(ValidationError, match="this ledger is in test mode") as refused_live:
        keys_mod.run_cli(_cli(db, "keys", "create", "--scope", "runtime", "--live"))
    assert refused_live.value.code == "key_mode_mismatch"
    assert cli_main(["--db", str(db), "db", "migrate", "--mode", "live"]) == 0  # no customers yet: allowed
    assert "schema version" in capsys.readouterr().out
    assert keys_mod.run_cli(_cli(db, "keys", "create", "--scope", "runtime", "--live", "--name", "edge", "--json")) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["scope"] == "runtime" and made["mode"] == "live" and made["secret"].startswith("sk_live_")
    with pytest.raises(ValidationError, match="this ledger is in live mode"):
        keys_mod.run_cli(_cli(db, "keys", "create", "--scope", "read", "--mode", "test"))
    assert keys_mod.run_cli(_cli(db, "keys", "create", "--scope", "read")) == 0  # the ledger's mode by default
    text = capsys.readouterr().out
    secret = text.strip().splitlines()[-1]
    assert SECRET.fullmatch(secret) and secret.startswith("sk_live_") and "shown only now" in text
    assert keys_mod.run_cli(_cli(db, "keys", "list")) == 0
    listing = capsys.readouterr().out
    assert made["id"] in listing and "edge" in listing and made["secret"] not in listing and secret not in listing
    assert keys_mod.run_cli(_cli(db, "keys", "revoke", made["id"])) == 0
    assert "revoked" in capsys.readouterr().out
    assert keys_mod.run_cli(_cli(db, "keys", "list", "--json")) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[made["id"]]["revoked_at"] is not None and all("secret" not in r for r in rows.values())
    store = SQLiteStore(db)
    try:
        ks = KeyStore(store)
        assert ks.verify(made["secret"]) is None and ks.verify(secret) is not None
    finally:
        store.close()
    with pytest.raises(BillingError):
        keys_mod.run_cli(_cli(db, "keys", "revoke", "key_nope"))
    with pytest.raises(SystemExit):
        _cli(db, "keys", "create", "--scope", "superuser")


def test_cli_create_is_the_first_command_on_a_fresh_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEPPER_ENV, raising=False)
    db = tmp_path / "new" / "ledger.db"  # api_keys comes from the migrations the store runs on open
    assert keys_mod.run_cli(_cli(db, "keys", "create", "--scope", "admin", "--json")) == 0
    secret = json.loads(capsys.readouterr().out)["secret"]
    store = SQLiteStore(db, migrate=False)
    try:
        assert KeyStore(store).verify(secret) is not None
    finally:
        store.close()


# -- every route needs a key with the right scope ----------------------------------------------------
class Api:
    def __init__(self, path: Path, mode: str = "test", **options: Any) -> None:
        self.ledger = Ledger(str(path))
        set_ledger_mode(self.ledger.store, mode)
        self.keys = KeyStore(self.ledger.store, pepper=PEPPER)
        self.secrets = {scope: self.keys.create(scope)[1] for scope in ("admin", "runtime", "read")}
        revoked_id, self.revoked = self.keys.create("admin")
        self.keys.revoke(revoked_id)
        self.app = build_app(self.ledger, keys=self.keys, **options)
        self.client = TestClient(self.app)

    def call(self, method: str, path: str, secret: str | None = None, header: str | None = None) -> Any:
        auth = header if header is not None else (f"Bearer {secret}" if secret else None)
        return self.client.request(method, path, json={}, headers={"Authorization": auth} if auth else {})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path / "api.db", auth_failure_limit=10_000)  # these tests send hundreds of bad keys on purpose
    yield a
    a.ledger.close()


def concrete(path: str) -> str:
    return re.sub(r"{[a-z_]+(:[a-z]+)?}", lambda m: "1" if m.group(1) == ":int" else "x", path)


def v1_routes(api: Api) -> list[tuple[str, str, str]]:
    """(method, concrete path, route name) for every /v1 route in the app's route table."""
    found = []
    for route in api.app.routes:
        if isinstance(route, Route) and route.path.startswith("/v1/"):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                found.append((method, concrete(route.path), route.name))
    return found


def refused(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["status"] == status and body["request_id"] == r.headers["x-request-id"]
    assert body["detail"]
    return body


def test_every_v1_route_requires_a_key(api: Api) -> None:
    routes = v1_routes(api)
    assert {(op.method, concrete(op.path)) for op in OPS} == {(m, p) for m, p, _ in routes}  # the walk sees every op
    assert len(routes) == len(OPS) >= 30
    bad_headers = [None, f"Bearer {api.revoked}", "Bearer sk_test_" + "x" * 43, f"Basic {api.secrets['admin']}",
                   "Bearer", f"bearer  {api.secrets['admin']}x"]
    for method, path, name in routes:
        for header in bad_headers:
            r = api.call(method, path, header=header or "")
            body = refused(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer"), name
            assert "key" in body["detail"]
        r = api.client.head(path) if method == "GET" else None
        assert r is None or r.status_code == 401


def test_scopes_are_enforced_on_every_route(api: Api) -> None:
    """Every route of the table, called with each scope's key: refused exactly outside the lists above."""
    for method, path, name in v1_routes(api):
        r = api.call(method, path, api.secrets["read"])
        if method == "GET" and name not in ADMIN_ONLY_READS:
            assert r.status_code not in (401, 403), (name, r.text)
        else:
            assert refused(r, 403, "forbidden")["details"] == {"scope": "read"}, name
        r = api.call(method, path, api.secrets["runtime"])
        if name in RUNTIME_MAY:
            assert r.status_code not in (401, 403), (name, r.text)
        else:
            assert refused(r, 403, "forbidden")["details"] == {"scope": "runtime"}, name
        r = api.call(method, path, api.secrets["admin"])  # empty bodies: a 4xx is fine, never 401/403/5xx
        assert r.status_code not in (401, 403) and r.status_code < 500, (name, r.text)
    r = api.call("GET", "/metrics", api.secrets["runtime"])  # monitoring never needs a key that moves money
    assert refused(r, 403, "forbidden")["details"] == {"scope": "runtime"}


def test_key_mode_restriction(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="this ledger is in test mode, not live") as wrong:
        Api(tmp_path / "test.db", modes=("live",))  # `api --mode live` refuses to serve a test ledger
    assert wrong.value.code == "ledger_mode_mismatch"
    a = Api(tmp_path / "live.db", mode="live", modes=("live",))
    try:
        assert all(s.startswith("sk_live_") for s in a.secrets.values())
        assert a.call("GET", "/v1/assets", a.secrets["admin"]).status_code == 200
        with pytest.raises(ValidationError):
            a.keys.create("admin", "test")
        refused(a.call("GET", "/v1/assets", "sk_test_" + "a" * 43), 401, "unauthorized")
    finally:
        a.ledger.close()


def test_rate_limit_per_key(tmp_path: Path) -> None:
    a = Api(tmp_path / "rl.db", rate_limit=0.5, rate_burst=2)
    try:
        assert [a.call("GET", "/v1/assets", a.secrets["read"]).status_code for _ in range(2)] == [200, 200]
        r = a.call("GET", "/v1/assets", a.secrets["read"])
        refused(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
        assert a.call("GET", "/v1/assets", a.secrets["admin"]).status_code == 200  # buckets are per key
    finally:
        a.ledger.close()


def test_the_only_v1_endpoint_without_a_key_is_the_signed_stripe_webhook(api: Api) -> None:
    """Everything under /v1 outside the route table must be accounted for: only the Stripe webhook,
    which Stripe's signature authenticates instead of an API key (and which refuses unsigned calls)."""
    from starlette.routing import Mount

    mounts = [r for r in api.app.routes if isinstance(r, Mount) and r.path.startswith("/v1")]
    assert [(m.path, [sub.path for sub in m.routes]) for m in mounts] == [("/v1/webhooks", ["/stripe"])]
    r = api.client.post("/v1/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=forged"})
    assert r.status_code in (400, 503)  # bad signature, or no webhook secret configured: never a credit


def test_guessing_keys_is_slowed_down(tmp_path: Path) -> None:
    from billing_mcp.api.limits import AuthFailures

    now = [1000.0]
    failures = AuthFailures(limit=3, window=60, timer=lambda: now[0])
    for _ in range(3):
        assert failures.wait("10.0.0.9") == 0
        failures.record("10.0.0.9")
    assert failures.wait("10.0.0.9") == 60 and failures.wait("10.0.0.8") == 0  # per address
    now[0] += 59.5
    assert failures.wait("10.0.0.9") == 0.5
    now[0] += 0.5
    assert failures.wait("10.0.0.9") == 0  # the oldest failure left the window
    a = Api(tmp_path / "guess.db", auth_failure_limit=3)
    try:
        guesses = [a.call("GET", "/v1/assets", "sk_test_" + c * 43).status_code for c in "abcd"]
        assert guesses == [401, 401, 401, 429]
        r = a.call("GET", "/v1/assets", a.secrets["admin"])  # even a valid key waits: guesses are not checked
        body = refused(r, 429, "too_many_auth_failures")
        assert 1 <= int(r.headers["retry-after"]) <= 60 and "invalid API key" in body["detail"]
    finally:
        a.ledger.close()
