"""The access log's own formatter writes what knm's JSON log format writes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import weakref

import pytest

from knm.core import logs
from services.audit.metrics import AccessLine, TurnBuffered, access


@pytest.fixture
def json_formatter() -> logging.Formatter:
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    logs.configure(level="INFO", format="json")
    formatter = root.handlers[0].formatter
    root.handlers[:], root.level = kept
    assert formatter is not None
    return formatter


@pytest.mark.parametrize("token", ["12af9cdcc296", None])
def test_an_access_line_is_the_json_line_knm_writes(
    json_formatter: logging.Formatter, token: str | None
) -> None:
    fields = {
        "method": "GET",
        "path": '/v1/ips/10.0.3.7/holder?at=2026-11-27T14%3A02%3A00Z&x="\\',
        "status": 404,
        "duration_ms": 1.25,
        "client": "127.0.0.1",
        "token": token,
    }
    record = access.makeRecord(
        access.name, logging.INFO, __file__, 1, "request", (), None, None, fields
    )
    lean = AccessLine()
    assert json.loads(lean.format(record)) == json.loads(json_formatter.format(record))
    # The time's text, kept for its second, is still each record's own.
    later = access.makeRecord(
        access.name, logging.INFO, __file__, 1, "request", (), None, None, fields
    )
    later.created, later.msecs = record.created + 0.5, (record.msecs + 500) % 1000
    assert json.loads(lean.format(later))["time"] == json_formatter.formatTime(later)


def records(count: int) -> list[logging.LogRecord]:
    return [
        access.makeRecord(
            access.name, logging.INFO, __file__, 1, "request", (), None, None, {"status": n}
        )
        for n in range(count)
    ]


def test_lines_logged_in_a_turn_are_written_when_it_ends() -> None:
    stream, plain = io.StringIO(), io.StringIO()
    handler, reference = TurnBuffered(stream), logging.StreamHandler(plain)
    for each in (handler, reference):
        each.setFormatter(AccessLine())

    async def serving() -> None:
        for record in records(3):
            handler.handle(record)
            reference.handle(record)
        assert stream.getvalue() == ""  # the turn is not over
        await asyncio.sleep(0)
        assert stream.getvalue() == plain.getvalue()
        assert len(stream.getvalue().splitlines()) == 3

    asyncio.run(serving())


def test_a_line_logged_outside_an_event_loop_is_written_at_once() -> None:
    stream = io.StringIO()
    handler = TurnBuffered(stream)
    handler.setFormatter(AccessLine())
    (record,) = records(1)
    handler.handle(record)
    assert json.loads(stream.getvalue())["message"] == "request"


def test_what_a_stopped_loop_left_is_written_by_logging_s_shutdown() -> None:
    stream = io.StringIO()
    handler = TurnBuffered(stream)
    handler.setFormatter(AccessLine())

    loop = asyncio.new_event_loop()

    def last_turn() -> None:
        loop.stop()  # the loop ends with this turn, before the flush it is asked for
        for record in records(2):
            handler.handle(record)

    loop.call_soon(last_turn)
    try:
        loop.run_forever()
    finally:
        loop.close()
    assert stream.getvalue() == ""
    logging.shutdown([weakref.ref(handler)])
    assert len(stream.getvalue().splitlines()) == 2
