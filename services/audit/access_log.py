"""The access log: a JSON line per request, as knm's services write their logs (knm.core.logs:
time, level, logger, message, then the fields), to the `knm.audit.access` logger.

Configured with `lean_access_log()` (the JSON format), a request's line is made straight
from its fields and written with the rest of its event-loop turn's. Through logging's
general path a line cost ~20 us of a request's ~300 us of CPU (a LogRecord, with its
process, thread and caller looked up, a handler's lock, the standard library's JSON
encoder set up anew), measured; made directly, ~3 us. Any other configuration of the
logger (a filter, another handler, pytest's capture) gets the records as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from pydantic_core import to_json

access = logging.getLogger("knm.audit.access")

MESSAGE = "request"


class AccessLine(logging.Formatter):
    """The line for an access log record, its fields known (`FIELDS`): no search through
    the record's attributes for extra fields, and the time's text kept for the second it
    names."""

    FIELDS = ("method", "path", "status", "duration_ms", "client", "token")

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self.time_text(record.created)

    def time_text(self, created: float) -> str:
        """`created` as logging's default `asctime` writes it."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        # What LogRecord's msecs are.
        return f"{self._second_text},{int((created - second) * 1000):03d}"

    def format(self, record: logging.LogRecord) -> str:
        fields = {name: record.__dict__.get(name) for name in self.FIELDS}
        return self.line(
            self.formatTime(record),
            fields,
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
        )

    def line(
        self,
        time_text: str,
        fields: Mapping[str, Any],
        *,
        level: str = "INFO",
        logger: str = access.name,
        message: str = MESSAGE,
    ) -> str:
        head = {"time": time_text, "level": level, "logger": logger, "message": message}
        # `str` for a value JSON has no form for, as knm.core.logs' formatter does.
        return to_json({**head, **fields}, fallback=str).decode()


class TurnBuffered(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines written together once per turn of the event loop they were logged in, instead
    of a write and a flush each. Logged outside a running loop, a line is written at
    once. A line waits at most for the rest of its turn; what is left at exit is written
    by logging's own shutdown, which flushes every handler (a killed process loses that
    turn's)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock (Handler.handle).
        try:
            self._add(self.format(record))
        except Exception:
            self.handleError(record)

    def request(self, line: AccessLine, fields: Mapping[str, Any]) -> None:
        """A request's line, made by `line` (this handler's formatter) without a record."""
        with self.lock or contextlib.nullcontext():
            self._add(line.line(line.time_text(time.time()), fields))

    def _add(self, text: str) -> None:
        self._lines.append(text)
        if len(self._lines) > 1:
            return  # its turn's flush is already asked for
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            if self._lines:
                lines, self._lines = self._lines, []
                self.stream.write(self.terminator.join(lines) + self.terminator)
            super().flush()


def lean_access_log() -> None:
    """The access log's lines through their own handler and `AccessLine` (same output as
    knm.core.logs' JSON format, which the caller has configured)."""
    handler = TurnBuffered(sys.stderr)
    handler.setFormatter(AccessLine())
    access.handlers[:] = [handler]
    access.propagate = False


def log_request(fields: Mapping[str, Any]) -> None:
    """A request's line (`AccessLine.FIELDS`), if the logger is enabled for INFO."""
    if not access.isEnabledFor(logging.INFO):
        return
    handlers = access.handlers
    if len(handlers) == 1 and not access.filters:
        handler = handlers[0]
        formatter = handler.formatter
        if (
            type(handler) is TurnBuffered
            and isinstance(formatter, AccessLine)
            and not handler.filters
            and handler.level <= logging.INFO
        ):
            # What logging would write for the record, made without one.
            handler.request(formatter, fields)
            return
    # What `access.info(MESSAGE, extra=fields)` does, without walking the stack for the
    # caller's file and line: the caller would always be this line.
    access.handle(
        access.makeRecord(access.name, logging.INFO, __file__, 0, MESSAGE, (), None, None, fields)
    )
