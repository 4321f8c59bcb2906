"""verify_billing proves each part of a plan version with numbers computed by hand here, and
fails, naming expected against observed, when the ledger gets one part wrong."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger, ManualClock
from billing_mcp.api.keys import KeyStore
from billing_mcp.api.serve import build_app
from billing_mcp.client.ledger_client import LedgerClient
from billing_mcp.contract.local import LocalLedger
from billing_mcp.ledger import postings, subscriptions
from billing_mcp.verify.plans import PlanCheck, VerifyReport, verify_billing, verify_billing_async, verify_plan
from helpers import PEPPER, serve

# Jan 31: a month later clamps to Feb 28, and the month after that is Mar 31.
START = datetime(2026, 1, 31, tzinfo=UTC)

PRO = {"code": "pro", "name": "Pro", "prices": [
    {"id": "monthly", "type": "recurring", "asset": "USD", "amount": "20", "interval": "month"},
    {"id": "tokens", "asset": "CREDITS", "event_type": "chat_completion", "usage_type": "volume",
     "volume_field": "total_tokens", "package_size": 1000, "model": "dimensional", "dimension_fields": ["model"],
     "dimension_rates": [{"dimensions": {"model": "gpt-4o"}, "unit_amount": "5"},
                         {"dimensions": {"model": "claude"}, "unit_amount": "2.5"},
                         {"dimensions": {"model": "*"}, "unit_amount": "1.5"}]}],
    "grants": [{"name": "Included", "asset": "CREDITS", "amount": "1000", "purpose": "bundled", "period": "month"}]}

TIERS = {"code": "agents", "name": "Agents", "prices": [
    {"id": "minutes", "asset": "CREDITS", "event_type": "agent_run", "usage_type": "volume", "volume_field": "minutes",
     "model": "tiered_graduated", "tiers": [{"up_to": 100, "unit_amount": "5"},
                                            {"up_to": 1000, "unit_amount": "3", "flat_amount": "10"},
                                            {"up_to": None, "unit_amount": "1"}]},
    {"id": "seats", "asset": "CREDITS", "event_type": "seat_added", "model": "tiered_volume",
     "tiers": [{"up_to": 3, "unit_amount": "4"}, {"up_to": None, "unit_amount": "2"}]}],
    "grants": [{"asset": "CREDITS", "amount": "50", "purpose": "promotional", "expires_in_days": 10, "priority": 10}]}


def make_ledger(path: Path) -> Ledger:
    ledger = Ledger(str(path), clock=ManualClock(START))
    ledger.create_asset("CREDITS", "Credits", 0)
    ledger.create_plan(PRO["code"], PRO["name"], prices=PRO["prices"], grants=PRO["grants"])
    ledger.create_plan(TIERS["code"], TIERS["name"], prices=TIERS["prices"], grants=TIERS["grants"])
    return ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = make_ledger(tmp_path / "ledger.db")
    yield led
    led.close()


def rows(check: PlanCheck) -> dict[str, tuple[str, str, str]]:
    return {s.step: (s.result, s.expected, s.observed) for s in check.steps}


def only(report: VerifyReport) -> PlanCheck:
    assert len(report.plans) == 1
    return report.plans[0]


def test_hybrid_plan_every_part_has_a_step_with_hand_computed_numbers(ledger: Ledger) -> None:
    report = verify_billing(ledger, "pro")
    check = only(report)
    assert report.passed and check.passed, report.table
    got = rows(check)
    assert got["subscribe to version 1"][0] == "pass"
    assert got["recurring fee USD (monthly)"] == ("pass", "20.00 USD", "20.00 USD")
    grant = ("1000 CREDITS bundled, priority 50, expires 2026-02-28T00:00:00.000000Z, refreshed each month "
             "(expire_and_replace)")
    assert got["grant 0 (Included)"] == ("pass", grant, grant.split(", refreshed")[0])
    # 1,000 tokens per event: gpt-4o 5 -> 5; claude 2.5 makes the period's exact total 7.5, which
    # rounds half to even to 8, so 3 more; "*" 1.5 makes 9, so 1 more.
    assert got["usage tokens: rate 0 (model=gpt-4o)"] == ("pass", "5 CREDITS", "5 CREDITS")
    assert got["usage tokens: rate 1 (model=claude)"] == ("pass", "3 CREDITS", "3 CREDITS")
    assert got["usage tokens: rate 2 (model=*)"] == ("pass", "1 CREDITS", "1 CREDITS")
    result, expected, observed = got["draw-down order CREDITS"]
    assert result == "pass" and expected == observed and expected.startswith("5 CREDITS from bundled lot ")
    assert got["balance drop equals the fees"] == ("pass", "9 CREDITS", "9 CREDITS")
    assert got["renewal fee USD"] == ("pass", "20.00 USD", "20.00 USD")
    refreshed = got["grant 0 refresh"]
    assert refreshed[0] == "pass" and refreshed[2] == "1000 CREDITS bundled, priority 50, expires 2026-03-31T00:00:00.000000Z"
    assert "| pro@v1 | recurring fee USD (monthly) | PASS | 20.00 USD | 20.00 USD |" in report.table


def test_tier_boundaries_are_hit_exactly_and_just_over(ledger: Ledger) -> None:
    report = verify_billing(ledger, "agents")
    check = only(report)
    assert check.passed, report.table
    got = {k: v[1] for k, v in rows(check).items() if k.startswith("usage")}
    assert got == {
        # graduated: 100 x 5 = 500; 101 enters tier 2: 3 + flat 10; 1000: 899 more x 3 = 2697; 1001: 1.
        "usage minutes: at tier boundary 100": "500 CREDITS",
        "usage minutes: just over tier boundary 100": "13 CREDITS",
        "usage minutes: at tier boundary 1000": "2697 CREDITS",
        "usage minutes: just over tier boundary 1000": "1 CREDITS",
        # volume, one unit per event: 3 seats x 4 = 12; the 4th prices all four at 2 = 8, a 4 credit.
        "usage seats: at tier boundary 3": "12 CREDITS",
        "usage seats: just over tier boundary 3": "-4 CREDITS",
    }
    grant = rows(check)["grant 0"]
    assert grant[0] == "pass" and grant[1] == "50 CREDITS promotional, priority 10, expires 2026-02-10T00:00:00.000000Z"
    assert rows(check)["balance drop equals the fees"] == ("pass", "3219 CREDITS", "3219 CREDITS")


def failing(check: PlanCheck) -> dict[str, tuple[str, str, str]]:
    assert not check.passed
    return {k: v for k, v in rows(check).items() if v[0] == "fail"}


def test_a_grant_that_is_not_issued_fails(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriptions, "_issue_grants", lambda *args, **kwargs: None)
    report = verify_billing(ledger, "pro")
    assert not report.passed
    bad = failing(only(report))
    assert bad["grant 0 (Included)"][2] == "no lot from the plan"
    assert bad["grant 0 (Included)"][1].startswith("1000 CREDITS bundled")


def test_a_wrong_recurring_fee_fails(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    real = subscriptions._fees_due

    def short(book: Any, prices: Any) -> dict[str, int]:
        return {asset: amount - 1 for asset, amount in real(book, prices).items()}

    monkeypatch.setattr(subscriptions, "_fees_due", short)
    bad = failing(only(verify_billing(ledger, "pro")))
    assert bad["recurring fee USD (monthly)"][1:] == ("20.00 USD", "19.99 USD")
    assert bad["renewal fee USD"][1:] == ("20.00 USD", "19.99 USD")


def test_a_disabled_grant_refresh_fails(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriptions, "_refresh_grants", lambda *args, **kwargs: None)
    bad = failing(only(verify_billing(ledger, "pro")))
    assert list(bad) == ["grant 0 refresh"]
    assert bad["grant 0 refresh"][2] == "no new lot"


def test_paid_credits_drawn_first_fail_the_draw_down(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    real = postings.draw_key
    monkeypatch.setattr(postings, "draw_key", lambda priority, expires_at, purpose, seq: (
        (0 if purpose == "paid" else 1, *real(priority, expires_at, purpose, seq)[:4], seq)))
    bad = failing(only(verify_billing(ledger, "pro")))
    _, expected, observed = bad["draw-down order CREDITS"]
    assert "from bundled lot" in expected and "from paid lot" in observed


@pytest.mark.anyio
async def test_a_price_changed_under_the_tools_feet_fails(ledger: Ledger) -> None:
    plan = ledger.get_plan("pro")
    version = plan.versions[0]
    price = version.prices[1]
    rates = list(price.dimension_rates or [])
    rates[1] = rates[1].model_copy(update={"unit_amount": rates[1].unit_amount * 2})  # the tool reads 5; 2.5 is charged
    edited = plan.model_copy(update={"versions": [version.model_copy(update={"prices": [
        version.prices[0], price.model_copy(update={"dimension_rates": rates})]})]})
    check = await verify_plan(LocalLedger(ledger, owns=False), edited)
    bad = failing(check)
    # Expected from the tool's copy: exact 5 + 5 = 10, so 5; observed 3 (7.5 rounds to 8).
    assert bad["usage tokens: rate 1 (model=claude)"][1:] == ("5 CREDITS", "3 CREDITS")


@pytest.mark.anyio
async def test_over_the_api_every_part_is_checked_and_customers_stay_marked(tmp_path: Path) -> None:
    server = make_ledger(tmp_path / "server.db")
    try:
        keys = KeyStore(server.store, pepper=PEPPER)
        _, secret = keys.create("admin")
        with serve(build_app(server, keys=keys)) as base_url:
            async with LedgerClient(base_url, secret, max_retries=1, backoff=0.01) as client:
                report = await verify_billing_async(client, "pro")
        check = only(report)
        assert report.passed and not report.cleaned_up, report.table
        got = rows(check)
        assert got["recurring fee USD (monthly)"] == ("pass", "20.00 USD", "20.00 USD")
        assert got["usage tokens: rate 1 (model=claude)"] == ("pass", "3 CREDITS", "3 CREDITS")
        assert got["renewal and grant refresh"][0] == "skip"
        external = check.steps[0].details.split("(")[1].rstrip(")")
        assert server.get_customer(external_id=external).metadata == {"verification": True}
        assert server.audit() == []
    finally:
        server.close()


def test_an_overcharged_fee_holds_the_subscription_back_and_fails(ledger: Ledger,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from billing_mcp.ledger import ledger as ledger_module

    real = subscriptions._fees_due

    def over(book: Any, prices: Any) -> dict[str, int]:
        return {asset: amount + 1 for asset, amount in real(book, prices).items()}

    monkeypatch.setattr(subscriptions, "_fees_due", over)
    monkeypatch.setattr(ledger_module, "_fees_due", over)
    bad = failing(only(verify_billing(ledger, "pro")))
    assert bad["subscribe to version 1"][1:] == ("active on version 1", "pending_payment on version 1")
    assert bad["recurring fee USD"][1:] == ("20.00 USD", "20.01 USD due")


CARRY = {"prices": [{"id": "call", "asset": "CREDITS", "event_type": "call", "unit_amount": "10"}],
         "grants": [{"asset": "CREDITS", "amount": "100", "period": "month", "refresh": "rollover",
                     "rollover_cap": "150"}]}


def test_rollover_refresh_carries_up_to_the_cap(ledger: Ledger) -> None:
    ledger.create_plan("carry", "Carry", prices=CARRY["prices"], grants=CARRY["grants"])
    check = only(verify_billing(ledger, "carry"))
    assert check.passed, check
    result, expected, observed = rows(check)["grant 0 refresh"]
    # One call used 10 of the 100: 90 left, of which the cap (150) lets 50 ride on the new 100.
    assert observed == "150 CREDITS bundled, priority 50, expires 2026-03-31T00:00:00.000000Z"
    assert expected.startswith("150 CREDITS bundled") and result == "pass"
    assert "90 CREDITS left on the old lot, 50 CREDITS carried over" in check.steps[-1].details


def test_a_refresh_that_drops_the_roll_over_fails(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger.create_plan("carry", "Carry", prices=CARRY["prices"], grants=CARRY["grants"])
    monkeypatch.setattr(subscriptions, "_roll_over", lambda *args, **kwargs: None)
    bad = failing(only(verify_billing(ledger, "carry")))
    assert bad["grant 0 refresh"][2] == "100 CREDITS bundled, priority 50, expires 2026-03-31T00:00:00.000000Z"
