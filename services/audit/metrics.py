"""Prometheus metrics of the audit API: its requests, and the allocations, releases and
pool usage the database holds, read when scraped."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from knm.core.clock import Clock
from knm.core.settings import Settings
from knm.core.store.schema import AddressHistoryRow, table
from services.audit.access_log import log_request
from services.audit.database import reading
from services.audit.queries.pools import pool_usage

log = logging.getLogger("knm.audit")

history = table(AddressHistoryRow)


class Metrics:
    def __init__(self, *, engine: Engine, settings: Settings, clock: Clock) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "knm_audit_request_duration_seconds",
            "Time to answer a request, by route template and status",
            labelnames=["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(engine=engine, settings=settings, clock=clock))


class DatabaseCollector(Collector):
    """Allocations and releases by kind, counted from the history; pool usage.

    The history is append-only and becomes visible in `seq` order (see cursor.py), so the
    counts are kept and only the lines after the last one counted are read each scrape.
    """

    def __init__(self, *, engine: Engine, settings: Settings, clock: Clock) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._counted_to = 0
        self._counts: Counter[tuple[str, str]] = Counter()

    def describe(self) -> list[Metric]:
        # Registering must not read the database: the names are not checked up front.
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "knm_audit_database_up", "1 when the last scrape could read the database"
        )
        try:
            with self._lock, reading(self._engine, consistent=True) as connection:
                self._count_new_lines(connection)
                counts = dict(self._counts)
                usage = pool_usage(
                    connection,
                    pod_pools=self._settings.pod_pools,
                    service_pools=self._settings.service_pools,
                    public_pools=self._settings.public_pools,
                    block_prefix=self._settings.block_prefix,
                    now=self._clock(),
                )
        except DBAPIError as error:
            log.warning("metrics: database unreadable", extra={"error": type(error).__name__})
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        for action, name in (("allocated", "allocations"), ("released", "releases")):
            family = CounterMetricFamily(
                f"knm_address_{name}", f"Addresses {action}, by kind", labels=["kind"]
            )
            for kind in ("pod", "service", "floating", "public"):
                family.add_metric([kind], float(counts.get((kind, action), 0)))
            yield family
        for field in ("capacity", "used", "quarantined", "free"):
            gauge = GaugeMetricFamily(
                f"knm_pool_{field}_addresses",
                f"Addresses {field} per pool",
                labels=["pool", "kind"],
            )
            for pool in usage.pools:
                gauge.add_metric([str(pool.pool), pool.kind.value], float(getattr(pool, field)))
            yield gauge

    def _count_new_lines(self, connection: Any) -> None:
        statement = (
            select(history.c.kind, history.c.action, func.count(), func.max(history.c.seq))
            .where(history.c.seq > self._counted_to)
            .group_by(history.c.kind, history.c.action)
        )
        for kind, action, count, newest in connection.execute(statement):
            self._counts[(kind, action)] += count
            self._counted_to = max(self._counted_to, newest)


class RequestMetrics:
    """ASGI middleware: each request's duration into the histogram, by route template (not
    the path, which would make a series per address), and one access log line.

    The log line names the path (what was asked about: an audit trail of the audit) and
    the first digits of the matching token's digest, never the token.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, access_log: bool) -> None:
        self._app = app
        self._histogram = metrics.requests
        # Each (method, route, status)'s series, found once: `labels()` takes a lock and
        # builds its key on every call.
        self._series: dict[tuple[str, str, int], Histogram] = {}
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            key = (scope["method"], route, status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._histogram.labels(
                    scope["method"], route, str(status)
                )
            series.observe(elapsed)
            if self._access_log:
                self._log(scope, status=status, elapsed=elapsed)

    def _log(self, scope: Scope, *, status: int, elapsed: float) -> None:
        state: MutableMapping[str, Any] = scope.get("state") or {}
        client = scope.get("client")
        query = scope.get("query_string", b"").decode("latin-1")
        fields = {
            "method": scope["method"],
            "path": scope["path"] + (f"?{query}" if query else ""),
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "client": client[0] if client else None,
            "token": state.get("token"),
        }
        log_request(fields)
