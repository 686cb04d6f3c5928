"""Client connections spread evenly over the API's workers (`knm audit-api --workers N`).

The workers accept on one listening socket. Left to the event loop, a worker woken for a
new connection accepts every connection waiting, so clients that connect together (a
load balancer's pool, a load generator) land mostly on one worker: 28 of 32 on one and
4 on the other in a bench run. With keep-alive connections that lasts: the crowded
worker's clients wait in its queue while the other's four are answered at once, ask
again and take half the CPU. Here each worker accepts one connection at a time, and
only while none has fewer open connections than it; a worker with more leaves the
connection to the others, unless it has waited `PATIENCE` turns (the others may be busy
or gone: then the shares are uneven, as they were before).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Collection
from ctypes import c_long
from dataclasses import dataclass
from multiprocessing.sharedctypes import RawArray
from typing import Any

import uvicorn

# Turns a worker with more connections waits before accepting anyway, and their length:
# a connection waits at most ~5 ms longer than it would have.
PATIENCE = 5
TURN_S = 0.001


class Seats:
    """Each worker's count of open connections, in memory shared by the workers (made
    before they are forked)."""

    def __init__(self, workers: int) -> None:
        self.counts = RawArray(c_long, workers)


@dataclass(frozen=True)
class Seat:
    """One worker's place: the listening socket, and its count among the others'."""

    sock: socket.socket
    seats: Seats
    index: int


class Acceptor:
    """The worker `index`'s accepting on `sock`, each connection given to `protocol`."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        seats: Seats,
        index: int,
        connections: Collection[Any],
        protocol: Callable[[], asyncio.Protocol],
        patience: int = PATIENCE,
    ) -> None:
        self._sock = sock
        self._patience = patience
        self._counts = seats.counts
        self._index = index
        self._connections = connections
        self._protocol = protocol
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waited = 0
        self._later: asyncio.TimerHandle | None = None
        self._starting: set[asyncio.Task[Any]] = set()
        # Accepted, and not yet in `connections` (their protocols' `connection_made`).
        self._pending = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        self._watch()

    def stop(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None

    def _watch(self) -> None:
        self._later = None
        if self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._acceptable)

    def _acceptable(self) -> None:
        loop = self._loop
        assert loop is not None
        mine = len(self._connections) + self._pending
        self._counts[self._index] = mine
        if mine > min(self._counts) and self._waited < self._patience:
            # Another worker has fewer: this one looks again after a turn.
            self._waited += 1
            loop.remove_reader(self._sock.fileno())
            self._later = loop.call_later(TURN_S, self._watch)
            return
        try:
            accepted, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError:
            # Out of descriptors, say: the connection waits in the backlog for a turn.
            loop.remove_reader(self._sock.fileno())
            self._later = loop.call_later(TURN_S, self._watch)
            return
        self._waited = 0
        self._pending += 1
        self._counts[self._index] = mine + 1
        accepted.setblocking(False)
        accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        made = False

        def protocol() -> asyncio.Protocol:
            # Called as the transport is made, which then asks the loop to call the
            # protocol's `connection_made` (it joins `connections` there): this is asked
            # just before, so no callback in between sees the connection counted twice
            # (a peer then thought this worker had more than it had, and took more).
            nonlocal made
            made = True
            loop.call_soon(self._joined)
            return self._protocol()

        def finished(task: asyncio.Task[Any]) -> None:
            self._starting.discard(task)
            if not made:  # it failed before it was a connection
                self._joined()

        task = loop.create_task(loop.connect_accepted_socket(protocol, accepted))
        # The loop keeps only a weak reference to a task.
        self._starting.add(task)
        task.add_done_callback(finished)

    def _joined(self) -> None:
        self._pending -= 1


class SpreadServer(uvicorn.Server):
    """uvicorn's server, its connections accepted by an `Acceptor` at `seat`."""

    def __init__(self, config: uvicorn.Config, *, seat: Seat) -> None:
        super().__init__(config)
        self._seat = seat
        self._acceptor: Acceptor | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        if self.should_exit:
            return
        config = self.config

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return made

        self._acceptor = Acceptor(
            self._seat.sock,
            seats=self._seat.seats,
            index=self._seat.index,
            connections=self.server_state.connections,
            protocol=protocol,
        )
        self._acceptor.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._acceptor is not None:
            self._acceptor.stop()
        await super().shutdown(sockets=sockets)
