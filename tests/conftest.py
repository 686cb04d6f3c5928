"""Shared fixtures. Store tests run against every database backend this machine provides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from knm.core.store.database import create_engine, upgrade

DATABASES = ["sqlite"]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'knm.db'}"
    raise AssertionError(request.param)


@pytest.fixture
def bare_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(bare_engine: Engine) -> Engine:
    upgrade(bare_engine)
    return bare_engine
