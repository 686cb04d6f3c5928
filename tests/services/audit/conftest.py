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


def audit_app(engine: Engine, reader: Reader | None = None) -> FastAPI:
    settings = Settings(audit_token_hashes=[TOKEN_HASH])
    return create_app(engine=engine, settings=settings, reader=reader, clock=lambda: NOW)


@pytest.fixture(scope="package")
def app(timeline: Timeline) -> Iterator[FastAPI]:
    engine = read_only_engine(timeline.database_url)
    reader = reader_for(engine)
    yield audit_app(engine, reader)
    reader.close()
    engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, headers=AUTH) as client:
        yield client
