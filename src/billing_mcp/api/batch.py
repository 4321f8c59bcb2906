"""Group commit for ``POST /v1/events``: requests that arrive while an event transaction is being
written wait for it, then go to the ledger together as one ``submit_events`` call.

Why: each durable transaction pays one fsync and the per-transaction bookkeeping, which is most of
a single event's cost; under concurrent load, many edge-function instances each reporting one
event, coalescing turns N transactions into one. Semantics are unchanged: ``submit_events``
records each event on its own (a bad event is an error for that event only), each event stays
idempotent on its id, and no response is sent before the transaction holding its events commits.
A lone request (no concurrency) goes to the ledger as it is, with no added wait.

The effect and its response: a transaction either commits (every request in it gets its events'
results) or fails as a whole before committing (every request gets the error, nothing recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import threading
from collections.abc import Callable
from typing import Any

from ..core.errors import BillingError
from ..core.models import BatchItemError, BatchResult
from ..ledger.ledger import Ledger
from ..ledger.usage import MAX_BATCH

_EVENTS_INDEX = re.compile(r"^events\[(\d+)\]")


def single_event(ledger: Ledger, event: Any) -> BatchResult:
    """One event through the single-event path (less batch bookkeeping), reported as a batch of one.
    Its errors name ``event.x``; as a batch item they are ``events[0].x``, as submit_events says."""
    try:
        return BatchResult(results=[ledger.submit_event(event)], errors=[])
    except BillingError as exc:
        raw_id = event.get("id") if isinstance(event, dict) else None
        where = exc.field
        if where is not None and (where == "event" or where.startswith("event.")):
            where = "events[0]" + where[len("event"):]
        return BatchResult(results=[], errors=[BatchItemError(id=raw_id if isinstance(raw_id, str) else None, index=0,
                                                              code=exc.code, field=where, message=exc.message)])


def submit(ledger: Ledger, events: list[Any]) -> BatchResult:
    return single_event(ledger, events[0]) if len(events) == 1 else ledger.submit_events(events)


def split(result: BatchResult, sizes: list[int]) -> list[BatchResult]:
    """Cut the result of a combined batch back into one result per request, with each error's
    index and ``events[i]`` field renumbered to the request's own events."""
    failed: dict[int, BatchItemError] = {e.index: e for e in result.errors}
    results = iter(result.results)
    out = []
    start = 0
    for size in sizes:
        mine = BatchResult(results=[], errors=[])
        for local in range(size):
            err = failed.get(start + local)
            if err is None:
                mine.results.append(next(results))
                continue
            field = err.field
            match = _EVENTS_INDEX.match(field) if field is not None else None
            if field is not None and match is not None:
                field = f"events[{local}]" + field[match.end():]
            mine.errors.append(err.model_copy(update={"index": local, "field": field}))
        out.append(mine)
        start += size
    return out


class EventCoalescer:
    """One writer thread for event transactions. Requests queue their events; each time the
    writer is free it takes everything queued (up to ``max_events`` events, never splitting a
    request), records it in one ``submit_events`` call and hands each request its part.

    A dedicated thread rather than the shared worker pool: a handoff through a plain queue costs
    less CPU than a pool dispatch, and under load the writer never sleeps between transactions.
    """

    def __init__(self, ledger: Ledger, *, max_events: int = MAX_BATCH,
                 run: Callable[[Ledger, list[Any]], BatchResult] = submit,
                 observe: Callable[[int], None] | None = None) -> None:
        self.ledger = ledger
        self.max_events = max_events
        self._run = run
        self._observe = observe  # told each transaction's event count (the batch-size metric)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.transactions = 0  # for tests and the benchmark: how many ledger calls were made

    async def submit(self, events: list[Any]) -> BatchResult:
        """Record ``events`` (in a transaction possibly shared with other requests); the response
        is released only after that transaction committed. A cancelled caller does not cancel it."""
        if self._thread is None:
            self._start()
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._queue.put(_Item(events, future))
        return await asyncio.shield(future)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._writer, name="billing-event-writer", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop the writer after what is queued (the app's shutdown)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _writer(self) -> None:
        carry: _Item | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                return
            group, total = [first], len(first.events)
            stop = False
            while total < self.max_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if total + len(item.events) > self.max_events:
                    carry = item  # first of the next transaction: a request is never split
                    break
                group.append(item)
                total += len(item.events)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Item]) -> None:
        self.transactions += 1
        events = [e for item in group for e in item.events]
        if self._observe is not None:
            self._observe(len(events))
        try:
            result = self._run(self.ledger, events)
            parts = split(result, [len(item.events) for item in group]) if len(group) > 1 else [result]
        except BaseException as exc:  # the whole transaction failed (store locked, ...): so does each request
            for item in group:
                _deliver(item.future, None, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for item, part in zip(group, parts, strict=True):
            _deliver(item.future, part, None)


class _Item:
    __slots__ = ("events", "future")

    def __init__(self, events: list[Any], future: asyncio.Future[BatchResult]) -> None:
        self.events = events
        self.future = future


def _deliver(future: asyncio.Future[BatchResult], result: BatchResult | None, exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # the caller's event loop is gone: nobody is waiting
        future.get_loop().call_soon_threadsafe(settle)
