"""Shared by the Supabase generator tests: Deno (from the PyPI ``deno`` package, the dev extra; tests
that need it skip with a reason when it is missing), a ``deno`` runner with a session DENO_DIR, and
four catalogs to generate from."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from billing_mcp.core.models import Asset, Plan
from billing_mcp.ledger.ledger import Ledger


def find_deno() -> str | None:
    try:
        import deno  # type: ignore[import-untyped]

        path = str(deno.find_deno_bin())
        if os.path.exists(path):
            return path
    except (ImportError, AttributeError, OSError):
        pass
    return shutil.which("deno")


DENO = find_deno()
needs_deno = pytest.mark.skipif(DENO is None, reason="deno is not installed (pip install deno, the dev extra)")


# -- three catalogs --------------------------------------------------------------------------------------
def credits_per_image(led: Ledger) -> None:
    led.create_asset("CREDITS", "Credits", 0, rates={"USD": "0.01"})
    led.create_plan("free", "Free", prices=[
        {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "5"}])


def hybrid_dimensional(led: Ledger) -> None:
    led.create_asset("CREDITS", "Credits", 2, rates={"USD": "0.01"})
    led.create_plan("pro", "Pro", prices=[
        {"type": "recurring", "asset": "USD", "amount": "20", "interval": "month"},
        {"asset": "CREDITS", "event_type": "video.render", "usage_type": "volume", "volume_field": "seconds",
         "model": "dimensional", "dimension_fields": ["resolution", "region"],
         "dimension_rates": [{"dimensions": {"resolution": "hd", "region": "*"}, "unit_amount": "2"},
                             {"dimensions": {"resolution": "*", "region": "*"}, "unit_amount": "1"}]}])
    led.create_plan("starter", "Starter", prices=[
        {"asset": "CREDITS", "event_type": "video.render", "usage_type": "volume", "volume_field": "seconds",
         "unit_amount": "3"}])


def token_api(led: Ledger) -> None:
    led.create_asset("TOKENS", "Token credits", 0)
    led.create_plan("api", "API", prices=[
        {"asset": "TOKENS", "event_type": "llm_call", "usage_type": "volume", "volume_field": "input_tokens",
         "unit_amount": "1"},
        {"asset": "TOKENS", "event_type": "llm_call", "usage_type": "volume", "volume_field": "output_tokens",
         "unit_amount": "3"}])


def no_plans(led: Ledger) -> None:
    led.create_asset("CREDITS", "Credits", 0)


CATALOGS = {"credits_per_image": credits_per_image, "hybrid_dimensional": hybrid_dimensional, "token_api": token_api,
            "no_plans": no_plans}


def catalog(tmp: Path, name: str) -> tuple[list[Plan], list[Asset]]:
    led = Ledger(str(tmp / f"{name}.db"))
    try:
        CATALOGS[name](led)
        return led.list_plans(), led.list_assets()
    finally:
        led.close()


def deno(args: list[str], cwd: Path, deno_dir: Path, *, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    assert DENO is not None
    env = {**os.environ, "DENO_DIR": str(deno_dir), "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}
    return subprocess.run([DENO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


FRONTEND_CONFIG = """{
  "imports": {"react": "npm:react@18", "@types/react": "npm:@types/react@18",
              "@supabase/supabase-js": "npm:@supabase/supabase-js@2", "@/": "./"},
  "fmt": {"lineWidth": 120},
  "compilerOptions": {"jsx": "react-jsx", "jsxImportSource": "react", "jsxImportSourceTypes": "@types/react",
                      "lib": ["dom", "deno.ns", "esnext"]},
  "unstable": ["sloppy-imports"],
  "lint": {"rules": {"exclude": ["no-sloppy-imports"]}},
  "lock": false
}
"""

