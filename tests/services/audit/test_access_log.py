"""The access log's own formatter writes what knm's JSON log format writes."""

from __future__ import annotations

import json
import logging

import pytest

from knm.core import logs
from services.audit.metrics import AccessLine, access


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
