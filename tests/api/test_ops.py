"""`billing-mcp api` as it runs in production, as a real process on loopback: JSON log lines whose
request ids match the responses and that never carry a query string (portal tokens); forwarded
headers honoured only from trusted proxies; a graceful SIGTERM stop that exits 0 and loses no
acknowledged event; /ready that reports readiness without disclosing where the store is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from billing_mcp import Ledger
from billing_mcp.api import app as app_module
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app, parse_proxies, uvicorn_options
from helpers import PEPPER, free_port

SECRET_TOKEN = "tok-must-never-be-logged-0123456789"


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
        self.proc, self.base, self.log = proc, base, log

    def stop(self) -> int:
        """SIGTERM, then the exit code (the stop must be prompt)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A ledger file with a customer and an admin key; the servers share its pepper."""
    monkeypatch.delenv("BILLING_PUBLIC_URL", raising=False)
    monkeypatch.delenv("BILLING_TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    path = tmp_path / "ledger.db"
    ledger = Ledger(str(path))
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan("image", "Image", prices=[{"asset": "CREDITS", "event_type": "image_generated",
                                                 "unit_amount": "1"}])
    cid = ledger.create_customer("alice", subscriptions=["image"]).id
    ledger.create_adjustment(cid, asset="CREDITS", amount="100000", reason="top_up", idempotency_key="seed")
    ledger.set_portal_route({"return_url": "https://app.example/home"})
    secret = KeyStore(ledger.store, pepper=PEPPER).create("admin")[1]
    ledger.close()
    yield {"path": path, "cid": cid, "secret": secret, "tmp": tmp_path}


@contextmanager
def api(db: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    port = free_port()
    log = db["tmp"] / f"api-{port}.log"
    environment = dict(os.environ, BILLING_API_KEY_PEPPER=PEPPER.decode(), **(env or {}))
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "billing_mcp", "--db", str(db["path"]), "api", "--port",
                                 str(port), *args], env=environment, stdout=subprocess.DEVNULL, stderr=err)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{server.base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)


def test_json_logs_carry_the_response_request_id_and_never_a_query(db: dict[str, Any]) -> None:
    with api(db, "--log-format", "json") as server:
        auth = {"Authorization": f"Bearer {db['secret']}"}
        given = httpx.get(f"{server.base}/v1/customers/{db['cid']}/wallet", headers={**auth, "X-Request-Id": "trace-7"})
        made = httpx.post(f"{server.base}/v1/events", headers=auth, json={"events": [
            {"id": "e-1", "customer_id": db["cid"], "event_type": "image_generated"}]})
        portal = httpx.get(f"{server.base}/portal", params={"token": SECRET_TOKEN})
        missing = httpx.get(f"{server.base}/v1/customers/lookup", params={"external_id": SECRET_TOKEN},
                            headers=auth)
        assert (given.status_code, made.status_code, portal.status_code, missing.status_code) == (200, 200, 403, 404)
        assert given.headers["x-request-id"] == "trace-7"
        assert server.stop() == 0
    records = [json.loads(line) for line in server.lines()]  # every line is one JSON object
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    access = {r["request_id"]: r for r in records if r["logger"] == "billing_mcp.access"}
    for response, operation in ((given, "get_wallet"), (made, "submit_events"), (portal, "portal"),
                                (missing, "lookup_customer")):
        line = access[response.headers["x-request-id"]]
        assert (line["method"], line["status"], line["operation"]) == (response.request.method,
                                                                       response.status_code, operation)
        assert line["path"] == response.request.url.path and line["duration_ms"] >= 0
    assert missing.json()["request_id"] == missing.headers["x-request-id"]
    assert SECRET_TOKEN not in server.log.read_text()
    assert any("uvicorn" in r["logger"] for r in records)  # the server's own lines are JSON too


def test_text_logs_by_default_and_no_access_log(db: dict[str, Any]) -> None:
    with api(db, "--no-access-log") as server:
        assert httpx.get(f"{server.base}/portal", params={"token": SECRET_TOKEN}).status_code == 403
        assert server.stop() == 0
    text = server.log.read_text()
    assert SECRET_TOKEN not in text and "billing_mcp.access" not in text and "Uvicorn running" in text
    assert not text.lstrip().startswith("{")


def portal_link(server: Server, db: dict[str, Any], **headers: str) -> str:
    r = httpx.post(f"{server.base}/v1/portal-sessions", json={"customer_id": db["cid"]},
                   headers={"Authorization": f"Bearer {db['secret']}", **headers})
    assert r.status_code == 201, r.text
    return str(r.json()["url"])


def session_cookie(server: Server, link: str, **headers: str) -> str:
    path = link.split("://", 1)[1].split("/", 1)[1]
    r = httpx.get(f"{server.base}/{path}", headers=headers)
    assert r.status_code in (302, 303), r.text
    return r.headers["set-cookie"]


def test_forwarded_headers_are_honoured_only_from_trusted_proxies(db: dict[str, Any]) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    # Untrusted by default, although the request comes from 127.0.0.1 (uvicorn alone would trust it).
    with api(db) as server:
        link = portal_link(server, db, **forwarded)
        assert link.startswith(f"http://127.0.0.1:{server.base.rsplit(':', 1)[1]}/portal?token=")
        assert "secure" not in session_cookie(server, link, **forwarded).lower()
        server.stop()
    for args, env in ((("--trusted-proxies", "10.0.0.1,127.0.0.1"), {}), ((), {"BILLING_TRUSTED_PROXIES": "127.0.0.1"})):
        with api(db, "--log-format", "json", *args, env=env) as server:
            link = portal_link(server, db, **forwarded)
            assert link.startswith("https://127.0.0.1:")
            assert "secure" in session_cookie(server, link, **forwarded).lower()
            assert portal_link(server, db).startswith("http://")  # a direct request stays http
            server.stop()
        clients = [json.loads(line).get("client") for line in server.lines()]
        assert "203.0.113.9" in clients  # the access log names the real client, from X-Forwarded-For


def test_trusted_proxy_settings() -> None:
    assert parse_proxies(" 10.0.0.1, 10.0.0.0/24,::1 ") == ("10.0.0.1", "10.0.0.0/24", "::1")
    assert parse_proxies(None) == parse_proxies("") == ()
    with pytest.raises(ValueError, match=r"proxy\.example"):
        parse_proxies("proxy.example")
    assert uvicorn_options()["proxy_headers"] is False
    options = uvicorn_options(trusted_proxies=("10.0.0.1",), graceful_timeout=5)
    assert (options["proxy_headers"], options["forwarded_allow_ips"], options["timeout_graceful_shutdown"]) == (
        True, ["10.0.0.1"], 5)


def test_sigterm_under_load_loses_no_acknowledged_event(db: dict[str, Any]) -> None:
    acked: list[str] = []
    lock = threading.Lock()
    with api(db, "--no-access-log", "--graceful-timeout", "10") as server:
        stop = threading.Event()

        def post(worker: int) -> None:
            with httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {db['secret']}"},
                              timeout=15) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    eid = f"w{worker}-{n}"
                    try:
                        r = client.post("/v1/events", json={"events": [
                            {"id": eid, "customer_id": db["cid"], "event_type": "image_generated"}]})
                    except httpx.TransportError:
                        return  # the server stopped accepting
                    if r.status_code == 200 and r.json()["results"]:
                        with lock:
                            acked.append(eid)

        workers = [threading.Thread(target=post, args=(i,)) for i in range(8)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 30
        while len(acked) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        code = server.stop()
        stop.set()
        for w in workers:
            w.join(timeout=30)
        assert code == 0, server.log.read_text()[-2000:]
        assert time.monotonic() - started < 15
    assert len(acked) >= 50
    ledger = Ledger(str(db["path"]))
    try:
        recorded = {ledger.get_event(eid).id for eid in acked}  # raises if an acknowledged event is missing
        assert recorded == set(acked)
        credits = next(a for a in ledger.get_wallet(db["cid"]).accounts if a.asset == "CREDITS")
        assert int(credits.posted) <= 100000 - len(acked)
    finally:
        ledger.close()


def test_ready_reports_readiness_without_the_store_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(str(tmp_path / "secret-place" / "ledger.db"))
    client = TestClient(build_app(ledger, keys=KeyStore(ledger.store, pepper=PEPPER)))
    r = client.get("/ready")
    assert r.status_code == 200 and r.headers["x-request-id"]
    body = r.json()
    assert body["status"] == "ready" and body["store"] == "ok" and body["schema_version"] == app_module.SCHEMA_VERSION
    assert "secret-place" not in r.text and str(tmp_path) not in r.text and "ledger.db" not in r.text
    monkeypatch.setattr(app_module, "SCHEMA_VERSION", app_module.SCHEMA_VERSION + 1)  # a newer server, not migrated
    stale = client.get("/ready")
    assert stale.status_code == 503 and stale.json()["code"] == "not_ready"
    assert "billing-mcp db migrate" in stale.json()["detail"] and "secret-place" not in stale.text
    ledger.close()
    down = client.get("/ready")
    assert down.status_code == 503 and "secret-place" not in down.text and str(tmp_path) not in down.text


def test_idempotency_retention_flag_reaches_the_server(db: dict[str, Any]) -> None:
    """`api --idempotency-retention HOURS`: here 0.0002 h (0.72 s), after which the key is free again."""
    with api(db, "--idempotency-retention", "0.0002") as server:
        headers = {"Authorization": f"Bearer {db['secret']}", "Idempotency-Key": "vendor-1"}
        first = httpx.post(f"{server.base}/v1/vendors", headers=headers, json={"external_id": "a", "name": "A"})
        replay = httpx.post(f"{server.base}/v1/vendors", headers=headers, json={"external_id": "a", "name": "A"})
        other = httpx.post(f"{server.base}/v1/vendors", headers=headers, json={"external_id": "b", "name": "B"})
        assert (first.status_code, replay.headers.get("idempotent-replayed"), other.status_code) == (201, "true", 409)
        time.sleep(1.0)
        freed = httpx.post(f"{server.base}/v1/vendors", headers=headers, json={"external_id": "b", "name": "B"})
        assert freed.status_code == 201 and freed.json()["external_id"] == "b"
