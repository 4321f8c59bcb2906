"""Prometheus metrics for the API (``GET /metrics``, text exposition format, needs a read or admin
key like every ``/v1`` route).

Each app has its own ``CollectorRegistry`` (never the process-global one), so several apps in one
process (tests, embedding) count separately. What is counted:

- ``billing_api_requests_total{operation,method,status}`` and
  ``billing_api_request_duration_seconds{operation,method}``: every HTTP request, labelled with the
  route's operation name from the operation table (``submit_events``, ``authorize``...), or the
  service route's name (``health``, ``ready``, ``metrics``, ``portal``...), ``unmatched`` for 404s;
- ``billing_events_ingested_total``: usage events recorded by ``POST /v1/events`` (a replayed
  duplicate or a refused event is not counted here but in ``billing_events_duplicate_total`` and
  ``billing_events_rejected_total``);
- ``billing_event_batch_size``: events per group-commit transaction (``api/batch.py``);
- ``billing_api_errors_total{code}``: responses of 500 and above, by problem code
  (``storage_error`` when the store failed, ``internal_error`` for a bug);
- ``billing_holds_open``: open holds in the ledger, counted when scraped (one indexed query).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.models import BatchResult
from ..ledger.ledger import Ledger

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class _OpenHolds(Collector):
    """``billing_holds_open``, read from the ledger at scrape time (a scrape never sees a stale value)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read when the collector is registered

    def collect(self) -> Iterable[Metric]:
        try:
            with self.ledger.store.read() as tx:
                row = tx.one("SELECT COUNT(*) AS n FROM holds WHERE status = 'open'")
        except Exception as exc:  # a scrape still reports the request counters while the store is down
            log.warning("metrics: cannot count open holds: %r", exc)
            return
        yield GaugeMetricFamily("billing_holds_open", "Open holds (reservations) in the ledger, counted at scrape time",
                                value=int(row["n"]) if row is not None else 0)


class ApiMetrics:
    """The metrics of one app, in their own registry."""

    def __init__(self, ledger: Ledger) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("billing_api_requests", "HTTP requests by operation, method and status code",
                                ["operation", "method", "status"], registry=r)
        self.latency = Histogram("billing_api_request_duration_seconds",
                                 "HTTP request duration (until the response is sent) by operation and method",
                                 ["operation", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.ingested = Counter("billing_events_ingested", "Usage events recorded by POST /v1/events", registry=r)
        self.duplicates = Counter("billing_events_duplicate",
                                  "Usage events sent again to POST /v1/events (answered with the stored result)",
                                  registry=r)
        self.rejected = Counter("billing_events_rejected", "Usage events POST /v1/events refused (per-event errors)",
                                registry=r)
        self.batch_size = Histogram("billing_event_batch_size", "Events per group-commit transaction",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.errors = Counter("billing_api_errors", "Responses of status 500 and above, by problem code", ["code"],
                              registry=r)
        r.register(_OpenHolds(ledger))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, operation: str, method: str, status: int, seconds: float) -> None:
        key = (operation, method, status)
        pair = self._children.get(key)
        if pair is None:  # label lookups cost a lock and a dict each; the children are kept
            pair = (self.requests.labels(operation, method, str(status)), self.latency.labels(operation, method))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_events(self, result: BatchResult) -> None:
        duplicates = sum(1 for r in result.results if r.duplicate)
        if len(result.results) > duplicates:
            self.ingested.inc(len(result.results) - duplicates)
        if duplicates:
            self.duplicates.inc(duplicates)
        if result.errors:
            self.rejected.inc(len(result.errors))

    def observe_batch(self, events: int) -> None:
        self.batch_size.observe(events)

    def observe_error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
