"""The audit API's connections: they can read the allocator's database and nothing else."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event

from knm.core.store.database import create_engine

# A request that needs longer than this is cut short (503) instead of holding a backend.
STATEMENT_TIMEOUT_MS = 10_000


def read_only_engine(url: str, *, pool_size: int = 8) -> Engine:
    """PostgreSQL refuses every write on these connections (default_transaction_read_only)
    and gives each request one snapshot (REPEATABLE READ), so an answer built from several
    statements is consistent; SQLite is opened query_only."""
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
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        isolation_level="REPEATABLE READ",
        connect_args={
            "application_name": "knm-audit",
            "options": "-c default_transaction_read_only=on "
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        },
    )
