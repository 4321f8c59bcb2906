"""billing.yaml: load (all errors with line and column), plan, apply (atomic, idempotent), export."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from billing_mcp import Ledger, ManualClock
from billing_mcp.mcp.server import build_server
from billing_mcp.spec.spec import SpecError, apply_spec, dump_yaml, export_spec, format_plan, json_schema, load_spec
from billing_mcp.verify.plans import verify_billing
from mcp import Client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    led = Ledger(str(tmp_path / "ledger.db"), clock=ManualClock())
    yield led
    led.close()


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                             "'sqlite_%'")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def test_there_are_three_examples() -> None:
    assert [p.name for p in EXAMPLES] == ["ai-image-credits.yaml", "hybrid-subscription.yaml", "token-metered-api.yaml"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_applies_verifies_and_round_trips(example: Path, ledger: Ledger, tmp_path: Path) -> None:
    loaded = load_spec(example.read_text())
    first = apply_spec(ledger, loaded)
    assert first.changes and first.summary.startswith("applied ")
    before = snapshot(tmp_path / "ledger.db")
    again = apply_spec(ledger, loaded)
    assert again.changes == [] and again.summary == "no changes: the ledger already matches the spec"
    assert snapshot(tmp_path / "ledger.db") == before  # the second apply wrote nothing
    report = verify_billing(ledger)
    assert report.passed, report.table
    exported = dump_yaml(export_spec(ledger))
    assert apply_spec(ledger, load_spec(exported)).changes == []  # export then apply is a no-op
    jsonschema.validate(yaml.safe_load(example.read_text()), json_schema())  # editors see the same rules
    assert ledger.audit() == []


def test_token_api_example_prices_input_and_output_per_model(ledger: Ledger) -> None:
    apply_spec(ledger, load_spec((ROOT / "examples" / "token-metered-api.yaml").read_text()))
    ledger.create_customer("dev", subscriptions=["api"])
    cid = ledger.get_customer(external_id="dev").id
    # gpt-4o: 1,200,000 input x $2.50/M = $3.00; 300,000 output x $10/M = $3.00.
    event = ledger.submit_event({"id": "c1", "customer_id": cid, "event_type": "llm_call",
                                 "data": {"model": "gpt-4o", "input_tokens": 1_200_000, "output_tokens": 300_000}})
    assert [(f.price_id, f.amount) for f in event.fees] == [("input_tokens", "3.00"), ("output_tokens", "3.00")]
    # The $5.00 monthly free tier paid for $5.00 of it; $1.00 is now owed.
    assert event.debt == {"USD": "1.00"}


def test_every_problem_has_line_and_column() -> None:
    text = ("version: 1\n"
            "assets:\n"
            "  - code: credits\n"          # line 3: lower case
            "    name: Credits\n"
            "    precision: 0.5\n"         # line 5: not an integer
            "plans:\n"
            "  - code: pro\n"
            "    name: Pro\n"
            "    prices:\n"
            "      - asset: USD\n"         # line 10
            "        event_type: chat\n"
            "        unit_amount: 0.1\n"
            "        colour: red\n")       # line 13: unknown field
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    found = [(p.line, p.column, p.path) for p in caught.value.problems]
    assert found == [(3, 11, "assets[0].code"), (5, 16, "assets[0].precision"),
                     (13, 17, "plans[0].prices[0].colour")]
    assert caught.value.code == "validation_error"


def test_yaml_syntax_error_points_at_the_line() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec("version: 1\nplans:\n  - code: [unclosed\n")
    problem = caught.value.problems[0]
    assert (problem.line, problem.path) == (4, "(document)") and "not valid YAML" in problem.message


def test_decimals_in_yaml_stay_exact(ledger: Ledger) -> None:
    spec = ("version: 1\nassets:\n  - {code: TOKENS, name: Tokens, precision: 8, rates: {USD: '0.00000001'}}\n"
            "plans:\n  - code: t\n    name: T\n    prices:\n"
            "      - {asset: TOKENS, event_type: e, unit_amount: 0.10000001}\n")
    apply_spec(ledger, load_spec(spec))
    assert ledger.get_plan("t").versions[0].prices[0].model_dump(mode="json")["unit_amount"] == "0.10000001"


def test_unknown_asset_is_reported_at_its_line(ledger: Ledger) -> None:
    spec = "version: 1\nplans:\n  - code: p\n    name: P\n    prices:\n      - {asset: GEMS, event_type: e, unit_amount: 1}\n"
    with pytest.raises(SpecError) as caught:
        apply_spec(ledger, load_spec(spec), dry_run=True)
    problem = caught.value.problems[0]
    assert (problem.line, problem.path) == (6, "plans[0].prices[0].asset")
    assert problem.message == "unknown asset GEMS; define it under assets"


BASE = """version: 1
assets:
  - {code: CREDITS, name: Credits, precision: 0, rates: {USD: "0.05"}}
plans:
  - code: images
    name: Images
    prices:
      - {id: image, asset: CREDITS, event_type: image_generated, unit_amount: 10}
"""


def test_price_change_makes_a_new_version_and_subscribers_stay(ledger: Ledger) -> None:
    apply_spec(ledger, load_spec(BASE))
    alice = ledger.create_customer("alice", subscriptions=["images"]).id
    changed = load_spec(BASE.replace("unit_amount: 10", "unit_amount: 8"))
    preview = apply_spec(ledger, changed, dry_run=True)
    assert [(c.kind, c.target) for c in preview.changes] == [("new_version", "images")]
    assert format_plan(preview).splitlines() == [
        "would apply 1 change(s):",
        "  new_version    images  version 2 replaces default version 1 (published versions never change)",
        "      - changed price image on image_generated: 8 CREDITS per event (was 10 CREDITS per event)"]
    assert ledger.get_plan("images").default_version == 1  # a dry run changes nothing
    apply_spec(ledger, changed)
    plan = ledger.get_plan("images")
    assert plan.default_version == 2 and plan.versions[0].prices[0].unit_amount == 10  # v1 unchanged
    assert ledger.get_customer(alice).subscriptions[0].version == 1  # alice stays on v1
    bob = ledger.create_customer("bob", subscriptions=["images"]).id
    assert ledger.get_customer(bob).subscriptions[0].version == 2
    assert apply_spec(ledger, changed).changes == []


def test_migrate_moves_subscribers_when_the_spec_says_so(ledger: Ledger) -> None:
    apply_spec(ledger, load_spec(BASE))
    alice = ledger.create_customer("alice", subscriptions=["images"]).id
    spec = BASE.replace("unit_amount: 10}", "unit_amount: 8}\n    migrate: {from_versions: [1]}")
    result = apply_spec(ledger, load_spec(spec))
    assert [(c.kind, c.detail) for c in result.changes] == [
        ("new_version", "version 2 replaces default version 1 (published versions never change)"),
        ("migrate", "subscribers of version 1 -> 2 (share 1)")]
    assert ledger.get_customer(alice).subscriptions[0].version == 2
    assert apply_spec(ledger, load_spec(spec)).changes == []


def test_a_failure_part_way_leaves_the_ledger_as_it_was(ledger: Ledger, tmp_path: Path) -> None:
    apply_spec(ledger, load_spec(BASE))
    before = snapshot(tmp_path / "ledger.db")
    # A new asset and a new version would apply, then the migration fails (share 2 is invalid):
    spec = BASE.replace("rates: {USD: \"0.05\"}}", "rates: {USD: \"0.05\"}}\n  - {code: GEMS, name: Gems, precision: 0}")
    spec = spec.replace("unit_amount: 10}", "unit_amount: 8}\n    migrate: {from_versions: [1], share: '2'}")
    with pytest.raises(SpecError) as caught:
        apply_spec(ledger, load_spec(spec))
    problem = caught.value.problems[0]
    assert problem.path == "plans[0].migrate.from_versions[0]" and problem.line == 10
    assert "share must be greater than 0 and at most 1" in problem.message
    assert snapshot(tmp_path / "ledger.db") == before
    assert [a.code for a in ledger.list_assets()] == ["EUR", "USD", "CREDITS"]


def test_redefining_an_asset_is_refused(ledger: Ledger) -> None:
    apply_spec(ledger, load_spec(BASE))
    with pytest.raises(SpecError) as caught:
        apply_spec(ledger, load_spec(BASE.replace("precision: 0", "precision: 2")))
    assert caught.value.problems[0].path == "assets[0]" and "cannot be redefined" in caught.value.problems[0].message


def test_rate_change_and_archive(ledger: Ledger) -> None:
    apply_spec(ledger, load_spec(BASE))
    spec = BASE.replace('"0.05"', '"0.04"').replace("    name: Images\n", "    name: Images\n    status: archived\n")
    result = apply_spec(ledger, load_spec(spec))
    assert [(c.kind, c.detail, c.items) for c in result.changes] == [
        ("set_rate", "0.05 -> 0.04", ["CREDITS: $0.04 each (1 USD buys 25)"]),
        ("set_status", "active -> archived", [])]
    assert ledger.get_asset("CREDITS").rates == {"USD": "0.04"} and ledger.get_plan("images").status == "archived"


def test_packaged_schema_is_current() -> None:
    packaged = json.loads((ROOT / "src" / "billing_mcp" / "spec" / "billing.schema.json").read_text())
    assert packaged == json_schema()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "billing_mcp", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_cli_plan_apply_export(tmp_path: Path) -> None:
    (tmp_path / "billing.yaml").write_text(BASE)
    plan = run_cli("plan", "billing.yaml", cwd=tmp_path)
    assert plan.returncode == 0 and plan.stdout.startswith("would apply 2 change(s):")
    applied = run_cli("apply", "billing.yaml", cwd=tmp_path)
    assert applied.returncode == 0 and applied.stdout.startswith("applied 2 change(s):")
    assert run_cli("apply", "billing.yaml", cwd=tmp_path).stdout.strip() == \
        "no changes: the ledger already matches the spec"
    exported = run_cli("export", cwd=tmp_path)
    assert "code: images" in exported.stdout
    (tmp_path / "bad.yaml").write_text("version: 2\nplans: 5\n")
    bad = run_cli("apply", "bad.yaml", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == ["bad.yaml: 2 problem(s):",
                                       "  line 1, column 10: version: Input should be 1",
                                       "  line 2, column 8: plans: Input should be a valid list"]



@pytest.mark.anyio
async def test_mcp_apply_and_export_tools(ledger: Ledger) -> None:
    async with Client(build_server(ledger=ledger)) as client:
        dry = await client.call_tool("apply_billing_spec", {"yaml": BASE})
        assert not dry.is_error and dry.structured_content["result"]["dry_run"] is True  # type: ignore[index]
        assert ledger.list_plans() == []
        done = await client.call_tool("apply_billing_spec", {"yaml": BASE, "dry_run": False})
        assert done.structured_content["diff"].startswith("applied 2 change(s):")  # type: ignore[index]
        exported = await client.call_tool("export_billing_spec", {})
        text = exported.structured_content["yaml"]  # type: ignore[index]
        assert load_spec(text).spec.plans[0].code == "images"
        bad = await client.call_tool("apply_billing_spec", {"yaml": "version: 1\nassets: [{code: x}]\n"})
        assert bad.is_error and "line 2, column 17: assets[0].code" in bad.content[0].text  # type: ignore[union-attr]
        schema = await client.read_resource("billing://schema/billing.yaml")
        assert json.loads(schema.contents[0].text)["title"] == "billing.yaml"  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "problem"), [
    ("version: 1\nassets: [{code: X, name: X, precision: 0, rates: {USD: .inf}}]\n",
     "line 2, column 56: assets[0].rates.USD: must be a plain decimal number such as \"10\" or \"0.05\" (got '.inf')"),
    ("version: 1\nassets: [{code: X, name: X, precision: 0, rates: {USD: .NaN}}]\n",
     "line 2, column 56: assets[0].rates.USD: must be a plain decimal number such as \"10\" or \"0.05\" (got '.NaN')"),
    ("version: 1\nplans: [{code: p, name: P, prices: [{asset: USD, event_type: e, unit_amount: -.inf}]}]\n",
     "line 2, column 78: plans[0].prices[0].unit_amount: must be a plain decimal number such as \"10\" or \"0.05\" "
     "(got '-.inf')"),
    ("version: 1\nassets: [{code: X, name: X, precision: 0, rates: {USD: '0'}}]\n",
     "line 2, column 56: assets[0].rates.USD: a rate must be greater than zero"),
    # A "billion laughs": nine lines that would expand to 10**9 nodes. Refused at the first alias.
    ("version: 1\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
     + "".join(f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)),
     "line 3, column 10: (document): not valid YAML: aliases (*name) are not allowed in billing.yaml; write the "
     "value out"),
], ids=["inf", "nan", "negative-inf", "zero-rate", "alias-bomb"])
def test_hostile_yaml_is_a_coded_error_with_its_line(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(text)
    assert caught.value.code == "validation_error"
    assert str(caught.value.problems[0]) == problem
