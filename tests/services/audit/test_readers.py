"""The readers of the prepared statements: the same tuples whichever reads them, and as
SQLAlchemy reads them; on PostgreSQL the non-blocking one recovers from a lost
connection and a cancelled request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from sqlalchemy import Engine, text

from knm.core.store.database import create_engine, upgrade
from services.audit.database import read_only_engine
from services.audit.queries.addresses import ADDRESS_LINES, HOLDER_AT
from services.audit.queries.objects import POD_LINES, VIP_LINES
from services.audit.queries.prepared import Prepared, rows
from services.audit.readers import Nonblocking, Reader, Threaded
from tests.conftest import fresh_postgres_database
from tests.runtime.fleet import free_port
from tests.services.audit.lines import line, tenures, write

START = datetime(2026, 1, 1, tzinfo=UTC)
QUESTIONS: list[tuple[Prepared, dict[str, Any]]] = [
    (HOLDER_AT, {"ip": "10.0.0.1", "at": START + timedelta(minutes=2, seconds=30)}),
    (HOLDER_AT, {"ip": "10.0.0.1", "at": START + timedelta(minutes=3, seconds=30)}),
    (HOLDER_AT, {"ip": "10.0.0.1", "at": START - timedelta(seconds=1)}),
    (ADDRESS_LINES, {"ip": "10.0.0.2"}),
    (ADDRESS_LINES, {"ip": "10.9.9.9"}),
    (POD_LINES, {"namespace": "bulk", "name": "pod-1-2"}),
    (VIP_LINES, {"namespace": "bulk", "name": "svc"}),
]


@pytest.fixture
def filled(engine: Engine) -> Iterator[Engine]:
    found = tenures(addresses=3, holders=4, start=START)
    found.append(line(ip="10.254.0.1", action="allocated", kind="service", uid="svc", at=START))
    write(engine, found)
    reader = read_only_engine(engine.url.render_as_string(hide_password=False))
    yield reader
    reader.dispose()


def readers(engine: Engine) -> list[Reader]:
    found: list[Reader] = [Threaded(engine)]
    if engine.dialect.name == "postgresql":
        found.append(Nonblocking.for_engine(engine, size=2))
    return found


def test_every_reader_gives_what_sqlalchemy_reads(filled: Engine) -> None:
    with filled.connect() as connection:
        expected = [list(map(tuple, rows(connection, s, **v))) for s, v in QUESTIONS]
    assert [bool(answer) for answer in expected] == [True, True, False, True, False, True, True]
    for reader in readers(filled):

        async def ask(reader: Reader = reader) -> list[list[tuple[Any, ...]]]:
            # Concurrently, more questions than connections: some wait for one.
            answers = await asyncio.gather(*(reader.rows(s, **v) for s, v in QUESTIONS * 3))
            return [list(map(tuple, answer)) for answer in answers]

        try:
            assert asyncio.run(ask()) == expected * 3, type(reader).__name__
        finally:
            reader.close()


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[Engine]:
    for url in fresh_postgres_database(postgres_url):
        engine = create_engine(url)
        upgrade(engine)
        write(engine, tenures(addresses=3, holders=4, start=START))
        engine.dispose()
        reader = read_only_engine(url)
        yield reader
        reader.dispose()


def test_the_nonblocking_reader_recovers(postgres: Engine) -> None:
    reader = Nonblocking.for_engine(postgres, size=1)
    statement, values = QUESTIONS[3]

    async def scenario() -> None:
        first = await reader.rows(statement, **values)
        assert first
        # The connection dies under the reader: one request fails, the next reconnects.
        (connection,) = reader._idle
        with postgres.connect() as other:
            other.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": connection.info.backend_pid}
            )
        with pytest.raises(psycopg2.Error):
            await reader.rows(statement, **values)
        assert await reader.rows(statement, **values) == first
        # A request cancelled mid-query leaves no busy connection behind.
        slow = asyncio.ensure_future(reader.rows(statement, **values))
        await asyncio.sleep(0)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await reader.rows(statement, **values) == first

    try:
        asyncio.run(scenario())
    finally:
        reader.close()


def test_an_unreachable_database_is_a_driver_error() -> None:
    engine = read_only_engine(f"postgresql+psycopg2://knm:knm@127.0.0.1:{free_port()}/knm")
    reader = Nonblocking.for_engine(engine, size=1)
    try:
        for _ in range(2):  # and the failed attempt does not hold the only slot
            with pytest.raises(psycopg2.OperationalError):
                asyncio.run(reader.rows(*QUESTIONS[3][:1], **QUESTIONS[3][1]))
    finally:
        reader.close()
        engine.dispose()


def test_a_freed_connection_goes_to_the_longest_waiting_request(postgres: Engine) -> None:
    """Not to a request that arrives as it is freed: that one queues behind."""
    reader = Nonblocking.for_engine(postgres, size=1)
    statement, values = QUESTIONS[3]
    order: list[str] = []

    async def ask(label: str) -> None:
        await reader.rows(statement, **values)
        order.append(label)
        if label == "first":
            # Arrives in the same turn as the connection is freed.
            await ask("newcomer")

    async def scenario() -> None:
        first = asyncio.ensure_future(ask("first"))
        await asyncio.sleep(0)  # the first holds the only connection
        await asyncio.gather(first, ask("waiting"))

    try:
        asyncio.run(scenario())
    finally:
        reader.close()
    assert order == ["first", "waiting", "newcomer"]
