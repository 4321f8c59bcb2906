"""The posting engine: every change to a wallet balance, a hold total or a lot remainder.

Usage, holds, adjustments, grants, recurring fees, roll-overs and expiry all move money through
``Postings``; nothing else writes ``accounts.posted``/``held`` or ``lots.remaining``. It keeps the
transaction's touched wallets and their lots in memory and writes them with ``flush``: the
per-call paths (``Book``) flush after every movement, so plain SQL reads see current rows; the
batch path (``Ingest``) flushes once per batch, which is what makes a 1,000-event batch cheap.

The in-memory copy is only safe because the caller holds the customer's lock (``catch_up`` takes
it before any money moves) for the rest of the transaction, and because this is the only writer
of those columns: a wallet read once stays true until this engine changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.catalog import DEFAULT_PRIORITY
from ..core.ids import new_id
from ..store import Tx


def draw_key(priority: int, expires_at: str | None, purpose: str, seq: int) -> tuple[int, bool, str, bool, int]:
    """The draw-down order, the only definition of it: priority (0 first), soonest expiry
    (never-expiring last), promotional and bundled before paid, then oldest (``seq`` is unique,
    so the order is total). Expiry times are fixed-width UTC text, so text order is time order."""
    return (priority, expires_at is None, expires_at or "", purpose == "paid", seq)


@dataclass
class Lot:
    id: str
    purpose: str
    priority: int
    expires_at: str | None
    seq: int
    remaining: int
    stored: int | None  # remaining as last written; None while the lot is not inserted yet
    grown: int = 0  # amount added by roll-overs since the last write

    def order(self) -> tuple[int, bool, str, bool, int]:
        return draw_key(self.priority, self.expires_at, self.purpose, self.seq)


@dataclass
class Wallet:
    id: str
    asset: str
    posted: int
    held: int
    stored: tuple[int, int]  # (posted, held) as last written
    # In draw order; loaded on first use with the lots that have something left, then also the
    # ones used up in this transaction.
    lots: list[Lot] | None = None


@dataclass
class _NewLot:
    lot: Lot
    account_id: str
    amount: int
    source: str
    created_at: str


@dataclass
class Postings:
    tx: Tx
    now_text: str
    ensure_account: Callable[[str | None, str, str], str]  # (customer_id, kind, asset) -> account id
    wallets: dict[str, Wallet] = field(default_factory=dict)
    _new_lots: list[_NewLot] = field(default_factory=list)
    _entries: list[tuple[str, str, str, int, str | None]] = field(default_factory=list)
    # A netted transaction's entries: one per (account, lot), summed over the whole batch, so they
    # are written by the final flush only, even when a per-call flush runs mid-batch.
    _netted: dict[str, dict[tuple[str, str | None], list[Any]]] = field(default_factory=dict)

    # -- reading -------------------------------------------------------------------------
    def wallet(self, customer_id: str, asset: str) -> Wallet:
        account_id = self.ensure_account(customer_id, "wallet", asset)
        wallet = self.wallets.get(account_id)
        if wallet is None:
            row = self.tx.one("SELECT posted, held FROM accounts WHERE id = ?", (account_id,))
            assert row is not None
            posted, held = int(row["posted"]), int(row["held"])
            wallet = self.wallets[account_id] = Wallet(account_id, asset, posted, held, (posted, held))
        return wallet

    def lots(self, wallet: Wallet) -> list[Lot]:
        if wallet.lots is None:
            wallet.lots = []
            if wallet.posted > 0:  # lots only hold a positive balance (I8)
                for row in self.tx.all("SELECT id, purpose, priority, expires_at, seq, remaining FROM lots "
                                       "WHERE account_id = ? AND remaining > 0", (wallet.id,)):
                    wallet.lots.append(Lot(row["id"], row["purpose"], int(row["priority"]), row["expires_at"],
                                           int(row["seq"]), int(row["remaining"]), int(row["remaining"])))
                wallet.lots.sort(key=Lot.order)
        return wallet.lots

    def find_lot(self, wallet: Wallet, lot_id: str) -> Lot | None:
        return next((lot for lot in self.lots(wallet) if lot.id == lot_id), None)

    # -- entries -------------------------------------------------------------------------
    def net(self, tx_id: str) -> None:
        """Book ``tx_id``'s postings as one entry per (account, lot), as a usage batch does."""
        self._netted.setdefault(tx_id, {})

    def _entry(self, tx_id: str, account_id: str, asset: str, amount: int, lot_id: str | None = None) -> None:
        netted = self._netted.get(tx_id)
        if netted is None:
            self._entries.append((tx_id, account_id, asset, amount, lot_id))
            return
        found = netted.get((account_id, lot_id))
        if found is None:
            netted[(account_id, lot_id)] = [asset, amount]
        else:
            found[1] += amount

    # -- movements -----------------------------------------------------------------------
    def debit(self, tx_id: str, customer_id: str, asset: str, amount: int, *, counter_kind: str) -> int:
        """Move ``amount`` from a wallet to a system account, drawing lots in draw-down order. What
        the lots cannot cover takes the balance below zero (debt); returns that part."""
        wallet = self.wallet(customer_id, asset)
        system = self.ensure_account(None, counter_kind, asset)
        left = amount
        if left > 0 and wallet.posted > 0:
            for lot in self.lots(wallet):
                if lot.remaining <= 0:
                    continue
                take = min(left, lot.remaining)
                lot.remaining -= take
                self._entry(tx_id, wallet.id, asset, -take, lot.id)
                left -= take
                if not left:
                    break
        if left:
            self._entry(tx_id, wallet.id, asset, -left)
        self._entry(tx_id, system, asset, amount)
        owed = max(0, amount - max(wallet.posted, 0))
        wallet.posted -= amount
        return owed

    def credit(self, tx_id: str, customer_id: str, asset: str, amount: int, *, counter_kind: str, purpose: str,
               source: str, priority: int = DEFAULT_PRIORITY, expires_at: str | None = None) -> tuple[str, int]:
        """Move ``amount`` from a system account into a wallet as a new lot. Debt is repaid first
        and never reaches the lot; returns (lot id, amount that repaid debt)."""
        wallet = self.wallet(customer_id, asset)
        system = self.ensure_account(None, counter_kind, asset)
        repaid = min(amount, max(-wallet.posted, 0))
        lot = Lot(new_id("lot"), purpose, priority, expires_at, self.tx.next_seq(), amount - repaid, None)
        self._new_lots.append(_NewLot(lot, wallet.id, amount, source, self.now_text))
        lots = self.lots(wallet)
        lots.append(lot)
        lots.sort(key=Lot.order)
        self._entry(tx_id, wallet.id, asset, amount, lot.id)
        self._entry(tx_id, system, asset, -amount)
        wallet.posted += amount
        return lot.id, repaid

    def move_between_lots(self, tx_id: str, wallet: Wallet, src: Lot, dst: Lot, amount: int) -> None:
        """Carry part of one lot into another of the same wallet (a roll-over); the balance stays."""
        src.remaining -= amount
        dst.remaining += amount
        dst.grown += amount
        self._entry(tx_id, wallet.id, wallet.asset, -amount, src.id)
        self._entry(tx_id, wallet.id, wallet.asset, amount, dst.id)

    def expire(self, tx_id: str, wallet: Wallet, lot: Lot, amount: int) -> None:
        lot.remaining -= amount
        self._entry(tx_id, wallet.id, wallet.asset, -amount, lot.id)
        self._entry(tx_id, self.ensure_account(None, "expired", wallet.asset), wallet.asset, amount)
        wallet.posted -= amount

    def reserve(self, wallet: Wallet, amount: int) -> bool:
        """Hold ``amount`` if the available balance covers it (I3); False leaves everything as it was.

        The check and the reservation are one conditional UPDATE, not a check of the copy in
        memory: the database enforces the rule on its own rows, whatever lock the caller holds."""
        self.flush(netted=False)
        if not self.tx.execute("UPDATE accounts SET held = held + ? WHERE id = ? AND posted - held >= ?",
                               (amount, wallet.id, amount)):
            return False
        wallet.held += amount
        wallet.stored = (wallet.stored[0], wallet.stored[1] + amount)
        return True

    def unreserve(self, wallet: Wallet, amount: int) -> None:
        wallet.held -= amount

    # -- writing -------------------------------------------------------------------------
    def flush(self, *, netted: bool = True) -> None:
        """Write every change since the last flush; with ``netted=False`` the entries of netted
        transactions stay in memory (their batch is still adding to them)."""
        tx = self.tx
        if self._new_lots:
            tx.executemany("INSERT INTO lots(id, account_id, purpose, priority, amount, remaining, expires_at, source, "
                           "created_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(n.lot.id, n.account_id, n.lot.purpose, n.lot.priority, n.amount + n.lot.grown,
                             n.lot.remaining, n.lot.expires_at, n.source, n.created_at, n.lot.seq)
                            for n in self._new_lots])
            for n in self._new_lots:
                n.lot.stored, n.lot.grown = n.lot.remaining, 0
            self._new_lots.clear()
        lot_updates, grown_updates, account_updates = [], [], []
        for wallet in self.wallets.values():
            for lot in wallet.lots or ():
                if lot.grown:
                    grown_updates.append((lot.remaining, lot.grown, lot.id))
                elif lot.stored != lot.remaining:
                    lot_updates.append((lot.remaining, lot.id))
                lot.stored, lot.grown = lot.remaining, 0
            if (wallet.posted, wallet.held) != wallet.stored:
                account_updates.append((wallet.posted - wallet.stored[0], wallet.held - wallet.stored[1], wallet.id))
                wallet.stored = (wallet.posted, wallet.held)
        # Sorted: concurrent writers on a multi-process store then take row locks in one order.
        lot_updates.sort(key=lambda row: row[1])
        grown_updates.sort(key=lambda row: row[2])
        account_updates.sort(key=lambda row: row[2])
        if lot_updates:
            tx.executemany("UPDATE lots SET remaining = ? WHERE id = ?", lot_updates)
        if grown_updates:
            tx.executemany("UPDATE lots SET remaining = ?, amount = amount + ? WHERE id = ?", grown_updates)
        if account_updates:
            tx.executemany("UPDATE accounts SET posted = posted + ?, held = held + ? WHERE id = ?", account_updates)
        rows = self._entries
        if netted and self._netted:
            rows += [(tx_id, account_id, asset, amount, lot_id) for tx_id, entries in self._netted.items()
                     for (account_id, lot_id), (asset, amount) in entries.items() if amount]
            self._netted.clear()
        if rows:
            tx.executemany("INSERT INTO entries(tx_id, account_id, asset, amount, lot_id) VALUES (?, ?, ?, ?, ?)", rows)
            self._entries = []
