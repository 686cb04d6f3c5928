"""The statements behind the API's busiest questions, prepared once per connection on
PostgreSQL.

A request then costs the database no parsing or planning (one EXECUTE of a plan it
already holds), and the server no statement building, compiling or per-row type
processing: psycopg2's tuples come back as they are. Each statement is written once, in
SQLAlchemy Core; on SQLite (tests, a local file) the same statement runs through the
connection as usual, and gives the same tuples.

Each statement also has a batched form, made from it (readers.py sends it when several
requests for the statement wait for a connection): the statement once for every row of
arrays of its parameters, its rows numbered by the request and in the statement's own
order within it. One query instead of several: on a busy server the per-query costs
(the round trip, waking a backend and the worker, the query's fixed cost in PostgreSQL
and psycopg2) are most of what a request costs the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, String, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.sql.visitors import replacement_traverse
from sqlalchemy.types import TypeEngine

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
    # The batched form: its parameters are arrays of the statement's, in `positions`'
    # order; each row is the request's number (from 1) and then the statement's row.
    batch_name: str = field(init=False)
    batch_sql: str = field(init=False)
    batch_execute: str = field(init=False)

    def __post_init__(self) -> None:
        compiled = self.statement.compile(dialect=_POSTGRESQL)
        names = tuple(compiled.positiontup or ())
        set_ = object.__setattr__
        set_(self, "sql", compiled.string)
        set_(self, "positions", names)
        # Values fixed in the statement itself (a LIMIT).
        set_(self, "defaults", dict(compiled.construct_params(_check=False) or {}))
        set_(self, "execute", _execute(self.name, len(names)))
        batch = batched(self.statement, names).compile(dialect=_POSTGRESQL)
        if tuple(batch.positiontup or ()) != names:
            raise ValueError(f"{self.name}: the batched form takes other parameters")
        set_(self, "batch_name", f"{self.name}_batch")
        set_(self, "batch_sql", batch.string)
        set_(self, "batch_execute", _execute(self.batch_name, len(names)))

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        """`values` and the statement's own fixed ones, in its positional order."""
        given = {**self.defaults, **values} if self.defaults else values
        return [given[name] for name in self.positions]


def _execute(name: str, count: int) -> str:
    """EXECUTE of the prepared statement `name` with `count` parameters (psycopg2's %s)."""
    return f"EXECUTE {name}({', '.join(['%s'] * count)})"


def batched(statement: Select[Any], names: Sequence[str]) -> Select[Any]:
    """`statement` for each row of `unnest` over arrays of its parameters `names`:

        SELECT q.n, s.* FROM unnest($1, $2) WITH ORDINALITY AS q(a, b, n)
        JOIN LATERAL (<statement with q.a, q.b for $1, $2>) AS s ON true
        ORDER BY q.n, <s's row number in statement's order>

    The row number is carried because PostgreSQL's sort is not stable: ordered by q.n
    alone, a request's rows could come back in any order.
    """
    found: dict[str, BindParameter[Any]] = {}

    def collect(element: ClauseElement, **_: Any) -> None:
        if isinstance(element, BindParameter) and element.key in names:
            found[element.key] = element

    replacement_traverse(statement, {}, collect)
    arrays = [bindparam(name, type_=ARRAY(_unbounded(found[name].type))) for name in names]
    given = (
        func.unnest(*arrays).table_valued(*names, with_ordinality="knm_n").render_derived("knm_q")
    )

    def from_row(element: ClauseElement, **_: Any) -> ClauseElement | None:
        if isinstance(element, BindParameter) and element.key in names:
            return given.c[element.key]
        return None

    ordered = func.row_number().over(order_by=statement._order_by_clauses).label("knm_row")
    replaced: Select[Any] = replacement_traverse(statement, {}, from_row)  # type: ignore[assignment]
    each = replaced.add_columns(ordered).lateral("knm_s")
    columns = [column for column in each.c if column.name != "knm_row"]
    return (
        select(given.c.knm_n, *columns)
        .select_from(given.join(each, true()))
        .order_by(given.c.knm_n, each.c.knm_row)
    )


def _unbounded(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    """A string parameter's array as unbounded strings: the cast to VARCHAR(n)[] would cut
    a longer value short, where the statement compares it whole."""
    return String() if isinstance(type_, String) else type_


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
    cursor = dbapi.cursor()
    try:
        if statement.name not in held:
            cursor.execute(f"PREPARE {statement.name} AS {statement.sql}")
            held.add(statement.name)
        cursor.execute(statement.execute, statement.parameters(values))
        return cursor.fetchall()
    finally:
        cursor.close()
