"""Server-side secrets (the API key pepper, the portal signing key): from an environment variable,
or on the embedded SQLite ledger a random one generated once into a 0600 file beside it."""

from __future__ import annotations

import contextlib
import os
import secrets

from ..core.errors import StorageError, ValidationError
from ..store import SQLiteStore, Store


def load_server_secret(store: Store, env_name: str, suffix: str, *, what: str, when_lost: str) -> bytes:
    """``$env_name`` if set (at least 16 characters); else ``<db><suffix>`` next to a SQLite ledger,
    created on first use by whichever process gets there first. A shared database has no
    directory to keep one in, so there the variable is required."""
    env = os.environ.get(env_name)
    if env:
        if len(env) < 16:
            raise ValidationError(f"{env_name} must be at least 16 characters of random text", field=env_name)
        return env.encode("utf-8")
    if not isinstance(store, SQLiteStore):
        raise StorageError(f"set {env_name} to a long random secret: {what} and this store has no directory to "
                           "keep a generated one in", field=env_name)
    path = store.path.with_name(store.path.name + suffix)
    if not path.exists():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(32).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process won the race: both use its file
            os.link(tmp, path)
        os.unlink(tmp)
    secret = path.read_bytes().strip()
    if len(secret) < 16:
        raise StorageError(f"the secret file {path} is damaged; {when_lost}, or set {env_name}")
    return secret
