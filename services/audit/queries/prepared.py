"""The statements behind the API's busiest questions, prepared once per connection on
PostgreSQL.

A request then costs the database no parsing or planning (one EXECUTE of a plan it
already holds), and the server no statement building, compiling or per-row type
processing: psycopg2's tuples come back as they are. Each statement is written once, in
SQLAlchemy Core; on SQLite (tests, a local file) the same statement runs through the
connection as usual, and gives the same tuples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

# PREPARE takes $1, $2... (psycopg2's own style is %(name)s).
_POSTGRESQL = PGDialect_psycopg2(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Prepared:
    name: str
    statement: Select[Any]
    sql: str = field(init=False)
    positions: tuple[str, ...] = field(init=False)
    defaults: Mapping[str, Any] = field(init=False)
    execute: str = field(init=False)

    def __post_init__(self) -> None:
        compiled = self.statement.compile(dialect=_POSTGRESQL)
        names = tuple(compiled.positiontup or ())
        set_ = object.__setattr__
        set_(self, "sql", compiled.string)
        set_(self, "positions", names)
        # Values fixed in the statement itself (a LIMIT).
        set_(self, "defaults", dict(compiled.construct_params(_check=False) or {}))
        set_(self, "execute", f"EXECUTE {self.name}({', '.join(['%s'] * len(names))})")


_registered: set[str] = set()


def prepared(name: str, statement: Select[Any]) -> Prepared:
    """Declare a statement (at import time of its module: building it does no I/O)."""
    found = Prepared(f"knm_audit_{name}", statement)
    if found.name in _registered:
        raise ValueError(f"two statements named {name!r}")
    _registered.add(found.name)
    return found


def rows(connection: Connection, statement: Prepared, **values: Any) -> Sequence[Sequence[Any]]:
    """The statement's rows, as tuples in the order of its columns.

    On PostgreSQL the statement is prepared the first time a connection runs it; what a
    connection holds lives in the pool's record of it, which is cleared if the
    connection is ever replaced.
    """
    if connection.dialect.name != "postgresql":
        return connection.execute(statement.statement, values).all()
    pooled = connection.connection
    dbapi = pooled.dbapi_connection
    assert dbapi is not None
    held: set[str] = pooled.info.setdefault("knm_audit_prepared", set())
    given = {**statement.defaults, **values}
    cursor = dbapi.cursor()
    try:
        if statement.name not in held:
            cursor.execute(f"PREPARE {statement.name} AS {statement.sql}")
            held.add(statement.name)
        cursor.execute(statement.execute, [given[name] for name in statement.positions])
        return cursor.fetchall()
    finally:
        cursor.close()
