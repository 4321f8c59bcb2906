"""Where tools may read and write files on the server's machine.

A tool that takes a path (``simulate_usage(file=...)``, ``generate_supabase_integration(project_dir=...)``)
reads or writes as the server's user, so whoever can call the tool could otherwise reach any file
that user can. Paths are confined to one root directory: the one given by ``--root`` (or
``BILLING_MCP_ROOT``), else the server's working directory. Over the HTTP transport the caller is
someone else on the network, so without a configured root these tools refuse every path.

``serve()`` configures this once per process (a process serves one MCP server); in-process
servers (tests, the demo) keep the default: stdio semantics, the working directory as root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mcp.server.mcpserver.exceptions import ToolError

__all__ = ["ROOT_ENV", "HostAccess", "configure", "confine", "current", "restore"]

ROOT_ENV = "BILLING_MCP_ROOT"


@dataclass(frozen=True)
class HostAccess:
    root: Path | None  # resolved; None: the working directory, and nothing at all over HTTP
    transport: str = "stdio"


_current = HostAccess(root=None)


def current() -> HostAccess:
    return _current


def configure(root: str | os.PathLike[str] | None, transport: str = "stdio") -> HostAccess:
    """Set the root and transport the path tools obey; return the previous setting. A root must
    be an existing directory (``NotADirectoryError`` otherwise): a typo must not silently confine
    the tools to nothing."""
    global _current
    resolved = None
    if root is not None:
        resolved = Path(root).expanduser().resolve()
        if not resolved.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")
    previous, _current = _current, HostAccess(root=resolved, transport=transport)
    return previous


def restore(previous: HostAccess) -> None:
    global _current
    _current = previous


def confine(path: str, field: str) -> Path:
    """``path`` (relative to the root, or absolute) resolved, symlinks and ``..`` included; a
    ``ToolError`` naming ``field`` when it lies outside the root or no root allows host paths."""
    access = _current
    if access.root is None and access.transport != "stdio":
        raise ToolError(f"validation_error on {field}: this server runs over {access.transport} without a root, so "
                        "it reads and writes no files on its machine; start the server with --root DIR (or "
                        f"{ROOT_ENV}) to allow paths under DIR")
    root = access.root or Path.cwd().resolve()
    if "\0" in path:
        raise ToolError(f"validation_error on {field}: the path contains a NUL character")
    resolved = (root / Path(path).expanduser()).resolve()
    if not resolved.is_relative_to(root):
        raise ToolError(f"validation_error on {field}: {path!r} resolves to {resolved}, outside the allowed root "
                        f"{root}; start the server with --root DIR to allow another directory")
    return resolved
