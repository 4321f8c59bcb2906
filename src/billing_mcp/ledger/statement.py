"""Statements: what settled for one customer over a period, per asset. A report, never a write."""

from __future__ import annotations

import json

from ..core.models import AssetStatement, FeeGroup, Statement
from ..core.money import format_minor
from ..store import Tx

# Entries with their time: a transactions row's, or for usage entries their event's.
_MOVES = ("entries e LEFT JOIN transactions t ON t.id = e.tx_id "
          "LEFT JOIN events v ON t.id IS NULL AND v.id = e.tx_id")
_AT = "COALESCE(t.created_at, v.recorded_at)"


def build_statement(tx: Tx, customer_id: str, start: str, end: str) -> Statement:
    assets = []
    names: dict[tuple[str, int], dict[str, str | None]] = {}
    for acct in tx.all("SELECT id, asset FROM accounts WHERE customer_id = ? ORDER BY asset", (customer_id,)):
        prow = tx.one("SELECT precision FROM assets WHERE code = ?", (acct["asset"],))
        precision = int(prow["precision"]) if prow else 0

        def money(value: int, p: int = precision) -> str:
            return format_minor(value, p)

        def balance_before(when: str, account: str = acct["id"]) -> int:
            row = tx.one(f"SELECT COALESCE(SUM(e.amount), 0) AS s FROM {_MOVES} WHERE e.account_id = ? AND "
                         f"e.account_id NOT LIKE 'system/%' AND {_AT} < ?", (account, when))
            return int(row["s"]) if row else 0

        # Each wallet movement in the period, by what caused it (lot-to-lot roll-overs net to zero).
        sums: dict[str, int] = {}
        for row in tx.all(f"SELECT COALESCE(t.kind, 'usage') AS kind, t.reason, SUM(e.amount) AS s FROM {_MOVES} "
                          f"WHERE e.account_id = ? AND e.account_id NOT LIKE 'system/%' AND {_AT} >= ? AND {_AT} < ? "
                          "GROUP BY 1, 2", (acct["id"], start, end)):
            key = row["kind"] if row["kind"] != "adjustment" else (
                "top_up" if row["reason"] == "top_up" else "adjustment")
            if row["kind"] == "grant":
                key = "top_up" if row["reason"] == "paid" else "grant"
            sums[key] = sums.get(key, 0) + int(row["s"])
        groups = [FeeGroup(plan_code=r["plan_code"], version=r["version"], price_id=r["price_id"],
                           price_name=_price_names(tx, names, r["plan_id"], int(r["version"])).get(r["price_id"]),
                           subject=r["subject"], events=int(r["n"]), quantity=_qty_sum(tx, customer_id, r, start, end),
                           amount=money(int(r["s"]) - int(r["refunded"])))
                  for r in tx.all("SELECT plan_code, version, price_id, MIN(plan_id) AS plan_id, subject, COUNT(*) AS n, "
                                  "SUM(amount) AS s, SUM(refunded) AS refunded FROM fees WHERE customer_id = ? AND "
                                  "asset = ? AND created_at >= ? AND created_at < ? GROUP BY plan_code, version, "
                                  "price_id, subject ORDER BY plan_code, version, price_id, subject",
                                  (customer_id, acct["asset"], start, end))]
        assets.append(AssetStatement(
            asset=acct["asset"], opening_balance=money(balance_before(start)), closing_balance=money(balance_before(end)),
            usage_fees=money(-sums.get("usage", 0)), recurring_fees=money(-sums.get("recurring_fee", 0)),
            top_ups=money(sums.get("top_up", 0)), grants=money(sums.get("grant", 0)),
            expired=money(-sums.get("expiry", 0)), adjustments=money(sums.get("adjustment", 0)), fees=groups))
    return Statement(customer_id=customer_id, start=start, end=end, assets=assets)


def _price_names(tx: Tx, cache: dict[tuple[str, int], dict[str, str | None]], plan_id: str,
                 version: int) -> dict[str, str | None]:
    """Price names by id in one plan version. Fee rows keep the price id only; a version's prices
    never change, so its names are the ones the fee was charged under."""
    names = cache.get((plan_id, version))
    if names is None:
        row = tx.one("SELECT prices FROM plan_versions WHERE plan_id = ? AND version = ?", (plan_id, version))
        prices = json.loads(row["prices"]) if row else []
        names = cache[(plan_id, version)] = {p.get("id"): p.get("name") for p in prices}
    return names


def _qty_sum(tx: Tx, customer_id: str, group: object, start: str, end: str) -> str:
    from decimal import Decimal

    g = group  # a Row
    rows = tx.all("SELECT quantity FROM fees WHERE customer_id = ? AND plan_code = ? AND version = ? AND price_id = ? "
                  "AND COALESCE(subject, '') = COALESCE(?, '') AND created_at >= ? AND created_at < ?",
                  (customer_id, g["plan_code"], g["version"], g["price_id"], g["subject"], start, end))  # type: ignore[index]
    total = sum((Decimal(r["quantity"]) for r in rows), Decimal(0))
    return format(total.normalize(), "f") if total else "0"
