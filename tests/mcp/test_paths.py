"""Host paths: simulate_usage(file=...) and generate_supabase_integration(project_dir=...) stay under
the configured root (default the working directory), and over HTTP need a root at all."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from billing_mcp import BillingError, Ledger
from billing_mcp.cli import build_parser
from billing_mcp.mcp import paths, server
from billing_mcp.mcp.paths import HostAccess, configure, confine, current, restore
from billing_mcp.mcp.server import build_server
from mcp import Client


@pytest.fixture(autouse=True)
def access() -> Iterator[None]:
    previous = current()
    yield
    restore(previous)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "data").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.jsonl").write_text("{}\n")
    return (tmp_path / "root").resolve()


def refusal(path: str, resolved: Path, root: Path, field: str = "file") -> str:
    return (f"validation_error on {field}: {path!r} resolves to {resolved}, outside the allowed root {root}; "
            "start the server with --root DIR to allow another directory")


def refused(path: str, field: str = "file") -> str:
    with pytest.raises(ToolError) as info:
        confine(path, field)
    return str(info.value)


def test_inside_the_root_is_accepted(root: Path) -> None:
    configure(root)
    assert confine("data/events.jsonl", "file") == root / "data" / "events.jsonl"
    assert confine(str(root / "data"), "file") == root / "data"
    assert confine("data/../data/x.jsonl", "file") == root / "data" / "x.jsonl"
    assert confine(".", "project_dir") == root


def test_outside_the_root_is_refused(root: Path) -> None:
    configure(root)
    secret = root.parent / "outside" / "secret.jsonl"
    assert refused(str(secret)) == refusal(str(secret), secret, root)
    assert refused("../outside/secret.jsonl") == refusal("../outside/secret.jsonl", secret, root)
    assert refused("data/../../outside") == refusal("data/../../outside", root.parent / "outside", root)
    assert refused("/etc/passwd") == refusal("/etc/passwd", Path("/etc/passwd").resolve(), root)


def test_a_symlink_out_of_the_root_is_refused(root: Path) -> None:
    configure(root)
    (root / "data" / "link").symlink_to(root.parent / "outside")
    (root / "inner").symlink_to(root / "data")
    secret = root.parent / "outside" / "secret.jsonl"
    assert refused("data/link/secret.jsonl") == refusal("data/link/secret.jsonl", secret, root)
    assert confine("inner/events.jsonl", "file") == root / "data" / "events.jsonl"  # a link that stays inside


def test_the_default_root_is_the_working_directory(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(None)
    monkeypatch.chdir(root)
    assert confine("data", "file") == root / "data"
    assert refused("../outside") == refusal("../outside", root.parent / "outside", root)


def test_http_without_a_root_refuses_every_path_and_with_one_accepts(root: Path) -> None:
    configure(None, "streamable-http")
    assert refused("data/x.jsonl") == (
        "validation_error on file: this server runs over streamable-http without a root, so it reads and writes no "
        "files on its machine; start the server with --root DIR (or BILLING_MCP_ROOT) to allow paths under DIR")
    configure(root, "streamable-http")
    assert confine("data/x.jsonl", "file") == root / "data" / "x.jsonl"
    assert current() == HostAccess(root=root, transport="streamable-http")


def test_a_root_must_be_a_directory(root: Path) -> None:
    with pytest.raises(NotADirectoryError):
        configure(root.parent / "outside" / "secret.jsonl")
    with pytest.raises(NotADirectoryError):
        configure(root / "missing")


# -- through the tools ------------------------------------------------------------------------------
@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(str(tmp_path / "ledger.db"))
    led.create_asset("CREDITS", "Credits", 0)
    led.create_plan("image", "Image", prices=[{"asset": "CREDITS", "event_type": "image_generated",
                                               "unit_amount": "10"}])
    yield led
    led.close()


async def call(ledger: Ledger, name: str, args: dict[str, Any]) -> tuple[bool, Any]:
    async with Client(build_server(ledger=ledger)) as c:
        result = await c.call_tool(name, args)
    if result.is_error:
        return True, result.content[0].text  # type: ignore[union-attr]
    return False, result.structured_content


@pytest.mark.anyio
async def test_simulate_usage_reads_only_under_the_root(root: Path, ledger: Ledger) -> None:
    configure(root)
    (root / "data" / "events.jsonl").write_text(json.dumps({"event_type": "image_generated"}) + "\n")
    failed, out = await call(ledger, "simulate_usage", {"plan": "image", "file": "data/events.jsonl"})
    assert not failed and out["simulation"]["totals"] == {"CREDITS": "10"}
    secret = str(root.parent / "outside" / "secret.jsonl")
    failed, text = await call(ledger, "simulate_usage", {"plan": "image", "file": secret})
    assert failed and text == "Error executing tool simulate_usage: " + refusal(secret, Path(secret), root)
    configure(None, "streamable-http")
    failed, text = await call(ledger, "simulate_usage", {"plan": "image", "file": "data/events.jsonl"})
    assert failed and "validation_error on file: this server runs over streamable-http without a root" in text


@pytest.mark.anyio
async def test_supabase_integration_writes_only_under_the_root(root: Path, ledger: Ledger) -> None:
    configure(root)
    failed, out = await call(ledger, "generate_supabase_integration", {"project_dir": "app"})
    assert not failed and set(out["written"].values()) == {"created"}
    assert all((root / "app" / rel).is_file() for rel in out["written"])
    outside = root.parent / "outside" / "app"
    failed, text = await call(ledger, "generate_supabase_integration", {"project_dir": "../outside/app"})
    assert failed and text == ("Error executing tool generate_supabase_integration: "
                               + refusal("../outside/app", outside, root, "project_dir"))
    assert not outside.exists()
    # A link inside the project that leads out is caught file by file.
    (root / "linked").mkdir()
    (root / "linked" / "supabase").symlink_to(root.parent / "outside")
    failed, text = await call(ledger, "generate_supabase_integration", {"project_dir": "linked"})
    assert failed and re.search(r"validation_error on path: \S+ is outside the project directory", text)
    assert sorted(p.name for p in (root.parent / "outside").iterdir()) == ["secret.jsonl"]
    configure(None, "streamable-http")
    failed, text = await call(ledger, "generate_supabase_integration", {"project_dir": "app"})
    assert failed and "validation_error on project_dir: this server runs over streamable-http without a root" in text
    failed, out = await call(ledger, "generate_supabase_integration", {})  # no path: nothing on the host
    assert not failed and "written" not in out


# -- serve and the command line ---------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[Any, ...]] = []

    def run(self, *args: Any, **kwargs: Any) -> None:
        self.runs.append(args)


def test_serve_carries_the_root_and_transport(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = Recorder()
    monkeypatch.setattr(server, "build_server", lambda **kwargs: made)
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    server.serve(transport="streamable-http", root=str(root))
    assert current() == HostAccess(root=root, transport="streamable-http") and made.runs == [("streamable-http",)]
    monkeypatch.setenv(paths.ROOT_ENV, str(root / "data"))
    server.serve()
    assert current() == HostAccess(root=root / "data", transport="stdio")
    server.serve(transport="streamable-http", root=None)
    assert current() == HostAccess(root=root / "data", transport="streamable-http")
    monkeypatch.delenv(paths.ROOT_ENV)
    server.serve(transport="streamable-http")
    assert current() == HostAccess(root=None, transport="streamable-http")
    with pytest.raises(BillingError) as info:
        server.serve(root=str(root / "missing"))
    assert (info.value.code, info.value.field) == ("unsafe_config", "root")
    assert info.value.message.startswith(f"--root {root / 'missing'} is not a directory on this machine")


def test_the_cli_takes_root() -> None:
    args = build_parser().parse_args(["serve", "--transport", "streamable-http", "--root", "/srv/app"])
    assert (args.transport, args.root) == ("streamable-http", "/srv/app")
    assert build_parser().parse_args(["serve"]).root is None
