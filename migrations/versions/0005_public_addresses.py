"""public addresses: a LoadBalancer service's ingress address, unique like the VIP

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite adds a unique constraint only by rebuilding the table.
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("public_ip", sa.String(length=15), nullable=True))
        batch.create_unique_constraint(op.f("uq_services_public_ip"), ["public_ip"])


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_constraint(op.f("uq_services_public_ip"), type_="unique")
        batch.drop_column("public_ip")
