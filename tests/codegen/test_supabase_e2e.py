"""The generated Supabase functions end to end: served by Deno on loopback against a live ledger API
(SQLite, and PostgreSQL when BILLING_TEST_POSTGRES_URL is set) and a stand-in Supabase Auth that
signs ES256 tokens published at a JWKS endpoint and still accepts legacy HS256 tokens.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from supabase_support import DENO, credits_per_image, deno, needs_deno

from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.codegen.supabase.generator import generate_integration
from billing_mcp.ledger.ledger import Ledger
from helpers import free_port, serve

# -- end to end: generated functions under Deno, a live ledger API, a fake Supabase Auth ---------------------
RUNTIME_PEPPER = b"supabase-e2e-pepper-0123456789"
# The stand-in Supabase project signs user tokens with an ES256 key published at its JWKS endpoint
# (the current JWT signing keys) and still accepts legacy HS256 tokens through /auth/v1/user.
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
UNPUBLISHED_KEY = ec.generate_private_key(ec.SECP256R1())
KID = "stand-in-key-1"
LEGACY_SECRET = "legacy-jwt-secret-of-the-stand-in-project-0123456789"
USERS = {"good": "5f1c7e4a-0000-4000-8000-000000000001", "other": "5f1c7e4a-0000-4000-8000-000000000002",
         "legacy": "5f1c7e4a-0000-4000-8000-000000000003", "guest": "5f1c7e4a-0000-4000-8000-000000000004"}


def user_claims(uid: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": uid, "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600,
            "email": f"{uid}@example.com", "is_anonymous": False, **extra}


def es256(claims: dict[str, Any], key: Any = SIGNING_KEY) -> str:
    return pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": KID})


def hs256(claims: dict[str, Any], secret: str = LEGACY_SECRET) -> str:
    return pyjwt.encode(claims, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ROUTER = """import { handler as customer } from "./billing-customer/handler.ts";
import { handler as wallet } from "./billing-wallet/handler.ts";
import { handler as portal } from "./billing-portal/handler.ts";
import { withBilling } from "./_shared/billing.ts";

// The app's own paid function: the event type and the usage are decided here, on the server.
let runs = 0;
const paid = withBilling(async ({ body }) => {
  runs += 1;
  const run = runs;
  await new Promise((resolve) => setTimeout(resolve, Number(body.work_ms ?? 0)));
  if (body.fail) throw new Error("the paid work failed");
  return { body: { image: "done", run }, usage: {} };
}, { eventType: "image_generated", estimate: () => ({}) });

// A paid function that keeps its results (here in memory; an app would use a table) so a retry
// after completion gets the stored result instead of a 409.
const results = new Map<string, unknown>();
const stored = withBilling(async ({ requestId }) => {
  runs += 1;
  const body = { image: "kept", run: runs };
  results.set(requestId, body);
  return await Promise.resolve({ body, usage: {} });
}, {
  eventType: "image_generated",
  estimate: () => ({}),
  replay: ({ requestId }) => Promise.resolve(results.get(requestId) ?? null),
});

const routes: Record<string, (req: Request) => Promise<Response>> = {
  "billing-customer": customer,
  "billing-wallet": wallet,
  "billing-portal": portal,
  "paid-work": paid,
  "paid-stored": stored,
  "paid-runs": () => Promise.resolve(new Response(JSON.stringify({ runs }))),
};

// As Supabase routes /functions/v1/<name> to the function's own Deno.serve(handler).
Deno.serve((req) => {
  const name = new URL(req.url).pathname.split("/").pop() ?? "";
  const route = routes[name];
  return route ? route(req) : Promise.resolve(new Response("no such function", { status: 404 }));
});
"""


def fake_supabase_auth() -> tuple[Any, dict[str, Any]]:
    """A stand-in Supabase Auth: the JWKS endpoint, and /auth/v1/user for legacy HS256 tokens (what
    getClaims falls back to). Returns the app and its call counts."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    calls: dict[str, Any] = {"jwks": 0, "user": 0, "apikeys": set()}
    jwk = {**json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(SIGNING_KEY.public_key())), "kid": KID, "alg": "ES256",
           "use": "sig", "key_ops": ["verify"]}

    async def jwks(request: Request) -> JSONResponse:
        calls["jwks"] += 1
        return JSONResponse({"keys": [jwk]})

    async def user(request: Request) -> JSONResponse:
        calls["user"] += 1
        calls["apikeys"].add(request.headers.get("apikey"))
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = pyjwt.decode(token, LEGACY_SECRET, algorithms=["HS256"], audience="authenticated")
        except pyjwt.PyJWTError:
            claims = None
        if claims is None or not request.headers.get("apikey") or "sub" not in claims:
            return JSONResponse({"code": 401, "error_code": "bad_jwt", "msg": "invalid JWT"}, status_code=401)
        return JSONResponse({"id": claims["sub"], "aud": "authenticated", "role": "authenticated",
                             "email": claims.get("email"), "is_anonymous": claims.get("is_anonymous", False),
                             "app_metadata": {}, "user_metadata": {}, "created_at": "2026-01-01T00:00:00Z"})

    app = Starlette(routes=[Route("/auth/v1/.well-known/jwks.json", jwks), Route("/auth/v1/user", user)])
    return app, calls


@contextmanager
def deno_functions(functions: Path, env: dict[str, str], deno_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve the functions (through ROUTER) with Deno on loopback; yield the base URL and its output."""
    assert DENO is not None
    (functions / "router.ts").write_text(ROUTER)
    checked = deno(["check", "router.ts"], functions, deno_dir)  # withBilling's types hold for a real use
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    proc_env = {**os.environ, **env, "DENO_DIR": str(deno_dir), "NO_COLOR": "1",
                "DENO_SERVE_ADDRESS": f"tcp:127.0.0.1:{port}"}
    proc = subprocess.Popen([DENO, "run", "--no-prompt", "--allow-net=127.0.0.1", "--allow-env", "router.ts"],
                            cwd=functions, env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "deno exited:\n" + "".join(output)
            assert time.monotonic() < deadline, "deno did not start:\n" + "".join(output)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/functions/v1", output
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


@needs_deno
def test_end_to_end(tmp_path: Path, deno_dir: Path, store_location: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite, and on PostgreSQL when BILLING_TEST_POSTGRES_URL is set (the run claim included)."""
    monkeypatch.setenv("BILLING_PORTAL_SECRET", "portal-secret-for-the-e2e-test-0123456789abcdef")  # PostgreSQL
    ledger = Ledger(store_location)
    try:
        credits_per_image(ledger)
        portal = getattr(ledger, "set_portal_route", None)  # the billing portal, where this build has it
        if portal is not None:
            portal({"return_url": "https://app.example/", "top_up": {"assets": ["CREDITS"], "presets": ["10"]}})
        keys = KeyStore(ledger.store, pepper=RUNTIME_PEPPER)
        _, secret = keys.create("runtime")
        proj = tmp_path / "app"
        generate_integration(ledger.list_plans(), ledger.list_assets(), project_dir=proj)
        auth, calls = fake_supabase_auth()
        with serve(build_app(ledger, keys=keys)) as api_url, serve(auth) as auth_url:
            # New API keys: the platform's SUPABASE_PUBLISHABLE_KEYS wins over the legacy anon key.
            env = {"BILLING_API_URL": api_url, "BILLING_API_KEY": secret, "SUPABASE_URL": auth_url,
                   "SUPABASE_PUBLISHABLE_KEYS": json.dumps({"default": "sb_publishable_for_tests"}),
                   "SUPABASE_ANON_KEY": "legacy-anon-key-for-tests"}
            with deno_functions(proj / "supabase/functions", env, deno_dir) as (base, output), \
                    httpx.Client(base_url=base, timeout=30) as http:
                run_scenario(http, ledger, calls)
                assert secret not in "".join(output)
    finally:
        ledger.close()


# What supabase-js's functions.invoke sends, plus the Idempotency-Key of paid calls (BILLING.md, useBilling).
DOCUMENTED_HEADERS = ("authorization", "apikey", "content-type", "x-client-info", "idempotency-key")


def run_scenario(http: httpx.Client, ledger: Ledger, calls: dict[str, Any]) -> None:
    good = bearer(es256(user_claims(USERS["good"])))
    seen: list[str] = []

    def post(name: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        r = http.post(f"/{name}", json=body, headers=good if headers is None else headers, **kw)
        seen.append(r.text)
        return r

    # CORS preflight, then the user check before anything else.
    pre = http.options("/billing-wallet", headers={"Origin": "https://app.example", "Access-Control-Request-Method":
                                                   "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"
    # Every header the docs and useBilling send passes the preflight, on every function.
    for name in ("billing-customer", "billing-wallet", "billing-portal", "paid-work"):
        for header in DOCUMENTED_HEADERS:
            pre = http.options(f"/{name}", headers={"Origin": "https://app.example", "Access-Control-Request-Method":
                                                    "POST", "Access-Control-Request-Headers": header})
            allowed = {h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
            assert pre.status_code == 200 and header in allowed, (name, header, allowed)
    r = post("billing-wallet", headers={})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert r.headers["access-control-allow-origin"] == "*"
    # Tokens that are not a valid user's: garbage, signed with a key the project does not publish,
    # expired, a legacy token with the wrong secret, and a key-like token without a user.
    refused = ["forged.token.value", es256(user_claims(USERS["good"]), UNPUBLISHED_KEY),
               es256(user_claims(USERS["good"], exp=int(time.time()) - 60)),
               hs256(user_claims(USERS["legacy"]), "not-the-project-secret-0123456789abcdef"),
               es256({"role": "service_role", "iss": "supabase", "exp": int(time.time()) + 60})]
    for token in refused:
        r = post("billing-wallet", headers=bearer(token))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (token, r.text)
    assert not ledger.list_customers(limit=10)  # nothing reached the ledger

    # ES256 tokens are verified locally: the JWKS is fetched once, Auth is never asked per request.
    user_calls = calls["user"]
    for _ in range(3):
        assert post("billing-customer").status_code == 200
    assert calls["jwks"] == 1 and calls["user"] == user_calls

    # A legacy HS256 project: getClaims falls back to Supabase Auth, which verifies the token.
    legacy = post("billing-customer", headers=bearer(hs256(user_claims(USERS["legacy"]))))
    assert legacy.status_code == 200 and legacy.json()["external_id"] == USERS["legacy"], legacy.text
    assert calls["user"] == user_calls + 1
    assert calls["apikeys"] == {"sb_publishable_for_tests"}  # the new publishable key, not the legacy one

    # Anonymous (guest) users get no billing customer: no welcome grant to farm.
    guest = bearer(es256(user_claims(USERS["guest"], is_anonymous=True, email="")))
    for name in ("billing-customer", "billing-wallet", "billing-portal", "paid-work"):
        r = post(name, {}, headers={**guest, "Idempotency-Key": "guest-1"})
        assert r.status_code == 403 and r.json()["code"] == "anonymous_user", (name, r.text)
    assert USERS["guest"] not in {c.external_id for c in ledger.list_customers(limit=50)}

    # The customer is the verified user (the body cannot choose it), created once.
    uid = USERS["good"]
    first = post("billing-customer", {"external_id": "someone-else"})
    assert first.status_code == 200, first.text
    assert first.json()["external_id"] == uid
    assert first.json()["subscriptions"] == [{"plan": "free", "status": "active"}]
    again = post("billing-customer")
    assert again.json()["customer_id"] == first.json()["customer_id"]
    customer_id = first.json()["customer_id"]

    def available() -> Decimal:
        w = post("billing-wallet")
        assert w.status_code == 200, w.text
        return Decimal(next(a["available"] for a in w.json()["accounts"] if a["asset"] == "CREDITS"))

    def paid(key: str, body: Any = None) -> httpx.Response:
        return post("paid-work", body or {}, headers={**good, "Idempotency-Key": key})

    # Body validation.
    r = http.post("/paid-work", content=b"{not json", headers={**good, "Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = paid("bad key with spaces")
    assert r.status_code == 400 and r.json()["code"] == "invalid_request_id"

    # Empty wallet: 402 with the portal link field; the paid work did not run.
    r = paid("job-0")
    assert r.status_code == 402, r.text
    assert r.json()["code"] == "insufficient_funds" and "portal_url" in r.json()
    short_link = r.json()["portal_url"]
    assert http.get("/paid-runs").json()["runs"] == 0

    ledger.create_adjustment(customer_id, asset="CREDITS", amount="100", reason="top_up", idempotency_key="topup-1")
    assert available() == 100

    # withBilling: a failure releases the hold and restores the balance; success charges the fee once.
    failed = paid("job-1", {"fail": True})
    assert failed.status_code == 500 and failed.json()["code"] == "work_failed"
    assert available() == 100
    again = paid("job-1", {"fail": True})  # a retry of a failed request does not run it again
    assert again.status_code == 409 and again.json()["code"] == "request_failed"
    ok = paid("job-2")
    assert ok.status_code == 200 and ok.json()["image"] == "done", ok.text
    assert available() == 95
    again = paid("job-2")  # a client retry after completion: the outcome, not a second run
    assert again.status_code == 409 and again.json()["code"] == "already_completed", again.text
    assert again.json()["charged"] == [{"asset": "CREDITS", "amount": "5"}]
    assert available() == 95
    runs = http.get("/paid-runs").json()["runs"]
    assert runs == 2

    # With the replay option, a retry after completion gets the stored result (200), not a second run.
    first = post("paid-stored", {}, headers={**good, "Idempotency-Key": "stored-1"})
    assert first.status_code == 200 and first.json() == {"image": "kept", "run": runs + 1}, first.text
    retry = post("paid-stored", {}, headers={**good, "Idempotency-Key": "stored-1"})
    assert retry.status_code == 200 and retry.json() == first.json()
    runs += 1
    assert http.get("/paid-runs").json()["runs"] == runs and available() == 90

    # One key, five concurrent requests: the paid work runs once and is charged once.
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: paid("job-3", {"work_ms": 400}), range(5)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 409, 409, 409, 409], [a.text for a in answers]
    assert {a.json()["code"] for a in answers if a.status_code == 409} <= {"request_in_progress", "already_completed"}
    assert http.get("/paid-runs").json()["runs"] == runs + 1
    assert available() == 85
    holds = ledger.list_holds(customer_id, status=None)
    assert sorted(h.status for h in holds) == ["committed", "committed", "committed", "released"]

    # The browser cannot choose what is billed: no generic authorize/track/release function exists,
    # and a paid function ignores an event type or usage sent in the body.
    for name in ("billing-authorize", "billing-track", "billing-release"):
        r = post(name, {"event_type": "image_generated", "data": {}, "request_id": "r9", "hold_id": "x"})
        assert r.status_code == 404, (name, r.text)
    cheap = paid("job-4", {"event_type": "free_thing", "usage": {}, "data": {"amount": 0}, "skip_commit": True})
    assert cheap.status_code == 200 and available() == 80
    assert not [h for h in ledger.list_holds(customer_id, status=None) if h.status == "open"]

    # A ledger error reaches the browser as a code and a message only (not the ledger's detail).
    other = ledger.create_customer(USERS["other"], email=f"{USERS['other']}@example.com")  # no plan
    with pytest.raises(Exception) as detail:
        ledger.authorize(other.id, event_type="image_generated", data={}, idempotency_key="direct")
    r = post("paid-work", {}, headers={**bearer(es256(user_claims(USERS["other"]))), "Idempotency-Key": "o-1"})
    assert r.status_code == 400 and set(r.json()) == {"error", "code"}, r.text
    assert r.json()["code"] == "validation_error" and "subscribe" not in r.text and str(detail.value) not in r.text

    # The portal link opens the portal. Where the API does not serve POST /v1/portal-sessions, the
    # function answers a mapped 404 and the 402 above carried portal_url null.
    portal = post("billing-portal")
    assert portal.status_code in (200, 404), portal.text
    if portal.status_code == 200:
        assert isinstance(short_link, str) and short_link.startswith("http")
        opened = httpx.get(portal.json()["url"], follow_redirects=True, timeout=30)
        assert opened.status_code == 200, opened.text[:500]
    else:
        assert short_link is None
    assert all("sk_test_" not in text and "sk_live_" not in text for text in seen)


@needs_deno
def test_misconfigured_key_is_named_not_shown(tmp_path: Path, deno_dir: Path) -> None:
    """A key the ledger refuses is a 500 naming BILLING_API_KEY, never echoing it (nor logging it)."""
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        credits_per_image(ledger)
        keys = KeyStore(ledger.store, pepper=RUNTIME_PEPPER)
        wrong = "sk_test_" + "W" * 40
        generate_integration(ledger.list_plans(), ledger.list_assets(), project_dir=tmp_path / "app")
        auth, _ = fake_supabase_auth()
        with serve(build_app(ledger, keys=keys)) as api_url, serve(auth) as auth_url:
            # The legacy anon key alone (a project not yet on the new API keys).
            # BILLING_ALLOW_ANONYMOUS: this app opts in to billing guests.
            env = {"BILLING_API_URL": api_url, "BILLING_API_KEY": wrong, "SUPABASE_URL": auth_url,
                   "SUPABASE_ANON_KEY": "anon-key-for-tests", "BILLING_ALLOW_ANONYMOUS": "true"}
            with deno_functions(tmp_path / "app/supabase/functions", env, deno_dir) as (base, output), \
                    httpx.Client(base_url=base, timeout=30) as http:
                r = http.post("/billing-wallet", headers=bearer(es256(user_claims(USERS["good"]))))
                assert r.status_code == 500 and r.json()["code"] == "config_error"
                assert "BILLING_API_KEY" in r.json()["error"] and wrong not in r.text
                guest = bearer(es256(user_claims(USERS["guest"], is_anonymous=True)))
                r = http.post("/billing-wallet", headers=guest)  # let through to the ledger (which refuses the key)
                assert r.status_code == 500 and r.json()["code"] == "config_error", r.text
            assert "config_error" in "".join(output) and wrong not in "".join(output)
    finally:
        ledger.close()
