"""The service loop: a bus that answers at once with nothing does not make it spin."""

from __future__ import annotations

import threading
import time

from knm.runtime.health import Health
from knm.runtime.process import run


class Service:
    def __init__(self, *, records: int) -> None:
        self.records = records
        self.steps = 0
        self.closed = False

    def start(self) -> None:
        return None

    def step(self, *, timeout: float = 0.0) -> int:
        self.steps += 1
        return self.records

    def close(self) -> None:
        self.closed = True


def run_for(service: Service, seconds: float) -> None:
    stop = threading.Event()
    health = Health(service="test", ready=lambda: True, counters=dict)
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    run(service, name="test", health=health, stop=stop, poll_timeout=0.5)
    timer.join()


def test_an_empty_answer_at_once_is_waited_out() -> None:
    idle = Service(records=0)
    run_for(idle, 0.5)
    # 50 ms between empty answers: about ten steps, not the thousands of a busy loop.
    assert 5 <= idle.steps <= 15
    assert idle.closed


def test_a_busy_bus_is_read_without_waiting() -> None:
    busy = Service(records=100)
    started = time.monotonic()
    run_for(busy, 0.2)
    assert busy.steps > 100
    assert time.monotonic() - started < 1
