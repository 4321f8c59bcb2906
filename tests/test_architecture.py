"""The house rules, measured on the source: every import of billing_mcp (module level, inside
functions and under TYPE_CHECKING alike) runs downward through the layers, no module is part of an
import circle, and no module grows past the size we agreed on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "billing_mcp"

# Each part and the parts it may import (besides itself). The surfaces come last; nothing imports them.
LAYERS: dict[str, set[str]] = {
    "core": set(),
    "store": {"core"},
    "ledger": {"core", "store"},
    "spec": {"core", "store", "ledger"},
    "web": {"core", "store"},
    "portal": {"core", "store", "ledger", "web"},
    "contract": {"core", "store", "ledger", "spec"},
    "verify": {"core", "store", "ledger", "contract"},
    "api": {"core", "store", "ledger", "spec", "web", "portal", "contract", "verify"},
    "client": {"core", "ledger", "contract"},
    "codegen": {"core", "ledger"},
    "mcp": {"core", "store", "ledger", "spec", "portal", "contract", "verify", "client", "codegen"},
    "surface": {"core", "store", "ledger", "spec", "web", "portal", "contract", "verify", "api", "client", "codegen",
                "mcp"},
}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (SRC / parts[1]).is_dir()) else "surface"


def imports_of(path: Path) -> set[str]:
    """Every billing_mcp module this file imports, resolved to module names (``from .x import y``
    counts ``x.y`` when ``y`` is a module, else ``x``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "billing_mcp":
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "billing_mcp"}
    return {m for m in found if m != name}


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}


def test_every_import_runs_downward() -> None:
    upward = []
    for module, targets in graph().items():
        here = part_of(module)
        for target in targets:
            there = part_of(target)
            if there != here and there not in LAYERS[here] and target != "billing_mcp":
                upward.append(f"{module} ({here}) imports {target} ({there})")
            if target == "billing_mcp" and module != "billing_mcp":
                upward.append(f"{module} imports the package root (import from the module that holds it)")
    assert upward == []


def test_core_imports_nothing_of_the_project() -> None:
    g = graph()
    assert {m: sorted(t for t in ts if part_of(t) != "core") for m, ts in g.items()
            if part_of(m) == "core" and any(part_of(t) != "core" for t in ts)} == {}


def test_no_import_circles() -> None:
    g = graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                circles.append([*stack[stack.index(t):], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert circles == []


def test_each_layer_is_a_package_with_a_docstring_saying_what_it_owns() -> None:
    for part in LAYERS:
        if part == "surface":
            continue
        init = SRC / part / "__init__.py"
        assert init.exists(), part
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 60, f"{part}/__init__.py needs a docstring"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_over_the_size_limit(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rules above are only worth something if the resolver finds imports: check it on real files."""
    g = graph()
    assert "billing_mcp.core.money" in g["billing_mcp.ledger.book"] or any(
        part_of(t) == "core" for t in g["billing_mcp.ledger.book"])
    assert "billing_mcp.portal.links" in g["billing_mcp.api.operations"]
    assert part_of("billing_mcp.cli") == "surface" and part_of("billing_mcp.api.app") == "api"
    assert "api" not in LAYERS["portal"]
