"""The service loop: a bus that answers at once with nothing does not make it spin."""

from __future__ import annotations

import gc
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


def test_a_service_process_freezes_its_heap_after_start_and_after_catching_up() -> None:
    class CatchesUp(Service):
        """Three busy steps (each keeping new objects, as a model being loaded does),
        then a quiet bus."""

        def __init__(self) -> None:
            super().__init__(records=0)
            self.frozen: list[int] = []
            self.kept: list[list[int]] = []

        def step(self, *, timeout: float = 0.0) -> int:
            self.steps += 1
            self.frozen.append(gc.get_freeze_count())
            if self.steps <= 3:
                self.kept += [[n] for n in range(1000)]
                return 10
            return 0

    service = CatchesUp()
    stop = threading.Event()
    health = Health(service="test", ready=lambda: True, counters=dict)
    threading.Timer(0.3, stop.set).start()
    try:
        run(service, name="test", health=health, stop=stop, freeze_heap=True)
        # Frozen after start, and again once caught up, with what catching up kept.
        assert service.frozen[0] > 0
        assert service.frozen[-1] >= service.frozen[0] + 3000
    finally:
        gc.unfreeze()


def test_an_in_process_run_leaves_the_collector_alone() -> None:
    run_for(Service(records=0), 0.1)
    assert gc.get_freeze_count() == 0
