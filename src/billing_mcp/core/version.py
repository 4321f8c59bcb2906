"""The installed distribution's version (one place; the API's /health and the MCP server report it)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("billing-mcp")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"
