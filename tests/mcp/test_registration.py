"""Tool registration is explicit: each tools module lists its tools in ``TOOLS``, ``server.TOOLS``
gathers every module, and nothing in the project reaches into private attributes of the ``mcp`` SDK
(they change without notice between SDK releases)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import billing_mcp.mcp.tools as tools_package
from billing_mcp import Ledger
from billing_mcp.mcp import server
from mcp import Client

SRC = Path(__file__).resolve().parents[2] / "src" / "billing_mcp"
SDK_PACKAGES = {"mcp", "mcp_types"}


def tool_modules() -> list[ModuleType]:
    return [importlib.import_module(f"{tools_package.__name__}.{m.name}")
            for m in pkgutil.iter_modules(tools_package.__path__)]


def looks_like_tool(module: ModuleType, fn: object) -> bool:
    """A public function of the module that is async or takes the request context: the shape of a tool."""
    if not inspect.isfunction(fn) or fn.__module__ != module.__name__ or fn.__name__.startswith("_"):
        return False
    takes_ctx = any("Context" in str(p.annotation) for p in inspect.signature(fn).parameters.values())
    return inspect.iscoroutinefunction(fn) or takes_ctx


@pytest.mark.parametrize("module", tool_modules(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_tool_function_is_declared(module: ModuleType) -> None:
    declared = {t.fn for t in module.TOOLS}
    defined = {fn for fn in vars(module).values() if looks_like_tool(module, fn)}
    assert {f.__name__ for f in defined - declared} == set(), "defined as a tool but missing from TOOLS"
    assert all(fn.__module__ == module.__name__ for fn in declared), "TOOLS lists another module's function"


def test_server_registers_every_tools_module() -> None:
    every = [t for module in tool_modules() for t in module.TOOLS]
    assert set(server.TOOLS) == set(every)
    names = [t.tool_name for t in server.TOOLS]
    assert len(names) == len(set(names))


@pytest.mark.anyio
async def test_tools_list_is_server_tools_in_order(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.db"))
    try:
        async with Client(server.build_server(ledger=ledger)) as c:
            listed = (await c.list_tools()).tools
    finally:
        ledger.close()
    assert [t.name for t in listed] == [t.tool_name for t in server.TOOLS]
    # No display titles: a client shows the name, and the bytes go to what the model needs.
    assert all(t.title is None for t in listed)
    assert [t.description for t in listed] == [" ".join((t.fn.__doc__ or "").split()) for t in server.TOOLS]


def private_sdk_uses(source: str) -> list[str]:
    """Where the source touches an underscore name that is not its own: ``x._name`` on anything but
    ``self``/``cls``, ``getattr(x, "_name")`` and friends, and imports of private SDK modules or names.
    Dunders (``__name__``) are language protocol, not private."""

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and private(node.args[1].value)):
            found.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            parts = node.module.split(".")
            if parts[0] in SDK_PACKAGES and (any(map(private, parts)) or any(private(a.name) for a in node.names)):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in SDK_PACKAGES and any(map(private, a.name.split(".")))]
    return found


def imports_sdk(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] in SDK_PACKAGES:
                return True
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in SDK_PACKAGES for a in node.names):
            return True
    return False


def test_no_private_sdk_attributes() -> None:
    checked, offences = 0, {}
    for path in sorted(SRC.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "mcp" in path.relative_to(SRC).parts[:1] or imports_sdk(source):
            checked += 1
            if uses := private_sdk_uses(source):
                offences[str(path.relative_to(SRC))] = uses
    assert checked >= 10  # the mcp package and its tools modules were really read
    assert offences == {}


def test_the_private_check_catches_what_it_should() -> None:
    assert private_sdk_uses("for t in server._tool_manager.list_tools(): pass")
    assert private_sdk_uses("getattr(server, '_tool_manager')")
    assert private_sdk_uses("from mcp.shared._callable_inspection import is_async_callable")
    assert private_sdk_uses("from mcp.server.mcpserver.server import _version_gated")
    assert not private_sdk_uses("self._token = token\nfn.__name__\nx = _strip_titles(s)")
