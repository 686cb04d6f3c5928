"""The audit API over a history the real pipeline wrote to PostgreSQL (see timeline.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from knm.core.settings import Settings
from services.audit.app import create_app
from services.audit.database import read_only_engine
from services.audit.readers import Reader, reader_for
from tests.conftest import fresh_postgres_database, required
from tests.services.audit.timeline import Timeline, at, record

TOKEN = "audit-test-token-5f1c"
TOKEN_HASH = hashlib.sha256(TOKEN.encode()).hexdigest()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The API's "now" (for quarantine in /v1/pools): after the last step.
NOW = at(130)


@pytest.fixture(scope="package")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Timeline]:
    for url in fresh_postgres_database(required("KNM_DATABASE_URL")):
        yield record(url, tmp_path_factory.mktemp("timeline"))


def audit_app(engine: Engine, reader: Reader | None = None, *, shortcut: bool = True) -> FastAPI:
    settings = Settings(audit_token_hashes=[TOKEN_HASH])
    return create_app(
        engine=engine, settings=settings, reader=reader, clock=lambda: NOW, shortcut=shortcut
    )


def served(timeline: Timeline, *, shortcut: bool) -> Iterator[FastAPI]:
    engine = read_only_engine(timeline.database_url)
    reader = reader_for(engine)
    yield audit_app(engine, reader, shortcut=shortcut)
    reader.close()
    engine.dispose()


@pytest.fixture(scope="package")
def app(timeline: Timeline) -> Iterator[FastAPI]:
    """As served: the busiest routes' well-formed requests answered by shortcut.py."""
    yield from served(timeline, shortcut=True)


@pytest.fixture(scope="package")
def routes_app(timeline: Timeline) -> Iterator[FastAPI]:
    """Every request answered by FastAPI's routes."""
    yield from served(timeline, shortcut=False)


@pytest.fixture(params=["shortcut", "routes"])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The endpoints' tests run both ways: the shortcut must answer as the routes do."""
    app: FastAPI = request.getfixturevalue("app" if request.param == "shortcut" else "routes_app")
    with TestClient(app, headers=AUTH) as client:
        yield client
