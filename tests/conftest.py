"""Shared fixtures. Store tests run on every database backend, bus tests on every bus.

The real servers come from `knm dev services up` (which `make test` runs) through
KNM_DATABASE_URL and KNM_KAFKA_BOOTSTRAP. Without them those tests fail, on purpose:
a skipped integration test proves nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text

from knm.core.store.database import create_engine, upgrade

DATABASES = ["sqlite", "postgresql"]
HOW = 'run `make test`, or `eval "$(knm dev services env)"` after `knm dev services up`'


def required(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        pytest.fail(f"{variable} is not set: {HOW}")
    return value


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return required("KNM_DATABASE_URL")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return required("KNM_KAFKA_BOOTSTRAP")


def fresh_postgres_database(url: str) -> Iterator[str]:
    """A new, empty database on the server `url` names, dropped afterwards."""
    name = f"knm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'knm.db'}"
        return
    yield from fresh_postgres_database(required("KNM_DATABASE_URL"))


@pytest.fixture
def bare_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(bare_engine: Engine) -> Engine:
    upgrade(bare_engine)
    return bare_engine
