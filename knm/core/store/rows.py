"""Bulk writes that work alike on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg2
from psycopg2.extras import execute_values
from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    LargeBinary,
    Table,
    and_,
    delete,
    or_,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB


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


def insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many rows in one statement.

    On PostgreSQL through psycopg2's execute_values on the transaction's own connection:
    it sends the same multi-row INSERT as SQLAlchemy's bulk path, but without building and
    processing every parameter in Python, which costs most of a large batch's time.
    """
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), list(rows))
        return
    columns = [column.name for column in table.columns if column.name in rows[0]]
    json_columns = {
        column.name for column in table.columns if isinstance(column.type, JSON | JSONB)
    }
    binary_columns = {
        column.name for column in table.columns if isinstance(column.type, LargeBinary)
    }

    def adapt(name: str, value: Any) -> Any:
        if value is None:
            return None
        if name in json_columns:
            return json.dumps(value, separators=(",", ":"))
        if name in binary_columns:
            return psycopg2.Binary(value)
        return value

    values = [tuple(adapt(name, row[name]) for name in columns) for row in rows]
    quoted = ", ".join(f'"{name}"' for name in columns)
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        execute_values(
            cursor,
            f'INSERT INTO "{table.name}" ({quoted}) VALUES %s',
            values,
            page_size=len(values),
        )
    finally:
        cursor.close()
