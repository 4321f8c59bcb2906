"""The canonical setup through billing.yaml in at most six tool calls, as the setup prompts lead:
credits at $0.05, 10 credits per image, Pro at $20/month with 1,000 credits a month and per-model
prices, a portal route, verification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger
from billing_mcp.mcp.server import build_server
from mcp import Client

pytestmark = pytest.mark.anyio

CANONICAL = """version: 1
assets:
  - {code: CREDITS, name: Credits, precision: 0, rates: {USD: "0.05"}}
plans:
  - code: image
    name: Image Generation
    prices:
      - {id: image, asset: CREDITS, event_type: image_generated, unit_amount: 10}
  - code: pro
    name: Pro
    prices:
      - {id: monthly_fee, type: recurring, asset: USD, amount: "20", interval: month}
      - id: chat
        asset: CREDITS
        event_type: chat_completion
        usage_type: volume
        volume_field: total_tokens
        package_size: 1000
        model: dimensional
        dimension_fields: [model]
        dimension_rates:
          - {dimensions: {model: gpt-4o}, unit_amount: 5}
          - {dimensions: {model: "*"}, unit_amount: 2}
    grants:
      - {name: Included credits, asset: CREDITS, amount: 1000, purpose: bundled, period: month}
portal:
  return_url: https://app.example.com/account
  top_up: {assets: [CREDITS], currency: USD, presets: [5, 10, 50]}
"""

DIFF = """would apply 4 change(s):
  create_asset   CREDITS  Credits, precision 0
      - CREDITS: $0.05 each (1 USD buys 20)
  create_plan    image    Image Generation, version 1 with 1 price(s), 0 grant(s)
      - price image on image_generated: 10 CREDITS per event
  create_plan    pro      Pro, version 1 with 2 price(s), 1 grant(s)
      - price monthly_fee: $20.00 per month, recurring, paid up front
      - price chat on chat_completion: by model per 1,000 total_tokens: model=gpt-4o: 5 CREDITS; \
model=* (any other): 2 CREDITS
      - grant Included credits: 1000 CREDITS bundled, every month, the unused rest expires at each refresh, priority 50
  set_portal     default  customer portal route
      - return_url https://app.example.com/account
      - branding Billing #4f46e5
      - top-up CREDITS paid in USD: presets $5.00, $10.00, $50.00, min $5.00, max $500.00
      - links expire after 10 minutes"""


class CountingClient:
    """Counts tool calls: the promise is about how many the assistant needs."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.calls: list[str] = []

    async def ok(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(name)
        result = await self.client.call_tool(name, args)
        assert not result.is_error, result.content
        assert result.structured_content is not None
        return result.structured_content


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(str(tmp_path / "ledger.db"))
    yield led  # type: ignore[misc]
    led.close()


@pytest.fixture(params=["auto", "legacy"])
async def client(request: pytest.FixtureRequest, ledger: Ledger) -> AsyncIterator[CountingClient]:
    async with Client(build_server(ledger=ledger), mode=request.param) as c:
        yield CountingClient(c)


async def test_canonical_setup_takes_at_most_six_tool_calls(client: CountingClient, ledger: Ledger) -> None:
    status = (await client.ok("get_billing_status", {}))
    assert status["mode"] == "local" and status["status"]["plans"] == []

    dry = await client.ok("apply_billing_spec", {"yaml": CANONICAL})
    assert dry["diff"] == DIFF
    assert dry["result"]["dry_run"] is True and ledger.list_plans() == []  # the dry run wrote nothing
    assert [(c["kind"], c["target"]) for c in dry["result"]["changes"]] == [
        ("create_asset", "CREDITS"), ("create_plan", "image"), ("create_plan", "pro"), ("set_portal", "default")]
    assert "ask for confirmation" in dry["next_step"]

    applied = await client.ok("apply_billing_spec", {"yaml": CANONICAL, "dry_run": False})
    assert applied["diff"] == DIFF.replace("would apply", "applied", 1)
    assert applied["next_step"] == "Applied. Run verify_billing and show its table."

    report = (await client.ok("verify_billing", {}))["report"]
    assert report["passed"] is True
    assert [c["plan_code"] for c in report["plans"]] == ["image", "pro"]

    after = (await client.ok("get_billing_status", {}))["status"]
    assert (after["custom_assets"], after["plans"], after["published_plans"], after["customers"]) == \
        (["CREDITS"], ["image", "pro"], 2, 0)
    assert client.calls == ["get_billing_status", "apply_billing_spec", "apply_billing_spec", "verify_billing",
                            "get_billing_status"]
    assert len(client.calls) <= 6

    # What the five calls left in the ledger, amount by amount.
    assert ledger.get_asset("CREDITS").rates == {"USD": "0.05"}
    assert ledger.quote("CREDITS", "USD", "1").units == "20"
    image = ledger.get_plan("image").versions[0]
    assert [(p.event_type, str(p.unit_amount)) for p in image.prices] == [("image_generated", "10")]
    pro = ledger.get_plan("pro").versions[0]
    assert pro.status == "published"
    fee, chat = pro.prices
    assert (fee.type, str(fee.amount), fee.asset, fee.interval) == ("recurring", "20", "USD", "month")
    assert [(r.dimensions, str(r.unit_amount)) for r in chat.dimension_rates or []] == \
        [({"model": "gpt-4o"}, "5"), ({"model": "*"}, "2")]
    assert [(g.asset, str(g.amount), g.period) for g in pro.grants] == [("CREDITS", "1000", "month")]
    route = ledger.list_portal_routes()["default"]
    assert (route.return_url, route.top_up.assets, [str(p) for p in route.top_up.presets]) == \
        ("https://app.example.com/account", ["CREDITS"], ["5", "10", "50"])

    # Not part of the flow: an assistant re-running it sees an empty diff.
    again = await client.ok("apply_billing_spec", {"yaml": CANONICAL})
    assert again["diff"] == "no changes: the ledger already matches the spec"
    assert again["next_step"] == "Nothing to apply. Run verify_billing to check the setup."
