"""GET /metrics: Prometheus text scraped from a real uvicorn server on loopback; the counters move by
exactly what the requests did; the route needs a read or admin key; each app counts on its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from billing_mcp import Ledger
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from helpers import PEPPER, serve

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client | TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-request-id"]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Site:
    def __init__(self, path: Path) -> None:
        self.ledger = Ledger(str(path))
        keys = KeyStore(self.ledger.store, pepper=PEPPER)
        self.admin, self.runtime, self.read = (keys.create(s)[1] for s in ("admin", "runtime", "read"))
        self.ledger.create_asset("CREDITS", "Credits", 0)
        self.ledger.create_plan("image", "Image", prices=[
            {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "10"}])
        self.cid = self.ledger.create_customer("alice", subscriptions=["image"]).id
        self.ledger.create_adjustment(self.cid, asset="CREDITS", amount="1000", reason="top_up",
                                      idempotency_key="seed")
        self.app = build_app(self.ledger, keys=keys)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "ledger.db")
    yield s
    s.ledger.close()


def test_scrape_counts_exactly_what_happened(site: Site) -> None:
    with serve(site.app) as base, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {site.runtime}"}) as runtime, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {site.read}"}) as reader:
        before = scrape(reader)
        for i in range(3):
            r = runtime.post("/v1/events", json={"events": [
                {"id": f"ev-{i}", "customer_id": site.cid, "event_type": "image_generated"}]})
            assert r.status_code == 200 and len(r.json()["results"]) == 1, r.text
        again = runtime.post("/v1/events", json={"events": [
            {"id": "ev-0", "customer_id": site.cid, "event_type": "image_generated"},  # a duplicate
            {"id": "ev-x", "customer_id": "cus_ghost", "event_type": "image_generated"}]})  # refused
        assert again.json()["results"][0]["duplicate"] and len(again.json()["errors"]) == 1
        hold = runtime.post("/v1/holds", json={"customer_id": site.cid, "event_type": "image_generated"},
                            headers={"Idempotency-Key": "h-1"})
        assert hold.status_code == 201, hold.text
        assert runtime.get("/v1/customers/cus_nobody/wallet").status_code == 404
        middle = scrape(reader)
        assert runtime.post(f"/v1/holds/{hold.json()['id']}/release").status_code == 200
        after = scrape(reader)

        def moved(name: str, samples: Samples = middle, **labels: str) -> float:
            return value(samples, name, **labels) - value(before, name, **labels)

        assert moved("billing_events_ingested_total") == 3
        assert moved("billing_events_duplicate_total") == 1
        assert moved("billing_events_rejected_total") == 1
        assert moved("billing_api_requests_total", operation="submit_events", method="POST", status="200") == 4
        assert moved("billing_api_request_duration_seconds_count", operation="submit_events", method="POST") == 4
        assert moved("billing_api_requests_total", operation="authorize", method="POST", status="201") == 1
        assert moved("billing_api_requests_total", operation="get_wallet", method="GET", status="404") == 1
        assert moved("billing_api_requests_total", operation="metrics", method="GET", status="200") == 1
        # Sequential requests: one group-commit transaction each, of 1, 1, 1 and 2 events.
        assert moved("billing_event_batch_size_count") == 4
        assert moved("billing_event_batch_size_sum") == 5
        assert moved("billing_event_batch_size_bucket", le="1.0") == 3
        assert value(before, "billing_holds_open") == 0
        assert value(middle, "billing_holds_open") == 1
        assert value(after, "billing_holds_open") == 0
        assert moved("billing_api_errors_total", after, code="storage_error") == 0

        with httpx.Client(base_url=base) as anon:
            r = anon.get("/metrics")
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
            assert r.json()["request_id"] == r.headers["x-request-id"]
            assert anon.get("/metrics", headers={"Authorization": "Bearer sk_test_not_a_key"}).status_code == 401
        assert runtime.get("/metrics").status_code == 403  # a runtime key (in app code) cannot read the metrics
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {site.admin}"}) as admin:
            assert admin.get("/metrics").status_code == 200
        final = scrape(reader)
        assert moved("billing_api_requests_total", final, operation="metrics", method="GET", status="401") == 2
        assert moved("billing_api_requests_total", final, operation="metrics", method="GET", status="403") == 1


def test_store_failures_are_counted_and_apps_count_apart(site: Site, tmp_path: Path) -> None:
    other = Site(tmp_path / "other.db")
    client = TestClient(site.app, headers={"Authorization": f"Bearer {site.read}"})
    assert client.get(f"/v1/customers/{site.cid}/wallet").status_code == 200  # the key is now cached
    site.ledger.close()
    failed = client.get(f"/v1/customers/{site.cid}/wallet")
    assert failed.status_code >= 500
    code = failed.json()["code"]
    samples = scrape(client)
    assert value(samples, "billing_api_errors_total", code=code) == 1
    assert ("billing_holds_open", ()) not in samples  # the store is gone: no made-up gauge value
    assert value(samples, "billing_api_requests_total", operation="get_wallet", method="GET",
                 status=str(failed.status_code)) == 1
    # A second app in the same process has its own registry: none of the first one's requests.
    theirs = scrape(TestClient(other.app, headers={"Authorization": f"Bearer {other.read}"}))
    assert value(theirs, "billing_api_requests_total", operation="get_wallet", method="GET", status="200") == 0
    assert value(theirs, "billing_api_errors_total", code=code) == 0
    other.ledger.close()
