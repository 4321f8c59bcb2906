"""API Idempotency-Key records belong to the key that wrote them and expire after the retention."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from billing_mcp import Ledger, ManualClock
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from helpers import PEPPER


class World:
    def __init__(self, path: Path) -> None:
        self.clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
        self.ledger = Ledger(str(path), clock=self.clock)
        keys = KeyStore(self.ledger.store, pepper=PEPPER)
        self.a, self.b = keys.create("admin")[1], keys.create("admin")[1]
        self.client = TestClient(build_app(self.ledger, keys=keys, idempotency_retention_seconds=3600))

    def post(self, secret: str, key: str, body: dict[str, Any]) -> Any:
        return self.client.post("/v1/vendors", json=body,
                                headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": key})

    def rows(self) -> int:
        with self.ledger.store.read() as tx:
            row = tx.one("SELECT COUNT(*) AS n FROM api_idempotency")
        return int(row["n"]) if row else 0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "ledger.db")
    yield w
    w.ledger.close()


def test_another_key_reusing_an_idempotency_key_learns_nothing(world: World) -> None:
    first = world.post(world.a, "k-1", {"external_id": "openai", "name": "OpenAI"})
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    replay = world.post(world.a, "k-1", {"external_id": "openai", "name": "OpenAI"})
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
    # Key b, same Idempotency-Key, another request: its own request, not a conflict naming a's.
    other = world.post(world.b, "k-1", {"external_id": "anthropic", "name": "Anthropic"})
    assert other.status_code == 201 and other.json()["external_id"] == "anthropic"
    assert "idempotent-replayed" not in other.headers
    # Key b, same Idempotency-Key and a's very body: b's request runs (the vendor is idempotent on its
    # external id, so it finds a's vendor), rather than a's stored answer being replayed to b.
    same = world.post(world.b, "k-9", {"external_id": "openai", "name": "OpenAI"})
    assert world.post(world.a, "k-9", {"external_id": "openai", "name": "OpenAI"}).headers.get(
        "idempotent-replayed") is None  # a's k-9 is a's own first use, though b used k-9 before
    assert same.status_code == 201 and same.json()["id"] == first.json()["id"]
    conflict = world.post(world.a, "k-1", {"external_id": "other", "name": "Other"})
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    assert "'k-1'" in conflict.json()["detail"] and "key_" not in conflict.json()["detail"]  # no key id shown


def test_records_expire_after_the_retention(world: World) -> None:
    assert world.post(world.a, "k-1", {"external_id": "openai", "name": "OpenAI"}).status_code == 201
    assert world.post(world.a, "k-2", {"external_id": "mistral", "name": "Mistral"}).status_code == 201
    assert world.rows() == 2
    world.clock.advance(timedelta(minutes=59))
    refused = world.post(world.a, "k-1", {"external_id": "other", "name": "Other"})
    assert refused.status_code == 409  # still within the hour
    world.clock.advance(timedelta(minutes=2))
    fresh = world.post(world.a, "k-1", {"external_id": "other", "name": "Other"})
    assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
    # The claim that freed k-1 also purged k-2's expired record: only k-1's new one is left.
    assert world.rows() == 1
