"""One service as one process: start it, step it until SIGTERM, retry what fails.

A step that fails (the database or the broker went away) is retried with backoff; the
service itself takes care not to lose or repeat work across the failure. SIGTERM and
SIGINT end the loop between steps: the transaction in hand finishes, then the process
closes its connections and exits 0.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from typing import Protocol

from knm.core.store.database import SchemaMismatchError
from knm.runtime.health import Health

log = logging.getLogger("knm.process")


class Service(Protocol):
    def start(self) -> None: ...

    def step(self, *, timeout: float = 0.0) -> int: ...

    def close(self) -> None: ...


class ConfigurationError(Exception):
    """The service cannot run as configured; retrying will not help."""


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def run(
    service: Service,
    *,
    name: str,
    health: Health,
    stop: threading.Event,
    poll_timeout: float = 0.5,
    max_backoff: float = 10.0,
    freeze_heap: bool = False,
) -> None:
    """`freeze_heap`: for a process that is this service alone (not a test's)."""
    delay = 0.5
    while not stop.is_set():
        try:
            service.start()
            break
        except SchemaMismatchError as error:
            raise ConfigurationError(str(error)) from None
        except Exception as error:
            log.warning(
                "cannot start yet; retrying",
                extra={"service": name, "error": _one_line(error), "retry_in_s": delay},
            )
            health.beat()
            stop.wait(delay)
            delay = min(delay * 2, max_backoff)
    log.info("started", extra={"service": name})
    delay = 0.5
    # What start-up and the first catch-up built lives as long as the process: frozen,
    # it is kept out of the collector's full passes, which otherwise walk all of it (tens
    # of ms a pass, in the middle of whatever change is being carried).
    settled = not freeze_heap
    if freeze_heap:
        gc.freeze()
    try:
        while not stop.is_set():
            try:
                started = time.monotonic()
                consumed = service.step(timeout=poll_timeout)
                if not consumed and not settled:
                    gc.freeze()
                    settled = True
                delay = 0.5
                if not consumed and time.monotonic() - started < poll_timeout / 10:
                    # The bus answered at once with nothing: the broker is away or the
                    # group is rebalancing. Waiting a little keeps that from a busy loop.
                    stop.wait(poll_timeout / 10)
            except Exception as error:
                log.error(
                    "step failed; retrying",
                    extra={"service": name, "error": _one_line(error), "retry_in_s": delay},
                )
                stop.wait(delay)
                delay = min(delay * 2, max_backoff)
            health.beat()
    finally:
        service.close()
        log.info("stopped", extra={"service": name})


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text.splitlines()[0] if text else type(error).__name__
