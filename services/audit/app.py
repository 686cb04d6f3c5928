"""The audit API's application, put together in a factory: importing it does nothing."""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg2
from fastapi import FastAPI, Request
from fastapi.middleware import Middleware
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp

from knm import __version__
from knm.core.clock import Clock, utcnow
from knm.core.settings import Settings
from services.audit import ops, v1
from services.audit.auth import Tokens
from services.audit.metrics import Metrics, RequestMetrics
from services.audit.readers import Reader, reader_for
from services.audit.shortcut import Shortcut

log = logging.getLogger("knm.audit")

DESCRIPTION = """\
Who held an address, when: the allocator's append-only history of every allocation and
release of pod addresses, service VIPs and the floating IPs backends carry, and the
current networks, policies and pools. Read-only. Every /v1 route needs a bearer token
whose SHA-256 digest the server is configured with (`KNM_AUDIT_TOKEN_HASHES`).

Times are RFC 3339 with a UTC offset; answers are in UTC. A holder holds an address from
its allocation (included) to its release (excluded).
"""


class AuditAPI(FastAPI):
    """FastAPI, with middleware of knm's own (`outer`, outermost first) in front of all of
    FastAPI's: the shortcut's answers skip the layers FastAPI's routes need (catching
    their exceptions, limiting request bodies, telemetry), ~4 % of a request's CPU.
    Every exception is still caught, by uvicorn if not by FastAPI: a 500 either way."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outer: list[Middleware] = []

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for cls, args, kwargs in reversed(self.outer):
            app = cls(app, *args, **kwargs)
        return app


def create_app(
    *,
    engine: Engine,
    settings: Settings,
    reader: Reader | None = None,
    clock: Clock = utcnow,
    access_log: bool = True,
    shortcut: bool = True,
) -> FastAPI:
    """The application over `engine`, which should be read-only (see database.py); the
    busiest routes read through `reader` (by default, the one for `engine`'s database),
    which the caller closes. Without `shortcut`, FastAPI's routes answer every request
    (the tests compare both ways)."""
    app = AuditAPI(
        title="knm audit API",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        # knm's metrics are Prometheus's (metrics.py). FastAPI's own OpenTelemetry,
        # unconfigured here, still asked the global providers on every request whether it
        # was (~4 % of a request's CPU, profiled).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    metrics = Metrics(engine=engine, settings=settings, clock=clock)
    reader = reader if reader is not None else reader_for(engine)
    tokens = Tokens(settings.audit_token_hashes)
    v1.register(app, engine=engine, reader=reader, tokens=tokens, settings=settings, clock=clock)
    ops.register(app, engine=engine, metrics=metrics)
    # Outside the shortcut: every request is timed and logged.
    app.outer.append(Middleware(RequestMetrics, metrics=metrics, access_log=access_log))
    if shortcut:
        app.outer.append(
            Middleware(
                Shortcut, fastapi=app, reader=reader, tokens=tokens, unavailable=v1.UNAVAILABLE
            )
        )

    @app.exception_handler(DBAPIError)
    async def database_unavailable(_request: Request, error: DBAPIError) -> JSONResponse:
        log.error(
            "database error",
            extra={"error": type(error.orig).__name__ if error.orig else type(error).__name__},
        )
        return JSONResponse({"detail": v1.UNAVAILABLE}, status_code=503)

    # The same, from the driver directly (readers.Nonblocking).
    @app.exception_handler(psycopg2.Error)
    async def driver_unavailable(_request: Request, error: psycopg2.Error) -> JSONResponse:
        log.error("database error", extra={"error": type(error).__name__})
        return JSONResponse({"detail": v1.UNAVAILABLE}, status_code=503)

    return app


def openapi_text(app: FastAPI) -> str:
    """The OpenAPI document as docs/openapi.json keeps it."""
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
