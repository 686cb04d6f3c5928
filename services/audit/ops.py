"""/healthz, /readyz and /metrics: for the orchestrator and Prometheus, without a token."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from knm.core.store.database import head_revision
from services.audit.metrics import Metrics
from services.audit.models import Health

log = logging.getLogger("knm.audit")


def register(app: FastAPI, *, engine: Engine, metrics: Metrics) -> None:
    # Read once: the migrations shipped with this code do not change while it runs.
    head = head_revision()

    @app.get("/healthz", response_model=Health, summary="Liveness")
    def healthz() -> Health:
        """200 while the process serves requests."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready; `detail` says why."}},
        summary="Readiness",
    )
    def readyz() -> Health | JSONResponse:
        """200 while the database answers and has this knm's schema."""
        try:
            current = _schema(engine)
        except DBAPIError as error:
            log.warning("not ready: database unreachable", extra={"error": type(error).__name__})
            return _unready("the database is unreachable")
        if current != head:
            return _unready(f"the database is at schema {current}, this knm reads {head}")
        return Health(status="ready")

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
        summary="Prometheus metrics",
    )
    def prometheus() -> Response:
        """Requests by route, allocations and releases by kind, pool usage."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _schema(engine: Engine) -> str | None:
    """The schema's revision, read directly: alembic's own reader logs each time, and a
    probe asks every few seconds."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return str(found) if found is not None else None


def _unready(detail: str) -> JSONResponse:
    body = Health(status="unavailable", detail=detail)
    return JSONResponse(body.model_dump(), status_code=503)
