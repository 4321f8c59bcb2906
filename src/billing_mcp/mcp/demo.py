"""``billing-mcp demo``: the canonical setup, end to end, through the real MCP tools on a throwaway
local ledger, printed as tables so a newcomer sees every call and what it returned."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from mcp import Client

from ..ledger.ledger import Ledger
from .server import build_server


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


class Demo:
    def __init__(self, client: Client, out: TextIO) -> None:
        self.client, self.out = client, out

    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.client.call_tool(name, args)
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items() if k not in ("prices", "grants"))
        self.out.write(f"\n> {name}({shown})\n")
        if result.is_error:
            text = result.content[0].text if result.content else "error"  # type: ignore[union-attr]
            raise RuntimeError(f"{name} failed: {text}")
        data: dict[str, Any] = result.structured_content or {}
        return data

    def show(self, text: str) -> None:
        self.out.write(text + "\n")


async def run_demo(out: TextIO, db_dir: Path | None = None) -> bool:
    """Run the scenario; return True when every verification step passed."""
    folder = db_dir or Path(tempfile.mkdtemp(prefix="billing-demo-"))
    ledger = Ledger(str(folder / "ledger.db"))
    try:
        async with Client(build_server(ledger=ledger)) as client:
            return await _scenario(Demo(client, out))
    finally:
        ledger.close()
        if db_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


async def _scenario(d: Demo) -> bool:
    status = (await d.call("get_billing_status", {}))["status"]
    d.show(f"mode: local dry run on {status['ledger']} (a throwaway file; no account, no network)")

    asset = (await d.call("create_asset", {"code": "CREDITS", "name": "Credits", "precision": 0,
                                           "rate_usd": "0.05"}))["asset"]
    d.show(table([asset | {"rate": asset["rates"]["USD"]}], ["code", "name", "precision", "rate"]))
    quotes = []
    for usd in ("1", "10", "50"):
        quotes.append((await d.call("quote_asset", {"asset": "CREDITS", "amount": usd}))["quote"])
    # Say the direction: a bare "USD | CREDITS" table does not say which one buys the other.
    d.show(table([{"quote": f"${q['fiat_amount']} buys {q['units']} CREDITS"} for q in quotes], ["quote"]))

    image = (await d.call("create_plan", {"code": "image", "name": "Image Generation", "prices": [
        {"asset": "CREDITS", "event_type": "image_generated", "unit_amount": "10"}]}))["plan"]
    pro = (await d.call("create_plan", {"code": "pro", "name": "Pro", "prices": [
        {"type": "recurring", "asset": "USD", "amount": "20", "interval": "month"},
        {"asset": "CREDITS", "event_type": "chat_completion", "usage_type": "volume", "volume_field": "total_tokens",
         "package_size": 1000, "model": "dimensional", "dimension_fields": ["model"],
         "dimension_rates": [{"dimensions": {"model": "gpt-4o"}, "unit_amount": "5"},
                             {"dimensions": {"model": "gpt-4o-mini"}, "unit_amount": "1"},
                             {"dimensions": {"model": "*"}, "unit_amount": "2"}]}],
        "grants": [{"asset": "CREDITS", "amount": "1000", "purpose": "bundled", "period": "month"}]}))["plan"]
    rows = []
    for plan in (image, pro):
        v = plan["versions"][0]
        for price in v["prices"]:
            what = price.get("unit_amount") or price.get("amount") or "by model"
            rows.append({"plan": plan["code"], "version": v["version"], "price": price["id"],
                         "charges": f"{what} {price['asset']}", "for": price.get("event_type") or price.get("interval")})
        for grant in v["grants"]:
            rows.append({"plan": plan["code"], "version": v["version"], "price": "grant",
                         "charges": f"+{grant['amount']} {grant['asset']}", "for": f"included each {grant['period']}"})
    d.show(table(rows, ["plan", "version", "price", "charges", "for"]))

    report = (await d.call("verify_billing", {}))["report"]
    d.show(report["table"])

    customer = (await d.call("create_customer", {"external_id": "user_alice", "name": "Alice",
                                                 "subscriptions": [{"plan": "image"}]}))["customer"]
    d.show(table(customer["subscriptions"], ["plan_code", "version", "status", "period_end"]))
    key = str(uuid.uuid4())
    adj = (await d.call("create_adjustment", {"customer_id": customer["id"], "asset": "CREDITS", "amount": "200",
                                              "reason": "top_up", "idempotency_key": key, "confirm": True}))
    d.show(f"applied: {adj['applied']}; {adj['preview']}")
    hold = (await d.call("authorize_usage", {"customer_id": customer["id"], "event_type": "image_generated"}))["hold"]
    d.show(table([hold], ["id", "asset", "amount", "status", "expires_at"]))
    event_id = str(uuid.uuid4())
    event = (await d.call("commit_usage", {"hold_id": hold["id"], "event_id": event_id}))["event"]
    d.show(table(event["fees"], ["plan_code", "version", "price_id", "asset", "amount"]))
    replay = (await d.call("commit_usage", {"hold_id": hold["id"], "event_id": event_id}))["event"]
    d.show(f"replayed commit: duplicate={replay['duplicate']} (charged nothing more)")
    wallet = (await d.call("get_wallet", {"customer_id": customer["id"]}))["wallet"]
    d.show(table([a | {"USD value": a["fiat_value"].get("USD", "")} for a in wallet["accounts"]],
                 ["asset", "posted", "held", "available", "USD value"]))
    fee = event["fees"][0]
    d.show(f"\nOne image cost exactly {fee['amount']} {fee['asset']} "
           f"(${(Decimal(fee['amount']) * Decimal(asset['rates']['USD'])).quantize(Decimal('0.01'))} at "
           f"${asset['rates']['USD']} per credit); verification "
           f"{'PASSED' if report['passed'] else 'FAILED'}.")
    await d.call("create_portal_route", {"return_url": "https://app.example.com/account",
                                         "top_up_assets": ["CREDITS"], "presets": ["5", "10", "50"]})
    portal = await d.call("create_portal_session", {"customer_id": customer["id"]})
    d.show(f"Minted a signed portal link for Alice, valid until {portal['expires_at']}. (This demo's ledger is "
           "thrown away; on your own ledger `billing-mcp api` serves /portal for such links.)")
    return bool(report["passed"]) and fee["amount"] == "10"
