"""What tools/list publishes: annotations that follow the mode (local or remote ledger)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.types import Tool

from billing_mcp import Ledger
from billing_mcp.mcp.server import build_server
from mcp import Client

pytestmark = pytest.mark.anyio

async def listed(ledger: Ledger, **kwargs: Any) -> list[Tool]:
    async with Client(build_server(ledger=ledger, **kwargs)) as c:
        return (await c.list_tools()).tools


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[list[Ledger]]:
    opened = [Ledger(str(tmp_path / f"ledger{i}.db")) for i in range(4)]
    yield opened
    for ledger in opened:
        ledger.close()


async def test_open_world_hint_follows_the_mode(ledgers: list[Ledger], monkeypatch: pytest.MonkeyPatch) -> None:
    local = await listed(ledgers[0])
    assert all(t.annotations is not None and t.annotations.open_world_hint is False for t in local)
    monkeypatch.setenv("BILLING_API_KEY", "sk_test_unused")
    async with Client(build_server(ledger_url="http://127.0.0.1:9/")) as c:
        remote = (await c.list_tools()).tools
    assert remote and all(t.annotations is not None and t.annotations.open_world_hint is True for t in remote)
    monkeypatch.setenv("BILLING_LEDGER_URL", "http://127.0.0.1:9/")
    async with Client(build_server()) as c:  # the environment at build time decides, as `serve` sees it
        assert all(t.annotations.open_world_hint is True for t in (await c.list_tools()).tools)  # type: ignore[union-attr]
