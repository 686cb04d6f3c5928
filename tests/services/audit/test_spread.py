"""Workers accepting on one socket take even shares of connections that arrive together,
and a worker left alone (its peers busy or gone) still accepts them."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from services.audit.spread import PATIENCE, TURN_S, Acceptor, Seats


class Held(asyncio.Protocol):
    def __init__(self, connections: set[Any]) -> None:
        self._connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._connections.add(self)


class Worker:
    """An acceptor on its own event loop, in a thread (a worker process, as far as the
    socket and the shared counts can tell)."""

    def __init__(
        self, sock: socket.socket, seats: Seats, index: int, *, patience: int = PATIENCE
    ) -> None:
        self.connections: set[Any] = set()
        self._loop = asyncio.new_event_loop()
        self._acceptor = Acceptor(
            sock,
            seats=seats,
            index=index,
            connections=self.connections,
            protocol=lambda: Held(self.connections),
            patience=patience,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._acceptor.start()
        self._stopped = asyncio.Event()
        await self._stopped.wait()
        self._acceptor.stop()
        for held in self.connections:
            held.transport.close()
        await asyncio.sleep(0)

    def stop(self) -> None:
        while not hasattr(self, "_stopped"):
            time.sleep(0.001)
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock
    sock.close()


def connect(sock: socket.socket, count: int) -> list[socket.socket]:
    return [socket.create_connection(sock.getsockname()) for _ in range(count)]


def until(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.005)


@pytest.mark.parametrize("workers", [2, 3])
def test_connections_that_arrive_together_are_shared_evenly(
    listening: socket.socket, workers: int
) -> None:
    seats = Seats(workers)
    # Patient enough that the threads' turns at the GIL do not matter.
    running = [Worker(listening, seats, index, patience=1000) for index in range(workers)]
    # All at once: the backlog holds them before any worker is woken.
    clients = connect(listening, 32)
    try:
        until(lambda: sum(len(w.connections) for w in running) == 32)
        shares = sorted(len(w.connections) for w in running)
        assert shares[-1] - shares[0] <= 1, shares
    finally:
        for worker in running:
            worker.stop()
        for client in clients:
            client.close()


def test_a_worker_whose_peers_do_not_accept_accepts_after_waiting(
    listening: socket.socket,
) -> None:
    """Its peer's count says it has fewer, but it never accepts (busy, or gone)."""
    seats = Seats(2)
    worker = Worker(listening, seats, 0)
    clients = connect(listening, 4)
    started = time.monotonic()
    try:
        until(lambda: len(worker.connections) == 4)
        # Each after PATIENCE turns of waiting, the first at once.
        assert time.monotonic() - started >= 3 * PATIENCE * TURN_S
        assert seats.counts[1] == 0
    finally:
        worker.stop()
        for client in clients:
            client.close()
