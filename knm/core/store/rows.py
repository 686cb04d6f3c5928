"""Bulk writes that work alike on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, and_, delete, or_, tuple_
from sqlalchemy.dialects import postgresql, sqlite


def upsert(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, replacing those whose primary key already exists."""
    if not rows:
        return
    keys = [column.name for column in table.primary_key.columns]
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    updates = {
        column.name: statement.excluded[column.name]
        for column in table.columns
        if column.name not in keys
    }
    if updates:
        statement = statement.on_conflict_do_update(index_elements=keys, set_=updates)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    connection.execute(statement, list(rows))


def delete_keys(connection: Connection, table: Table, keys: Iterable[tuple[Any, ...]]) -> None:
    """Delete rows by primary key, in chunks."""
    columns = list(table.primary_key.columns)
    pending = list(keys)
    for start in range(0, len(pending), 500):
        chunk = pending[start : start + 500]
        condition: ColumnElement[bool]
        if len(columns) == 1:
            condition = columns[0].in_([key[0] for key in chunk])
        elif connection.dialect.name == "postgresql":
            condition = tuple_(*columns).in_(chunk)
        else:
            condition = or_(
                *(
                    and_(*(col == value for col, value in zip(columns, key, strict=True)))
                    for key in chunk
                )
            )
        connection.execute(delete(table).where(condition))
