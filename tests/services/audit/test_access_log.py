"""The access log writes what knm's JSON log format writes, with or without a record."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import weakref
from collections.abc import Iterator

import pytest

from knm.core import logs
from services.audit.access_log import AccessLine, TurnBuffered, access, log_request


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


@pytest.fixture
def lean_handler() -> Iterator[tuple[TurnBuffered, io.StringIO]]:
    kept = access.handlers[:], access.propagate, access.level
    stream = io.StringIO()
    handler = TurnBuffered(stream)
    handler.setFormatter(AccessLine())
    access.handlers[:], access.propagate = [handler], False
    access.setLevel(logging.INFO)
    try:
        yield handler, stream
    finally:
        access.handlers[:], access.propagate = kept[0], kept[1]
        access.setLevel(kept[2])


def test_a_request_s_line_made_without_a_record_is_the_record_s_line(
    json_formatter: logging.Formatter, lean_handler: tuple[TurnBuffered, io.StringIO]
) -> None:
    _, stream = lean_handler
    fields = {
        "method": "GET",
        "path": '/v1/ips/10.0.3.7/holder?at=\u00e9"\\',
        "status": 200,
        "duration_ms": 0.5,
        "client": None,
        "token": "12af9cdcc296",
    }
    before = time.time()
    log_request(fields)
    after = time.time()
    written = json.loads(stream.getvalue())
    record = access.makeRecord(
        access.name, logging.INFO, __file__, 1, "request", (), None, None, fields
    )
    expected = json.loads(json_formatter.format(record))
    assert {k: v for k, v in written.items() if k != "time"} == {
        k: v for k, v in expected.items() if k != "time"
    }
    # Written at once (no loop running), with the time it was logged at, as logging
    # writes it.
    texts = set()
    for created in (before, after):
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        texts.add(json_formatter.formatTime(record))
    assert min(texts) <= written["time"] <= max(texts)


@pytest.mark.parametrize("how", ["filter on the logger", "filter on the handler", "level"])
def test_a_configured_filter_or_level_is_honoured(
    lean_handler: tuple[TurnBuffered, io.StringIO], how: str
) -> None:
    handler, stream = lean_handler

    def refuse(record: logging.LogRecord) -> bool:
        return record.__dict__.get("status") != 500

    if how == "filter on the logger":
        access.addFilter(refuse)
    elif how == "filter on the handler":
        handler.addFilter(refuse)
    else:
        handler.setLevel(logging.WARNING)
    try:
        log_request({"status": 500})
        log_request({"status": 200})
    finally:
        access.removeFilter(refuse)
        handler.removeFilter(refuse)
    statuses = [json.loads(line)["status"] for line in stream.getvalue().splitlines()]
    assert statuses == ([] if how == "level" else [200])


def test_a_disabled_access_log_writes_nothing(
    lean_handler: tuple[TurnBuffered, io.StringIO],
) -> None:
    _, stream = lean_handler
    access.setLevel(logging.WARNING)
    log_request({"status": 200})
    assert stream.getvalue() == ""
