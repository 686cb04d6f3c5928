"""an index for "who held this address at T": holders' lines only, newest first

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Floating IPs' lines share their VIP's address without holding it (see the schema).
HOLDER_LINES = "kind <> 'floating'"


def upgrade() -> None:
    op.create_index(
        "ix_address_history_holder",
        "address_history",
        ["ip", "at", "seq"],
        postgresql_where=sa.text(HOLDER_LINES),
        sqlite_where=sa.text(HOLDER_LINES),
    )


def downgrade() -> None:
    op.drop_index("ix_address_history_holder", table_name="address_history")
