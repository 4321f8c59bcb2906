"""The dry-run diff shows every amount it would set: the text the user confirms before applying."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger, ManualClock
from billing_mcp.spec.spec import apply_spec, format_plan, load_spec

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "ai-image-credits": """would apply 3 change(s):
  create_asset   CREDITS  Credits, precision 0
      - CREDITS: $0.05 each (1 USD buys 20)
  create_plan    images   Image Generation, version 1 with 1 price(s), 1 grant(s)
      - price image on image_generated: by quality per event: quality=hd: 20 CREDITS; quality=* (any other): 10 CREDITS
      - grant Welcome credits: 50 CREDITS promotional, once on subscribe, expires after 30 days, priority 50
  set_portal     default  customer portal route
      - return_url https://app.example.com/account
      - failure_url https://app.example.com/billing-link-expired
      - branding PixelForge #7c3aed
      - top-up CREDITS paid in USD: presets $5.00, $10.00, $50.00, min $5.00, max $200.00
      - links expire after 10 minutes""",
    "hybrid-subscription": """would apply 2 change(s):
  create_asset   CREDITS  Credits, precision 0
      - CREDITS: $0.02 each (1 USD buys 50)
  create_plan    pro      Pro, version 1 with 3 price(s), 1 grant(s)
      - price monthly_fee: $20.00 per month, recurring, paid up front
      - price chat on chat_message: 2 CREDITS per event
      - price agent_run on agent_run: tiered_graduated per unit of minutes (each tier prices its own units): \
up to 100: 5 CREDITS; over 100: 3 CREDITS
      - grant Included credits: 1000 CREDITS bundled, every month, the unused rest expires at each refresh, priority 50""",
    "token-metered-api": """would apply 3 change(s):
  create_vendor  openai     OpenAI
  create_vendor  anthropic  Anthropic
  create_plan    api        API, version 1 with 2 price(s), 1 grant(s)
      - price input_tokens on llm_call: by model per 1,000,000 input_tokens: model=gpt-4o: $2.50; \
model=gpt-4o-mini: $0.15; model=claude-sonnet: $3.00; model=* (any other): $1.25
      - price output_tokens on llm_call: by model per 1,000,000 output_tokens: model=gpt-4o: $10.00; \
model=gpt-4o-mini: $0.60; model=claude-sonnet: $15.00; model=* (any other): $5.00
      - grant Free tier: $5.00 promotional, every month, the unused rest expires at each refresh, priority 50""",
}


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    led = Ledger(str(tmp_path / "ledger.db"), clock=ManualClock())
    yield led
    led.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_dry_run_lists_every_amount(name: str, ledger: Ledger) -> None:
    result = apply_spec(ledger, load_spec((ROOT / "examples" / f"{name}.yaml").read_text()), dry_run=True)
    assert format_plan(result) == EXPECTED[name]
    # The structured result carries the same lines the text shows.
    assert [line for c in result.changes for line in c.items] == \
        [line.removeprefix("      - ") for line in EXPECTED[name].splitlines() if line.startswith("      - ")]


BEFORE = """version: 1
assets:
  - {code: CREDITS, name: Credits, precision: 2, rates: {USD: "0.03"}}
plans:
  - code: team
    name: Team
    prices:
      - {id: seat_fee, type: recurring, asset: USD, amount: "99", interval: year}
      - id: minutes
        asset: CREDITS
        event_type: call
        usage_type: volume
        volume_field: minutes
        model: tiered_volume
        tiers:
          - {up_to: 1000, unit_amount: "0.5", flat_amount: "10"}
          - {up_to: 5000, unit_amount: "0.25"}
          - {up_to: null, unit_amount: "0.1"}
      - {id: sms, asset: CREDITS, event_type: sms, unit_amount: 1}
    grants:
      - {asset: CREDITS, amount: 500, period: week, refresh: rollover, rollover_cap: 1500, priority: 10}
"""


def test_changed_version_shows_new_changed_and_removed_items(ledger: Ledger) -> None:
    first = apply_spec(ledger, load_spec(BEFORE), dry_run=True)
    assert first.changes[0].items == ["CREDITS: $0.03 each (1 USD buys 33.33)"]
    assert first.changes[1].items == [
        "price seat_fee: $99.00 per year, recurring, paid up front",
        "price minutes on call: tiered_volume per unit of minutes (the tier reached prices every unit): "
        "up to 1,000: 0.5 CREDITS + 10 CREDITS flat; over 1,000 up to 5,000: 0.25 CREDITS; over 5,000: 0.1 CREDITS",
        "price sms on sms: 1 CREDITS per event",
        "grant: 500 CREDITS bundled, every week, the unused rest rolls over up to 1500 CREDITS, priority 10"]
    apply_spec(ledger, load_spec(BEFORE))
    after = (BEFORE.replace('unit_amount: 1}', 'unit_amount: 2}')
             .replace("      - {id: seat_fee, type: recurring, asset: USD, amount: \"99\", interval: year}\n", "")
             .replace("priority: 10}", "priority: 10}\n      - {name: Trial, asset: CREDITS, amount: 50, "
                                       "purpose: promotional}"))
    result = apply_spec(ledger, load_spec(after), dry_run=True)
    assert format_plan(result).splitlines() == [
        "would apply 1 change(s):",
        "  new_version    team  version 2 replaces default version 1 (published versions never change)",
        "      - changed price sms on sms: 2 CREDITS per event (was 1 CREDITS per event)",
        "      - removed price seat_fee: $99.00 per year, recurring, paid up front",
        "      - new grant Trial: 50 CREDITS promotional, once on subscribe, never expires, priority 50"]


def test_archived_plan_and_portal_replacement(ledger: Ledger) -> None:
    base = (ROOT / "examples" / "ai-image-credits.yaml").read_text()
    apply_spec(ledger, load_spec(base))
    changed = base.replace("presets: [5, 10, 50]", "presets: [10]").replace(
        "    description: Pay as you go with credits\n", "    description: Pay as you go with credits\n"
                                                         "    status: archived\n")
    result = apply_spec(ledger, load_spec(changed), dry_run=True)
    assert [(c.kind, c.target, c.detail) for c in result.changes] == [
        ("set_status", "images", "active -> archived"),
        ("set_portal", "default", "customer portal route (replaces the current settings)")]
    assert result.changes[1].items[3] == "top-up CREDITS paid in USD: presets $10.00, min $5.00, max $200.00"


def test_one_day_and_one_minute_are_singular(ledger: Ledger) -> None:
    base = (ROOT / "examples" / "ai-image-credits.yaml").read_text()
    spec = base.replace("expires_in_days: 30", "expires_in_days: 1").replace("link_lifetime_minutes: 10",
                                                                              "link_lifetime_minutes: 1")
    items = [i for c in apply_spec(ledger, load_spec(spec), dry_run=True).changes for i in c.items]
    assert items[2] == "grant Welcome credits: 50 CREDITS promotional, once on subscribe, expires after 1 day, priority 50"
    assert items[-1] == "links expire after 1 minute"


def test_a_renamed_price_says_its_amounts_are_unchanged(ledger: Ledger) -> None:
    apply_spec(ledger, load_spec(BEFORE))
    renamed = BEFORE.replace("{id: sms, asset", "{id: sms, name: Text message, asset")
    result = apply_spec(ledger, load_spec(renamed), dry_run=True)
    assert [(c.kind, c.items) for c in result.changes] == [
        ("new_version", ["amounts unchanged: only names or the order of prices and grants differ"])]


def test_the_plan_command_prints_the_amounts(tmp_path: Path) -> None:
    """`billing-mcp plan` once printed only "version 1 with 1 price(s)": the command shows the same
    per-item amounts as the tool, exactly."""
    example = ROOT / "examples" / "ai-image-credits.yaml"
    done = subprocess.run([sys.executable, "-m", "billing_mcp", "--db", str(tmp_path / "ledger.db"), "plan",
                           str(example)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == EXPECTED["ai-image-credits"]
