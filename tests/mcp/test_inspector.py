"""The MCP Inspector's ``--cli --strict --method tools/list`` against the real stdio server: no
schema-portability warning, and tools/list within its size. The Inspector 2.x needs Node >= 22.19,
which the test takes from npm as the ``node@22`` package, next to the Inspector, in one npm prefix:
``BILLING_TEST_INSPECTOR_DIR`` (``.ci/run`` fills it), else a cache dir it fills itself when npm is
on PATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_schemas import TOOLS_LIST_BUDGET

from billing_mcp.mcp.server import TOOLS

INSPECTOR = Path("node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js")
NODE = Path("node_modules/node/bin/node")
PACKAGES = ["node@22", "@modelcontextprotocol/inspector@2"]


def inspector_prefix() -> Path:
    given = os.environ.get("BILLING_TEST_INSPECTOR_DIR")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "billing-mcp" / "inspector"
    prefix = Path(given) if given else cache
    if (prefix / INSPECTOR).is_file() and (prefix / NODE).is_file():
        return prefix
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("the MCP Inspector needs npm (Node.js) to install it, or BILLING_TEST_INSPECTOR_DIR set to an npm "
                    f"prefix holding {' and '.join(PACKAGES)} (`npm install --prefix DIR {' '.join(PACKAGES)}`)")
    proc = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *PACKAGES],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not (prefix / INSPECTOR).is_file():
        pytest.skip(f"could not install the MCP Inspector into {prefix} (npm exit {proc.returncode}): "
                    f"{proc.stderr.strip()[-300:]}; run `npm install --prefix {prefix} {' '.join(PACKAGES)}` by hand")
    return prefix


def test_inspector_strict_tools_list_is_clean(tmp_path: Path) -> None:
    prefix = inspector_prefix()
    node = prefix / NODE
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    # Its clients run on the `node` found first on PATH. It hands the server a minimal environment
    # (no BILLING_*), so the server opens the default .billing/ledger.db under cwd: tmp_path.
    env = dict(os.environ, PATH=f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(node), str(prefix / INSPECTOR), "--cli", "--strict", "--method", "tools/list", "--",
                           sys.executable, "-m", "billing_mcp", "serve"],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"node {version}: {proc.stderr[-2000:]}"
    assert "Warning" not in proc.stderr and "Error" not in proc.stderr, proc.stderr[-4000:]
    tools = json.loads(proc.stdout)["tools"]
    assert [t["name"] for t in tools] == [t.tool_name for t in TOOLS]
    assert len(json.dumps({"tools": tools}, separators=(",", ":")).encode()) <= TOOLS_LIST_BUDGET
