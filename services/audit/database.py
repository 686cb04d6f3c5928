"""The audit API's connections: they can read the allocator's database and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from sqlalchemy import Connection, Engine, event

from knm.core.store.database import create_engine

# A request that needs longer than this is cut short (503) instead of holding a backend.
STATEMENT_TIMEOUT_MS = 10_000


def read_only_engine(url: str, *, pool_size: int = 8) -> Engine:
    """PostgreSQL refuses every write on these connections (default_transaction_read_only);
    SQLite is opened query_only.

    On PostgreSQL a question answered by one statement costs one round trip: the
    connections run in autocommit (no BEGIN, no ROLLBACK around a lone SELECT) and are not
    pinged when taken from the pool; a connection found dead fails its one request (503)
    and the pool is refilled. `reading(consistent=True)` gives a question that takes
    several statements one snapshot. At most `pool_size` queries run at once: more would
    only queue inside the database, and a pool that overflows opens and closes a
    connection per request.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _query_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.close()

        return engine
    return sqlalchemy.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
        connect_args=POSTGRESQL_CONNECT_ARGS,
    )


# Every connection of the API to PostgreSQL, through SQLAlchemy or not (readers.py).
POSTGRESQL_CONNECT_ARGS = {
    "application_name": "knm-audit",
    # Times come back in UTC, whether read through SQLAlchemy or the driver. The prepared
    # statements (queries/prepared.py) are seeks whose best plan does not depend on the
    # values: planned once, not once per request.
    "options": "-c default_transaction_read_only=on "
    f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c timezone=UTC "
    "-c plan_cache_mode=force_generic_plan",
}


@contextmanager
def reading(engine: Engine, *, consistent: bool = False) -> Iterator[Connection]:
    """A connection; with `consistent`, its statements share one snapshot (PostgreSQL's
    REPEATABLE READ; a SQLite transaction always has one)."""
    with engine.connect() as connection:
        if not consistent:
            yield connection
            return
        snapshot = connection
        if connection.dialect.name == "postgresql":
            snapshot = connection.execution_options(isolation_level="REPEATABLE READ")
        with snapshot.begin():
            yield snapshot
