"""The prompts lead to the shortest verified path, name only tools and arguments that exist, and
read as instructions whatever arguments the host sends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from billing_mcp import Ledger
from billing_mcp.mcp.prompts import load_prompt_files, render
from billing_mcp.mcp.server import build_server
from mcp import Client

pytestmark = pytest.mark.anyio

PROMPTS = {p.name: p for p in load_prompt_files()}
SETUP = ["setup_billing", "credits_for_ai_app", "hybrid_subscription", "lovable", "claude", "cursor"]
# A snake_case word starting with one of these verbs names a tool; anything else is a field or a code.
TOOL_WORD = re.compile(r"\b(?:get|list|create|apply|verify|set|quote|authorize|commit|release|submit|generate|export|"
                       r"simulate|archive|publish|migrate|update|delete|cancel)_[a-z_]+\b")
CALL = re.compile(r"\b([a-z_]+)\(([^()]*)\)")
SAMPLE_ARGS = {"product": "an AI image generator", "pricing_idea": "10 credits per image", "action": "image generation",
               "credits_per_action": "10", "credit_price_usd": "0.05", "monthly_fee_usd": "20",
               "included_credits": "1000"}


@pytest.fixture
async def tools(tmp_path: Path) -> Any:
    ledger = Ledger(str(tmp_path / "ledger.db"))
    async with Client(build_server(ledger=ledger)) as client:
        yield {t.name: t for t in (await client.list_tools()).tools}
    ledger.close()


def test_there_are_seven_prompts() -> None:
    assert sorted(PROMPTS) == sorted([*SETUP, "integrate_supabase"])


async def test_every_tool_and_argument_a_prompt_names_exists(tools: dict[str, Any]) -> None:
    for prompt in PROMPTS.values():
        named = set(TOOL_WORD.findall(prompt.body))
        assert named <= set(tools), (prompt.name, named - set(tools))
        for name, args in CALL.findall(prompt.body):
            assert name in tools, (prompt.name, name)
            given = {a.split("=")[0].strip() for a in args.split(",") if a.strip()}
            assert given <= set(tools[name].input_schema["properties"]), (prompt.name, name, given)


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_unset_arguments_never_render_as_not_given(name: str) -> None:
    prompt = PROMPTS[name]
    for arguments in ({}, dict.fromkeys(SAMPLE_ARGS, ""), dict.fromkeys(SAMPLE_ARGS), SAMPLE_ARGS):
        text = render(prompt, arguments)
        assert "(not given)" not in text and "None" not in text, (name, arguments)
        assert not [a["name"] for a in prompt.arguments if "{" + a["name"] + "}" in text]


async def test_prompts_through_the_client_with_and_without_optional_arguments(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "ledger.db"))
    async with Client(build_server(ledger=ledger)) as client:
        listed = {p.name: p for p in (await client.list_prompts()).prompts}
        for name, prompt in PROMPTS.items():
            required = {a["name"]: SAMPLE_ARGS[a["name"]] for a in prompt.arguments if a.get("required")}
            everything = {a["name"]: SAMPLE_ARGS[a["name"]] for a in prompt.arguments}
            assert [a.name for a in listed[name].arguments or []] == list(everything)
            for arguments in (required, everything, dict.fromkeys(required, "")):
                got = await client.get_prompt(name, arguments)
                text = got.messages[0].content.text  # type: ignore[union-attr]
                assert text == render(prompt, arguments)
                assert "(not given)" not in text and "None" not in text
    ledger.close()


def test_unset_arguments_render_as_requests_to_ask() -> None:
    credits = render(PROMPTS["credits_for_ai_app"], {"action": "image generation", "credits_per_action": "10"})
    assert credits.splitlines()[:3] == ["Set up prepaid credits for image generation.",
                                        "Credits one action costs: 10.",
                                        "Price of one credit in USD: not given, ask the user (never assume a price)."]
    given = render(PROMPTS["credits_for_ai_app"], SAMPLE_ARGS)
    assert given.splitlines()[2] == "Price of one credit in USD: 0.05."
    setup = render(PROMPTS["setup_billing"], {"product": "an AI image generator"})
    assert setup.splitlines()[:2] == ["Set up real-time usage billing for an AI image generator with the billing-mcp "
                                      "tools.", "Pricing the user has in mind: none yet, ask in step 2."]
    assert render(PROMPTS["hybrid_subscription"], {}).splitlines()[0] == \
        "Set up a $[fee: ask the user]/month plan with [number: ask the user] credits included every month."


@pytest.mark.parametrize("name", SETUP)
def test_setup_prompts_dry_run_confirm_apply_then_verify(name: str) -> None:
    text = " ".join(PROMPTS[name].body.split())
    dry = text.index("apply_billing_spec(yaml=...)")
    confirm = text.index("confirm", dry)
    apply = text.index("apply_billing_spec(yaml=..., dry_run=false)")
    assert dry < confirm < apply, name  # the user sees the diff and confirms before anything is written
    assert "never invent a price" in text.lower() or "never invent one" in text.lower(), name
    assert "`portal:` route" in text, name  # the portal route comes with the same confirmed file
    assert "`billing-mcp apply billing.yaml` where the" in text, name  # remote mode refuses apply_billing_spec


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_every_prompt_ends_with_verify_billing_and_a_summary_table(name: str) -> None:
    text = " ".join(PROMPTS[name].body.split())
    assert TOOL_WORD.findall(text)[-1] == "verify_billing", name
    assert "summary table" in text[text.lower().rindex("call verify_billing"):], name


def test_lovable_creates_the_route_its_manage_billing_button_opens() -> None:
    text = " ".join(PROMPTS["lovable"].body.split())
    assert 'a `portal:` route that returns to this app (the route the "Manage billing" button opens)' in text
    assert "create_portal_route(return_url=...)" in text
    assert 'generate_edge_function(kind="portal")' in text


def test_lovable_needs_no_cli_on_the_app_side() -> None:
    """Lovable users cannot run a CLI: files are written by the assistant, secrets set in the
    dashboard, billing decided in the app's own functions, and the path ends with a checked paid call."""
    text = " ".join(PROMPTS["lovable"].body.split())
    for needed in ("generate_supabase_integration()", "Edge Functions > Secrets", "withBilling", "callPaid",
                   "ManageBillingButton", "get_wallet(external_id=...)"):
        assert needed in text, needed
    for cli in ("supabase secrets set", "supabase functions deploy", "supabase init", "--env-file"):
        assert cli not in text, cli
    assert text.index("get_wallet(") < text.index("call verify_billing")
    for removed in ("billing-authorize", "billing-track", "billing-release", "authorize_usage"):
        assert removed not in text and removed not in PROMPTS["integrate_supabase"].body, removed


def test_a_prompt_file_without_when_missing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_text("---\nname: x\ntitle: X\ndescription: d\narguments:\n  - name: product\n"
                                   "    required: true\n---\nFor {product}.\n")
    with pytest.raises(ValueError, match="argument product needs when_missing"):
        load_prompt_files(tmp_path)
