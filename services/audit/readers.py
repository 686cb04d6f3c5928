"""Where the routes get the rows of a prepared statement (queries/prepared.py).

On PostgreSQL, `Nonblocking`: psycopg2's asynchronous connections, waited on by the
event loop itself. A request's query then costs no thread: handing each query to a
thread pool and back cost more CPU than the query (the worker's wake-up, the GIL passed
to and fro). Elsewhere (SQLite), `Threaded`: the same statement through SQLAlchemy in the
thread pool. Both give the same tuples.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import psycopg2
import psycopg2.extensions
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from services.audit.database import POSTGRESQL_CONNECT_ARGS, reading
from services.audit.queries.prepared import Prepared, rows

log = logging.getLogger("knm.audit")


class Reader(Protocol):
    async def rows(self, statement: Prepared, **values: Any) -> Sequence[Sequence[Any]]: ...

    def close(self) -> None: ...


class Threaded:
    """Any database SQLAlchemy reaches: a pooled connection, in the thread pool."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _rows(self, statement: Prepared, values: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        with reading(self._engine) as connection:
            return rows(connection, statement, **values)

    async def rows(self, statement: Prepared, **values: Any) -> Sequence[Sequence[Any]]:
        return await run_in_threadpool(self._rows, statement, values)

    def close(self) -> None:
        """The engine is its owner's to dispose of."""


class Nonblocking:
    """Up to `size` asynchronous psycopg2 connections, opened when first needed and kept;
    each holds the statements it has prepared. A connection that fails, or whose query is
    abandoned (a cancelled request), is closed rather than reused."""

    def __init__(self, connect_args: Mapping[str, Any], *, size: int) -> None:
        self._connect_args = dict(connect_args)
        self._size = size
        self._open = 0
        self._idle: list[Any] = []
        self._prepared: dict[Any, set[str]] = {}
        self._watches: dict[Any, Watch] = {}
        self._cursors: dict[Any, Any] = {}
        # Requests waiting for a connection: each is handed one, or None for a free slot.
        self._waiting: deque[asyncio.Future[Any]] = deque()

    @classmethod
    def for_engine(cls, engine: Engine, *, size: int) -> Nonblocking:
        """The database, user and connection options of `engine`'s own connections."""
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        if args:
            raise ValueError("the database URL must name its server by keywords")
        return cls({**kwargs, **POSTGRESQL_CONNECT_ARGS}, size=size)

    async def rows(self, statement: Prepared, **values: Any) -> Sequence[Sequence[Any]]:
        connection = await self._take()
        try:
            found = await self._run(connection, statement, values)
        except BaseException:
            self._discard(connection)
            raise
        self._give(connection)
        return found

    def close(self) -> None:
        while self._idle:
            self._discard(self._idle.pop())

    async def _run(
        self, connection: Any, statement: Prepared, values: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        held = self._prepared[connection]
        watch = self._watches[connection]
        # One cursor per connection, used by one query at a time.
        cursor = self._cursors[connection]
        if statement.name not in held:
            cursor.execute(f"PREPARE {statement.name} AS {statement.sql}")
            await _ready(connection, watch)
            held.add(statement.name)
        given = {**statement.defaults, **values} if statement.defaults else values
        cursor.execute(statement.execute, [given[name] for name in statement.positions])
        await _ready(connection, watch)
        found: list[tuple[Any, ...]] = cursor.fetchall()
        return found

    async def _take(self) -> Any:
        """A connection: an idle one, a new one while fewer than `size` are open, or else
        the one the longest waiting request is handed when it is free.

        Handed, not put back for whoever asks next: with requests arriving all the time,
        a freed connection left in the idle list went to a newcomer ahead of the waiting
        ones, which then waited for many queries in a row (the bench's p99).
        """
        while True:
            if self._idle:
                return self._idle.pop()
            if self._open < self._size:
                return await self._connect()
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                # It may have been handed a connection or a slot already: pass it on.
                if waiter.done() and not waiter.cancelled():
                    if waiter.result() is None:
                        self._wake()
                    else:
                        self._give(waiter.result())
                raise
            if handed is not None:
                return handed
            # A slot was freed (a connection closed): open one, if nobody took it first.

    async def _connect(self) -> Any:
        self._open += 1
        connection = None
        try:
            connection = psycopg2.connect(**self._connect_args, async_=True)
            self._watches[connection] = Watch(connection.fileno())
            await _ready(connection, self._watches[connection])
        except BaseException:
            self._open -= 1
            if connection is not None:
                self._forget(connection)
            self._wake()
            raise
        self._prepared[connection] = set()
        self._cursors[connection] = connection.cursor()
        return connection

    def _give(self, connection: Any) -> None:
        """A free connection to the longest waiting request, or to the idle list."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def _wake(self) -> None:
        """A slot freed: the longest waiting request opens a connection."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _discard(self, connection: Any) -> None:
        self._open -= 1
        self._forget(connection)
        self._wake()

    def _forget(self, connection: Any) -> None:
        self._prepared.pop(connection, None)
        self._cursors.pop(connection, None)
        watch = self._watches.pop(connection, None)
        # Before the socket is closed: its number may be another's next.
        if watch is not None:
            watch.stop()
        try:
            connection.close()
        except psycopg2.Error as error:
            log.warning("closing a database connection", extra={"error": type(error).__name__})


class Watch:
    """A connection's socket, watched by the event loop for as long as the connection is
    used: registering it with the loop and removing it again for every query cost two
    system calls per query.

    Readable with no query waiting means the server closed the connection or sent a
    notice: the watch then stops (the loop would otherwise call it again at once), and the
    next query on the connection watches again and finds out what it was.
    """

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def readable(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Not watched yet, stopped, or watched by another loop (one per test, say).
            self.stop()
            loop.add_reader(self._descriptor, self._ready)
            self._loop = loop
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _ready(self) -> None:
        if self._waiter is None:
            self.stop()
        elif not self._waiter.done():
            self._waiter.set_result(None)

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._descriptor)
        self._loop = None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _ready(connection: Any, watch: Watch) -> None:
    """Until psycopg2 says the connection's last command is done, waiting on its socket."""
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if state == psycopg2.extensions.POLL_READ:
            await watch.readable()
        elif state == psycopg2.extensions.POLL_WRITE:
            # A command too long for the socket's buffer, or the connection's start.
            loop = asyncio.get_running_loop()
            writable: asyncio.Future[None] = loop.create_future()
            descriptor = connection.fileno()
            loop.add_writer(descriptor, _settle, writable)
            try:
                await writable
            finally:
                loop.remove_writer(descriptor)
        else:
            raise psycopg2.OperationalError(f"unexpected poll state {state}")


def reader_for(engine: Engine, *, size: int = 8) -> Reader:
    if engine.dialect.name == "postgresql":
        return Nonblocking.for_engine(engine, size=size)
    return Threaded(engine)
