"""plain JSON instead of JSONB on PostgreSQL

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [
    ("namespaces", "labels", False),
    ("nodes", "labels", False),
    ("pods", "labels", False),
    ("pods", "annotations", False),
    ("pods", "owners", False),
    ("pods", "ports", False),
    ("pods", "uses", False),
    ("services", "selector", True),
    ("services", "ports", False),
    ("policies", "ports", False),
    ("outbox", "headers", False),
    ("model_journal", "changes", False),
]


def _change(new: sa.types.TypeEngine[object], old: sa.types.TypeEngine[object], cast: str) -> None:
    # SQLite keeps JSON as text either way: only PostgreSQL has anything to change.
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(
            table,
            column,
            type_=new,
            existing_type=old,
            existing_nullable=nullable,
            postgresql_using=f"{column}::{cast}",
        )


def upgrade() -> None:
    _change(sa.JSON(), postgresql.JSONB(astext_type=sa.Text()), "json")


def downgrade() -> None:
    _change(postgresql.JSONB(astext_type=sa.Text()), sa.JSON(), "jsonb")
