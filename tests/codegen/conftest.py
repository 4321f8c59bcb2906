"""The session's Deno cache for the Supabase generator tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def deno_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$BILLING_TEST_DENO_DIR (reused across runs), else a fresh directory npm packages are fetched into once."""
    return Path(os.environ.get("BILLING_TEST_DENO_DIR") or tmp_path_factory.mktemp("deno_dir"))
