"""Engines, and the schema's version: upgrade it, or refuse to run on the wrong one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event
from sqlalchemy.pool import StaticPool


class SchemaMismatchError(Exception):
    pass


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///:memory:")
        engine = sqlalchemy.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sqlalchemy.create_engine(url, pool_pre_ping=True)


def migrations_dir() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parent / "migrations", here.parents[3] / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("knm's migrations directory is missing from this installation")


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.downgrade(_config(connection), revision)


def require_current_schema(engine: Engine) -> None:
    """Refuse to run on a schema that is behind or ahead of this code, saying what to do."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    url = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise SchemaMismatchError(f"database {url} has no knm schema: run `knm db upgrade`")
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    known = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
    if current in known:
        raise SchemaMismatchError(
            f"database {url} is at schema {current}, this knm needs {head}: run `knm db upgrade`"
        )
    raise SchemaMismatchError(
        f"database {url} is at schema {current}, newer than this knm ({head}): "
        "upgrade knm, or run the knm that wrote it"
    )


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as connection:
        yield connection
