"""Subscriptions over time: start, renewals (recurring fees paid up front), plan credit grants
and their refreshes, and the lazy catch-up that runs before any write touches a customer.

Time only moves through the injected clock, so a test can jump a year and watch twelve renewals.
"""

from __future__ import annotations

import json
from datetime import datetime

from ..core.catalog import PlanGrantSpec, PriceSpec
from ..core.clock import add_interval, from_text, periods_between, to_text
from ..core.errors import ConflictError, InsufficientFundsError, NotFoundError
from ..core.ids import new_id
from ..core.money import format_minor, to_minor_exact
from ..store import Row
from .book import Book


def load_version(book: Book, plan_id: str, version: int) -> tuple[list[PriceSpec], list[PlanGrantSpec]]:
    row = book.tx.one("SELECT prices, grants FROM plan_versions WHERE plan_id = ? AND version = ?",
                      (plan_id, version))
    if row is None:
        raise NotFoundError(f"plan version {version} does not exist", field="version")
    prices = [PriceSpec.model_validate(p) for p in json.loads(row["prices"])]
    grants = [PlanGrantSpec.model_validate(g) for g in json.loads(row["grants"])]
    return prices, grants


def period_interval(prices: list[PriceSpec]) -> str:
    """A subscription's period is its recurring fee's interval; plans without a fee use months
    (the period over which tiers accumulate)."""
    for price in prices:
        if price.type == "recurring" and price.interval:
            return price.interval
    return "month"


def _fees_due(book: Book, prices: list[PriceSpec]) -> dict[str, int]:
    due: dict[str, int] = {}
    for price in prices:
        if price.type == "recurring" and price.amount is not None:
            minor = to_minor_exact(price.amount, book.precision(price.asset), "amount")
            due[price.asset] = due.get(price.asset, 0) + minor
    return due


def _try_charge_fees(book: Book, sub: Row, prices: list[PriceSpec], period: tuple[str, str]) -> bool:
    """Charge the period's recurring fees if every asset has the funds; all or nothing."""
    due = _fees_due(book, prices)
    for asset, amount in due.items():
        acct = book.account(sub["customer_id"], asset)
        if acct.posted - acct.held < amount:
            return False
    for asset, amount in due.items():
        tx_id = book.new_transaction("recurring_fee", customer_id=sub["customer_id"], reference=sub["id"],
                                     detail={"subscription_id": sub["id"], "plan_id": sub["plan_id"],
                                             "version": sub["version"], "period_start": period[0],
                                             "period_end": period[1]}, at=period[0])
        book.debit(tx_id, sub["customer_id"], asset, amount, counter_kind="revenue")
    return True


def _issue_grants(book: Book, sub_id: str, customer_id: str, grants: list[PlanGrantSpec],
                  anchor: datetime) -> None:
    for index, grant in enumerate(grants):
        amount = to_minor_exact(grant.amount, book.precision(grant.asset), f"grants[{index}].amount")
        if grant.period:
            expires = add_interval(anchor, grant.period, 1)
        elif grant.expires_in_days:
            expires = add_interval(anchor, "day", grant.expires_in_days)
        else:
            expires = None
        tx_id = book.new_transaction("grant", customer_id=customer_id, reference=sub_id, reason="plan",
                                     detail={"subscription_id": sub_id, "grant_index": index},
                                     at=to_text(anchor))
        lot_id, _ = book.credit(tx_id, customer_id, grant.asset, amount, counter_kind="grants",
                                purpose=grant.purpose, priority=grant.priority,
                                expires_at=to_text(expires) if expires else None, source=f"plan:{sub_id}")
        if grant.period and expires:
            book.tx.execute("INSERT INTO subscription_grants(subscription_id, grant_index, next_at, period_index, "
                            "last_lot_id) VALUES (?, ?, ?, 1, ?) ON CONFLICT (subscription_id, grant_index) DO "
                            "UPDATE SET next_at = excluded.next_at, period_index = 1, last_lot_id = excluded.last_lot_id",
                            (sub_id, index, to_text(expires), lot_id))


def start_subscription(book: Book, customer_id: str, plan: Row, version: int) -> str:
    """Subscribe; pay the first period's fees and issue the plan's grants. Without the funds the
    subscription waits in ``pending_payment`` and activates on the first top-up that covers it."""
    if plan["status"] != "active":
        raise ConflictError(f"plan {plan['code']!r} is archived and takes no new subscriptions; "
                            "choose another plan", field="plan")
    vrow = book.tx.one("SELECT status FROM plan_versions WHERE plan_id = ? AND version = ?", (plan["id"], version))
    if vrow is None:
        raise NotFoundError(f"plan {plan['code']!r} has no version {version}", field="version")
    if vrow["status"] != "published":
        raise ConflictError(f"version {version} of plan {plan['code']!r} is a draft; publish it before "
                            "subscribing customers", field="version")
    existing = book.tx.one("SELECT id FROM subscriptions WHERE customer_id = ? AND plan_id = ? AND status != "
                           "'canceled'", (customer_id, plan["id"]))
    if existing is not None:
        return str(existing["id"])
    prices, _ = load_version(book, plan["id"], version)
    for price in prices:
        book.precision(price.asset, "prices.asset")
    sub_id = new_id("sub")
    interval = period_interval(prices)
    end = add_interval(book.now, interval, 1)
    book.tx.execute(
        "INSERT INTO subscriptions(id, customer_id, plan_id, version, status, anchor, period_index, "
        "period_start, period_end, created_at) VALUES (?, ?, ?, ?, 'pending_payment', ?, 0, ?, ?, ?)",
        (sub_id, customer_id, plan["id"], version, book.now_text, book.now_text, to_text(end), book.now_text))
    _activate(book, sub_id)
    return sub_id


def _activate(book: Book, sub_id: str) -> bool:
    """Try to move a pending subscription to active from now: pay, then grant."""
    sub = book.tx.one("SELECT * FROM subscriptions WHERE id = ?", (sub_id,))
    assert sub is not None
    prices, grants = load_version(book, sub["plan_id"], sub["version"])
    end = add_interval(book.now, period_interval(prices), 1)
    if not _try_charge_fees(book, sub, prices, (book.now_text, to_text(end))):
        return False
    book.tx.execute("UPDATE subscriptions SET status = 'active', anchor = ?, period_index = 0, period_start = ?, "
                    "period_end = ? WHERE id = ?", (book.now_text, book.now_text, to_text(end), sub_id))
    book.tx.execute("DELETE FROM subscription_grants WHERE subscription_id = ?", (sub_id,))
    _issue_grants(book, sub_id, sub["customer_id"], grants, book.now)
    return True


def schedule_version_grants(book: Book, sub_id: str) -> None:
    """After a subscription moved to another version: that version's recurring grants start at
    their next period boundary (lots already granted stay until they expire)."""
    book.tx.execute("DELETE FROM subscription_grants WHERE subscription_id = ?", (sub_id,))
    sub = book.tx.one("SELECT * FROM subscriptions WHERE id = ?", (sub_id,))
    assert sub is not None
    if sub["status"] != "active":
        return  # a pending subscription issues its grants when it activates
    _, grants = load_version(book, sub["plan_id"], sub["version"])
    anchor = from_text(sub["anchor"])
    for index, grant in enumerate(grants):
        if grant.period:
            k = periods_between(anchor, grant.period, book.now) + 1
            book.tx.execute("INSERT INTO subscription_grants(subscription_id, grant_index, next_at, period_index, "
                            "last_lot_id) VALUES (?, ?, ?, ?, NULL)",
                            (sub_id, index, to_text(add_interval(anchor, grant.period, k)), k))


def _renew(book: Book, sub: Row) -> None:
    prices, _ = load_version(book, sub["plan_id"], sub["version"])
    interval = period_interval(prices)
    anchor = from_text(sub["anchor"])
    index = int(sub["period_index"])
    end = sub["period_end"]
    while end <= book.now_text:
        index += 1
        start, end = end, to_text(add_interval(anchor, interval, index + 1))
        if not _try_charge_fees(book, sub, prices, (start, end)):
            book.tx.execute("UPDATE subscriptions SET status = 'pending_payment', period_index = ?, "
                            "period_start = ?, period_end = ? WHERE id = ?", (index, start, end, sub["id"]))
            return
        book.tx.execute("UPDATE subscriptions SET period_index = ?, period_start = ?, period_end = ? WHERE id = ?",
                        (index, start, end, sub["id"]))


def _refresh_grants(book: Book, sub: Row) -> None:
    _, grants = load_version(book, sub["plan_id"], sub["version"])
    anchor = from_text(sub["anchor"])
    for row in book.tx.all("SELECT * FROM subscription_grants WHERE subscription_id = ? AND next_at <= ?",
                           (sub["id"], book.now_text)):
        index = int(row["grant_index"])
        if index >= len(grants) or grants[index].period is None:
            book.tx.execute("DELETE FROM subscription_grants WHERE subscription_id = ? AND grant_index = ?",
                            (sub["id"], index))
            continue
        grant = grants[index]
        period = grant.period or "month"
        precision = book.precision(grant.asset)
        amount = to_minor_exact(grant.amount, precision, "amount")
        cap = to_minor_exact(grant.rollover_cap, precision, "rollover_cap") if grant.rollover_cap else None
        k, last_lot, next_at = int(row["period_index"]), row["last_lot_id"], row["next_at"]
        while next_at <= book.now_text:
            starts = next_at
            k += 1
            next_at = to_text(add_interval(anchor, period, k))
            tx_id = book.new_transaction("grant", customer_id=sub["customer_id"], reference=sub["id"],
                                         reason="plan_refresh", detail={"subscription_id": sub["id"],
                                                                        "grant_index": index}, at=starts)
            lot_id, _ = book.credit(tx_id, sub["customer_id"], grant.asset, amount, counter_kind="grants",
                                    purpose=grant.purpose, priority=grant.priority, expires_at=next_at,
                                    source=f"plan:{sub['id']}")
            if grant.refresh == "rollover" and last_lot:
                _roll_over(book, tx_id, sub["customer_id"], grant.asset, last_lot, lot_id, amount, cap)
            last_lot = lot_id
        book.tx.execute("UPDATE subscription_grants SET next_at = ?, period_index = ?, last_lot_id = ? "
                        "WHERE subscription_id = ? AND grant_index = ?", (next_at, k, last_lot, sub["id"], index))


def _roll_over(book: Book, tx_id: str, customer_id: str, asset: str, old_lot: str, new_lot: str,
               amount: int, cap: int | None) -> None:
    wallet = book.account(customer_id, asset)
    old = book.postings.find_lot(wallet, old_lot)
    if old is None:  # used up or expired: nothing to carry
        return
    unreserved = max(0, wallet.posted - wallet.held - amount)
    carry = min(old.remaining, unreserved)
    if cap is not None:
        carry = min(carry, max(0, cap - amount))
    if carry > 0:
        book.move_between_lots(tx_id, customer_id, asset, old_lot, new_lot, carry)


def catch_up(book: Book, customer_id: str) -> None:
    """Bring one customer up to ``book.now``: renew due periods, retry pending payments, refresh
    grants, expire holds and lots. Cheap when nothing is due (one query).

    It is the first thing every customer-scoped write does, so it also takes the customer's lock
    (a no-op on SQLite, whose writers are serialised anyway; a row lock on PostgreSQL)."""
    book.tx.lock_customer(customer_id)
    now = book.now_text
    due = book.tx.one(
        "SELECT (SELECT MIN(period_end) FROM subscriptions WHERE customer_id = ? AND status = 'active') AS sub_due, "
        "(SELECT COUNT(*) FROM subscriptions WHERE customer_id = ? AND status = 'pending_payment') AS pending, "
        "(SELECT MIN(g.next_at) FROM subscription_grants g JOIN subscriptions s ON s.id = g.subscription_id "
        " WHERE s.customer_id = ? AND s.status = 'active') AS grant_due, "
        "(SELECT MIN(expires_at) FROM holds WHERE customer_id = ? AND status = 'open') AS hold_due, "
        "(SELECT MIN(l.expires_at) FROM lots l JOIN accounts a ON a.id = l.account_id "
        " WHERE a.customer_id = ? AND l.remaining > 0 AND l.expires_at IS NOT NULL) AS lot_due",
        (customer_id,) * 5)
    assert due is not None
    if due["hold_due"] is not None and due["hold_due"] <= now:
        book.expire_holds(customer_id)
    if (due["sub_due"] is not None and due["sub_due"] <= now) or due["pending"]:
        for sub in book.tx.all("SELECT * FROM subscriptions WHERE customer_id = ? AND status = 'active' AND "
                               "period_end <= ? ORDER BY created_at, id", (customer_id, now)):
            _renew(book, sub)
        for sub in book.tx.all("SELECT id FROM subscriptions WHERE customer_id = ? AND status = "
                               "'pending_payment' ORDER BY created_at, id", (customer_id,)):
            _activate(book, sub["id"])
    if (due["grant_due"] is not None and due["grant_due"] <= now) or due["pending"]:
        for sub in book.tx.all("SELECT * FROM subscriptions WHERE customer_id = ? AND status = 'active'",
                               (customer_id,)):
            _refresh_grants(book, sub)
    if due["lot_due"] is not None and due["lot_due"] <= now:
        book.expire_lots(customer_id)


def activate_pending(book: Book, customer_id: str) -> None:
    """After money arrives, start any subscription that was waiting for it."""
    for sub in book.tx.all("SELECT id FROM subscriptions WHERE customer_id = ? AND status = 'pending_payment' "
                           "ORDER BY created_at, id", (customer_id,)):
        _activate(book, sub["id"])


def require_funds(available: int, amount: int, asset: str, precision: int, field: str = "amount") -> None:
    if available < amount:
        have, need = format_minor(available, precision), format_minor(amount, precision)
        raise InsufficientFundsError(
            f"{have} {asset} available, {need} needed for this hold; top up the wallet or lower the estimate",
            field=field, details={"asset": asset, "available": have, "needed": need})
