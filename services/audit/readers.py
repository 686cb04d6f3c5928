"""Where the routes get the rows of a prepared statement (queries/prepared.py).

On PostgreSQL, `Nonblocking`: psycopg2's asynchronous connections, driven by the event
loop itself. A request's query then costs no thread: handing each query to a thread pool
and back cost more CPU than the query (the worker's wake-up, the GIL passed to and fro).
Elsewhere (SQLite), `Threaded`: the same statement through SQLAlchemy in the thread pool.
Both give the same tuples.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg2
import psycopg2.extensions
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from services.audit.database import POSTGRESQL_CONNECT_ARGS, reading
from services.audit.queries.prepared import Prepared, rows

log = logging.getLogger("knm.audit")

Rows = Sequence[Sequence[Any]]


# The most requests asked in one query (`knm audit-api --batch`).
BATCH = 16


class Reader(Protocol):
    async def rows(self, statement: Prepared, **values: Any) -> Rows: ...

    def close(self) -> None: ...


class Threaded:
    """Any database SQLAlchemy reaches: a pooled connection, in the thread pool."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _rows(self, statement: Prepared, values: Mapping[str, Any]) -> Rows:
        with reading(self._engine) as connection:
            return rows(connection, statement, **values)

    async def rows(self, statement: Prepared, **values: Any) -> Rows:
        return await run_in_threadpool(self._rows, statement, values)

    def close(self) -> None:
        """The engine is its owner's to dispose of."""


@dataclass(slots=True)
class Request:
    statement: Prepared
    values: Mapping[str, Any]
    answer: asyncio.Future[Rows]


class Nonblocking:
    """Up to `size` asynchronous psycopg2 connections, opened when first needed and kept;
    each holds the statements it has prepared.

    Requests queue in arrival order. A free connection takes the oldest waiting request
    and, with it, every other waiting request for the same statement (up to `batch` in
    all), and asks them in one query: the statement's batched form (prepared.py). On a
    busy worker that is most of the waiting requests, and one query, one round trip and
    one wake-up of a backend serve them all: each query's fixed costs (waking the backend,
    and the worker again when the answer comes, the query's own overhead in PostgreSQL
    and psycopg2) were most of what a request cost the database.

    A query belongs to the reader, not to a request: a request cancelled while its query
    runs only loses its answer. A connection that fails is closed, and the requests it
    was answering get the error.
    """

    def __init__(self, connect_args: Mapping[str, Any], *, size: int, batch: int = BATCH) -> None:
        self._connect_args = dict(connect_args)
        self._size = size
        self._batch = batch
        # Connections open or opening.
        self._open = 0
        self._idle: list[Link] = []
        self._queue: deque[Request] = deque()
        self._connecting: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def for_engine(cls, engine: Engine, *, size: int, batch: int = BATCH) -> Nonblocking:
        """The database, user and connection options of `engine`'s own connections."""
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        if args:
            raise ValueError("the database URL must name its server by keywords")
        return cls({**kwargs, **POSTGRESQL_CONNECT_ARGS}, size=size, batch=batch)

    async def rows(self, statement: Prepared, **values: Any) -> Rows:
        answer: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        self._queue.append(Request(statement, values, answer))
        self._dispatch()
        return await answer

    def close(self) -> None:
        """Idle connections close now, busy ones when their query is answered."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def _dispatch(self) -> None:
        """Waiting requests to idle connections; a new connection if none is idle."""
        while self._queue:
            if self._idle:
                taken = self._next()
                if taken:
                    self._idle.pop().send(taken)
            elif self._open < self._size:
                self._open += 1
                task = asyncio.get_running_loop().create_task(self._connect())
                # The loop keeps only a weak reference to a task.
                self._connecting.add(task)
                task.add_done_callback(self._connecting.discard)
                return
            else:
                return

    def _oldest(self) -> Request | None:
        """The oldest waiting request still waiting (those cancelled meanwhile dropped),
        taken off the queue."""
        queue = self._queue
        while queue and queue[0].answer.done():
            queue.popleft()
        return queue.popleft() if queue else None

    def _next(self) -> list[Request]:
        """The oldest waiting request and the others for its statement, oldest first; []
        when every waiting request was cancelled."""
        first = self._oldest()
        if first is None:
            return []
        queue = self._queue
        taken = [first]
        if queue and self._batch > 1:
            rest: deque[Request] = deque()
            for request in queue:
                if request.answer.done():
                    continue
                if request.statement is first.statement and len(taken) < self._batch:
                    taken.append(request)
                else:
                    rest.append(request)
            self._queue = rest
        return taken

    async def _connect(self) -> None:
        try:
            link = Link(await _connected(self._connect_args), self)
        except Exception as error:
            self._open -= 1
            # The oldest waiting request learns why; the next one tries again.
            oldest = self._oldest()
            if oldest is not None:
                oldest.answer.set_exception(error)
            self._dispatch()
            return
        except BaseException:
            self._open -= 1
            raise
        self.free(link)

    def free(self, link: Link) -> None:
        """`link` answered its query: on to the next, or idle."""
        if self._closed:
            self.discard(link)
            return
        self._idle.append(link)
        self._dispatch()

    def discard(self, link: Link) -> None:
        self._open -= 1
        link.close()
        if not self._closed:
            self._dispatch()


class Link:
    """One connection and the query it runs, driven by callbacks from the event loop: its
    socket stays watched for the connection's life (adding and removing it around every
    query cost two system calls per query).

    Readable with no query running means the server closed the connection or sent a
    notice: the watch then stops (the loop would otherwise call it again at once), and the
    next query watches again and finds out what it was.
    """

    def __init__(self, connection: Any, reader: Nonblocking) -> None:
        self.connection = connection
        self._reader = reader
        self._cursor = connection.cursor()
        self._descriptor: int = connection.fileno()
        # The statements prepared on this connection, by name.
        self.prepared: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._taken: list[Request] = []
        self._preparing = ""

    def send(self, taken: list[Request]) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Not watched yet, stopped, or watched by another loop (one per test, say).
            self._unwatch()
            loop.add_reader(self._descriptor, self._readable)
            self._loop = loop
        self._taken = taken
        statement = taken[0].statement
        if len(taken) == 1:
            name, sql, execute = statement.name, statement.sql, statement.execute
            parameters = statement.parameters(taken[0].values)
        else:
            name, sql, execute = statement.batch_name, statement.batch_sql, statement.batch_execute
            each = [statement.parameters(request.values) for request in taken]
            parameters = [list(column) for column in zip(*each, strict=True)]
        if name not in self.prepared:
            # Prepared in the same round trip as its first use. `%` is psycopg2's.
            execute = f"PREPARE {name} AS {sql.replace('%', '%%')}; {execute}"
            self._preparing = name
        try:
            self._cursor.execute(execute, parameters)
        except Exception as error:
            self._failed(error)
            return
        self._poll()

    def close(self) -> None:
        # Before the socket is closed: its number may be another's next.
        self._unwatch()
        try:
            self.connection.close()
        except psycopg2.Error as error:
            log.warning("closing a database connection", extra={"error": type(error).__name__})

    def _readable(self) -> None:
        if self._taken:
            self._poll()
        else:
            self._unwatch()

    def _writable(self) -> None:
        if self._loop is not None:
            self._loop.remove_writer(self._descriptor)
        self._poll()

    def _poll(self) -> None:
        try:
            state = self.connection.poll()
            if state == psycopg2.extensions.POLL_OK:
                found: list[tuple[Any, ...]] = self._cursor.fetchall()
            elif state == psycopg2.extensions.POLL_READ:
                return
            elif state == psycopg2.extensions.POLL_WRITE:
                # A query too long for the socket's buffer.
                assert self._loop is not None
                self._loop.add_writer(self._descriptor, self._writable)
                return
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
        except Exception as error:
            self._failed(error)
            return
        taken, self._taken = self._taken, []
        if self._preparing:
            self.prepared.add(self._preparing)
            self._preparing = ""
        if len(taken) == 1:
            _answer(taken[0], found)
        else:
            answers: list[list[tuple[Any, ...]]] = [[] for _ in taken]
            for row in found:
                answers[row[0] - 1].append(row[1:])
            for request, answer in zip(taken, answers, strict=True):
                _answer(request, answer)
        # The next query waits until these answers are written: their requests resume
        # in the loop's next turn and write their responses, sent in the turn after it
        # (gathered.py), where the query follows them. The backend it wakes would take
        # the CPU from this worker at once on a busy machine (wakeup preemption), with
        # the answers still to write; and requests that arrive meanwhile join the next
        # batch. Measured: p99 ~15-19 ms instead of ~22-26 ms (bench/README.md).
        loop = self._loop
        assert loop is not None
        loop.call_soon(loop.call_soon, self._reader.free, self)

    def _failed(self, error: Exception) -> None:
        taken, self._taken = self._taken, []
        self._reader.discard(self)
        for request in taken:
            if not request.answer.done():
                request.answer.set_exception(error)

    def _unwatch(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._descriptor)
            self._loop.remove_writer(self._descriptor)
        self._loop = None


def _answer(request: Request, found: Rows) -> None:
    # A request cancelled meanwhile has no use for it.
    if not request.answer.done():
        request.answer.set_result(found)


async def _connected(connect_args: Mapping[str, Any]) -> Any:
    """A new asynchronous connection, once psycopg2 says it is ready."""
    connection = psycopg2.connect(**connect_args, async_=True)
    loop = asyncio.get_running_loop()
    descriptor = connection.fileno()
    try:
        while (state := connection.poll()) != psycopg2.extensions.POLL_OK:
            ready: asyncio.Future[None] = loop.create_future()
            if state == psycopg2.extensions.POLL_READ:
                loop.add_reader(descriptor, _settle, ready)
                remove = loop.remove_reader
            elif state == psycopg2.extensions.POLL_WRITE:
                loop.add_writer(descriptor, _settle, ready)
                remove = loop.remove_writer
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            try:
                await ready
            finally:
                remove(descriptor)
    except BaseException:
        connection.close()
        raise
    return connection


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def reader_for(engine: Engine, *, size: int = 8, batch: int = BATCH) -> Reader:
    if engine.dialect.name == "postgresql":
        return Nonblocking.for_engine(engine, size=size, batch=batch)
    return Threaded(engine)
