"""The readers of the prepared statements: the same tuples whichever reads them, and as
SQLAlchemy reads them; on PostgreSQL the non-blocking one asks waiting requests for one
statement in one query (its batched form, which gives each request exactly the
statement's rows), and recovers from a lost connection and cancelled requests."""

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


async def settled() -> None:
    """The loop's turns after an answer: its connection takes the next query, or is idle,
    once the answer is written (readers.Link)."""
    for _ in range(2):
        await asyncio.sleep(0)


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
        await settled()
        # The connection dies under the reader: one request fails, the next reconnects.
        (link,) = reader._idle
        with postgres.connect() as other:
            other.execute(
                text("SELECT pg_terminate_backend(:pid)"),
                {"pid": link.connection.info.backend_pid},
            )
        with pytest.raises(psycopg2.Error):
            await reader.rows(statement, **values)
        assert await reader.rows(statement, **values) == first
        await settled()
        # A request cancelled mid-query loses its answer; its query finishes, and the
        # connection serves the next.
        (link,) = reader._idle
        slow = asyncio.ensure_future(reader.rows(statement, **values))
        await asyncio.sleep(0)
        assert not reader._idle
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await reader.rows(statement, **values) == first
        await settled()
        assert reader._idle == [link]

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


# Each statement's requests for one batch: some with rows, some without, some repeated.
BATCHES: list[tuple[Prepared, list[dict[str, Any]]]] = [
    (
        HOLDER_AT,
        [
            {"ip": "10.0.0.1", "at": START + timedelta(minutes=2, seconds=30)},
            {"ip": "10.0.0.9", "at": START},
            {"ip": "10.0.0.2", "at": START + timedelta(minutes=1, seconds=30)},
            {"ip": "10.0.0.1", "at": START - timedelta(seconds=1)},
            {"ip": "10.0.0.1", "at": START + timedelta(minutes=2, seconds=30)},
            {"ip": "10.0.0.3", "at": START + timedelta(minutes=6)},
        ],
    ),
    (
        ADDRESS_LINES,
        [{"ip": "10.0.0.9"}, {"ip": "10.0.0.2"}, {"ip": "10.9.9.9"}, {"ip": "10.0.0.2"}],
    ),
    (
        POD_LINES,
        [
            {"namespace": "bulk", "name": "pod-1-2"},
            {"namespace": "bulk", "name": "nobody"},
            {"namespace": "bulk", "name": "pod-0-0"},
            {"namespace": "bulk", "name": "pod-1-2"},
        ],
    ),
    (VIP_LINES, [{"namespace": "bulk", "name": "svc"}, {"namespace": "other", "name": "svc"}]),
]


@pytest.fixture
def instants(postgres_url: str) -> Iterator[Engine]:
    """Besides tenures, an address whose lines share their instants: only the order they
    were written in (seq) tells them apart, as it does in the statements' order."""
    for url in fresh_postgres_database(postgres_url):
        engine = create_engine(url)
        upgrade(engine)
        found = tenures(addresses=3, holders=4, start=START)
        found.append(line(ip="10.254.0.1", action="allocated", kind="service", uid="svc", at=START))
        for uid in ("pod-x", "pod-y", "pod-z"):
            for action in ("allocated", "released"):
                found.append(line(ip="10.0.0.9", action=action, kind="pod", uid=uid, at=START))
        write(engine, found)
        engine.dispose()
        reader = read_only_engine(url)
        yield reader
        reader.dispose()


def one_by_one(engine: Engine, statement: Prepared, asked: list[dict[str, Any]]) -> list[Any]:
    with engine.connect() as connection:
        return [list(map(tuple, rows(connection, statement, **values))) for values in asked]


def test_the_batched_form_gives_each_request_the_statements_rows(instants: Engine) -> None:
    """In order, complete, none for a request with none, the same for a repeated one."""
    connection = instants.raw_connection()
    try:
        cursor = connection.cursor()
        for statement, asked in BATCHES:
            expected = one_by_one(instants, statement, asked)
            assert [] in expected, statement.name
            assert any(expected), statement.name
            cursor.execute(f"PREPARE {statement.batch_name} AS {statement.batch_sql}")
            arrays = [[values[name] for values in asked] for name in statement.positions]
            cursor.execute(statement.batch_execute, arrays)
            found: list[list[tuple[Any, ...]]] = [[] for _ in asked]
            numbers = []
            for number, *row in cursor.fetchall():
                numbers.append(number)
                found[number - 1].append(tuple(row))
            assert numbers == sorted(numbers), statement.name
            assert found == expected, statement.name
        # The lines of one instant in the order they were written.
        assert [row[1] for row in one_by_one(instants, ADDRESS_LINES, [{"ip": "10.0.0.9"}])[0]] == [
            "allocated",
            "released",
        ] * 3
    finally:
        connection.close()


def test_waiting_requests_for_one_statement_go_as_one_query(instants: Engine) -> None:
    """While the only connection is busy, the requests that queue behind it are answered
    by one query per statement (a lone one by the statement itself), each with its own
    rows."""
    reader = Nonblocking.for_engine(instants, size=1)
    asked = [(statement, values) for statement, each in BATCHES[:3] for values in each]
    asked.append((VIP_LINES, BATCHES[3][1][0]))
    expected = [one_by_one(instants, statement, [values])[0] for statement, values in asked]

    async def scenario() -> list[list[tuple[Any, ...]]]:
        await reader.rows(*QUESTIONS[0][:1], **QUESTIONS[0][1])  # the connection, opened
        await settled()
        busy = asyncio.ensure_future(reader.rows(*QUESTIONS[0][:1], **QUESTIONS[0][1]))
        await asyncio.sleep(0)
        assert not reader._idle
        *answers, _ = await asyncio.gather(
            *(reader.rows(statement, **values) for statement, values in asked), busy
        )
        await settled()
        return [list(map(tuple, answer)) for answer in answers]

    try:
        assert asyncio.run(scenario()) == expected
        (link,) = reader._idle
        assert {statement.batch_name for statement, _ in BATCHES[:3]} <= link.prepared
        assert VIP_LINES.name in link.prepared
        assert VIP_LINES.batch_name not in link.prepared
    finally:
        reader.close()


def test_a_cancelled_request_leaves_the_others_of_its_batch_answered(instants: Engine) -> None:
    """Cancelled while waiting: left out of the batch. Cancelled while its batch runs:
    the others get their rows, and the connection is kept."""
    reader = Nonblocking.for_engine(instants, size=1)
    statement, asked = BATCHES[0]
    expected = one_by_one(instants, statement, asked)

    async def scenario() -> None:
        await reader.rows(statement, **asked[0])  # the connection, opened
        await settled()
        busy = asyncio.ensure_future(reader.rows(statement, **asked[0]))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(reader.rows(statement, **values)) for values in asked]
        await asyncio.sleep(0)  # all of them queued
        waiting[1].cancel()
        assert list(map(tuple, await busy)) == expected[0]
        await settled()  # the others go, as one query
        assert not reader._idle
        waiting[2].cancel()
        for n, request in enumerate(waiting):
            if n in (1, 2):
                with pytest.raises(asyncio.CancelledError):
                    await request
            else:
                assert list(map(tuple, await request)) == expected[n], n
        await settled()
        assert len(reader._idle) == 1

    try:
        asyncio.run(scenario())
    finally:
        reader.close()
