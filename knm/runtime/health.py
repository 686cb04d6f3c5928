"""Liveness, readiness, metrics and a state view over HTTP, for one service process.

GET /healthz  200 while the main loop turns (503 once it has been stuck too long)
GET /readyz   200 while the service can do its work (started, in step with its store)
GET /metrics  Prometheus text: the service's counters, read at scrape time
GET /state    the service's own view as JSON (e.g. an agent's interfaces), when it has one
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("knm.health")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Health:
    def __init__(
        self,
        *,
        service: str,
        ready: Callable[[], bool],
        counters: Callable[[], Mapping[str, float]],
        state: Callable[[], Any] | None = None,
        stuck_after: float = 120.0,
    ) -> None:
        self.service = service
        self._ready = ready
        self._counters = counters
        self._state = state
        self._stuck_after = stuck_after
        self._beat = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Counters(self))

    def beat(self) -> None:
        self._beat = time.monotonic()

    def live(self) -> bool:
        return time.monotonic() - self._beat < self._stuck_after

    def ready(self) -> bool:
        try:
            return self.live() and self._ready()
        except Exception:
            return False

    def counters(self) -> Mapping[str, float]:
        return self._counters()

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _json(start_response, self.live(), {"service": self.service})
        if path == "/readyz":
            return _json(start_response, self.ready(), {"service": self.service})
        if path == "/metrics":
            metrics: Iterable[bytes] = make_wsgi_app(self.registry)(environ, start_response)
            return metrics
        if path == "/state" and self._state is not None:
            return _json(start_response, True, self._state())
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    def serve(self, *, host: str, port: int) -> _Server:
        server = make_server(host, port, self.app, server_class=_Server, handler_class=_Quiet)
        thread = threading.Thread(target=server.serve_forever, name="health", daemon=True)
        thread.start()
        log.info("health endpoints listening", extra={"host": host, "port": server.server_port})
        return server


def _json(start_response: StartResponse, ok: bool, body: Any) -> list[bytes]:
    status = "200 OK" if ok else "503 Service Unavailable"
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


class _Counters(Collector):
    def __init__(self, health: Health) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        service = self._health.service
        up = GaugeMetricFamily("knm_ready", "1 while the service is ready", labels=["service"])
        up.add_metric([service], 1.0 if self._health.ready() else 0.0)
        yield up
        for name, value in sorted(self._health.counters().items()):
            # Prometheus' convention: a name ending in _total counts, anything else is a level.
            family: CounterMetricFamily | GaugeMetricFamily
            if name.endswith("_total"):
                family = CounterMetricFamily(
                    f"knm_{name.removesuffix('_total')}",
                    f"{name} of the {service}",
                    labels=["service"],
                )
            else:
                family = GaugeMetricFamily(
                    f"knm_{name}", f"{name} of the {service}", labels=["service"]
                )
            family.add_metric([service], value)
            yield family


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None
