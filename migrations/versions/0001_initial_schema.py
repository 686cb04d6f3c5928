"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "address_history",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ip", sa.String(length=15), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("pool", sa.String(length=18), nullable=True),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("network", sa.String(length=320), nullable=True),
        sa.Column("node", sa.String(length=253), nullable=True),
        sa.Column("service", sa.String(length=320), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fact_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_address_history")),
    )
    op.create_index(op.f("ix_address_history_at"), "address_history", ["at"], unique=False)
    op.create_index(op.f("ix_address_history_ip_at"), "address_history", ["ip", "at"], unique=False)
    op.create_index(
        op.f("ix_address_history_namespace_name_at"),
        "address_history",
        ["namespace", "name", "at"],
        unique=False,
    )

    op.create_table(
        "blocks",
        sa.Column("cidr", sa.String(length=18), nullable=False),
        sa.Column("pool", sa.String(length=18), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint("cidr", name=op.f("pk_blocks")),
    )
    op.create_index(op.f("ix_blocks_node"), "blocks", ["node"], unique=False)

    op.create_table(
        "consumer_positions",
        sa.Column("consumer", sa.String(length=253), nullable=False),
        sa.Column("topic", sa.String(length=253), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "consumer", "topic", "partition", name=op.f("pk_consumer_positions")
        ),
    )
    op.create_table(
        "floating_ips",
        sa.Column("service_uid", sa.String(length=64), nullable=False),
        sa.Column("pod_uid", sa.String(length=64), nullable=False),
        sa.Column("vip", sa.String(length=15), nullable=False),
        sa.PrimaryKeyConstraint("service_uid", "pod_uid", name=op.f("pk_floating_ips")),
    )
    op.create_index(op.f("ix_floating_ips_pod_uid"), "floating_ips", ["pod_uid"], unique=False)
    op.create_index(op.f("ix_floating_ips_vip"), "floating_ips", ["vip"], unique=False)

    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=253), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_inbox")),
    )
    op.create_index(op.f("ix_inbox_processed_at"), "inbox", ["processed_at"], unique=False)

    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_namespaces")),
    )
    op.create_table(
        "networks",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=320), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("subject", sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_networks")),
    )
    op.create_index(op.f("ix_networks_namespace"), "networks", ["namespace"], unique=False)

    op.create_table(
        "nodes",
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=45), nullable=True),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_nodes")),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("topic", sa.String(length=253), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox")),
    )
    op.create_table(
        "pods",
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=True),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "annotations",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("host_network", sa.Boolean(), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column(
            "owners",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "ports",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("collection", sa.String(length=253), nullable=False),
        sa.Column(
            "uses",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("network", sa.String(length=320), nullable=True),
        sa.Column("ip", sa.String(length=15), nullable=True),
        sa.Column("block", sa.String(length=18), nullable=True),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_pods")),
        sa.UniqueConstraint("ip", name=op.f("uq_pods_ip")),
    )
    op.create_index(op.f("ix_pods_namespace_name"), "pods", ["namespace", "name"], unique=False)
    op.create_index(op.f("ix_pods_node"), "pods", ["node"], unique=False)

    op.create_table(
        "policies",
        sa.Column("name", sa.String(length=700), nullable=False),
        sa.Column("from_network", sa.String(length=320), nullable=False),
        sa.Column("to_network", sa.String(length=320), nullable=False),
        sa.Column("service_uid", sa.String(length=64), nullable=False),
        sa.Column(
            "ports",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_policies")),
    )
    op.create_index(op.f("ix_policies_from_network"), "policies", ["from_network"], unique=False)
    op.create_index(op.f("ix_policies_to_network"), "policies", ["to_network"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column("ip", sa.String(length=15), nullable=False),
        sa.Column("pool", sa.String(length=18), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ip", name=op.f("pk_quarantine")),
    )
    op.create_index(op.f("ix_quarantine_until"), "quarantine", ["until"], unique=False)

    op.create_table(
        "services",
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "selector",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "ports",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("cluster_ip", sa.String(length=15), nullable=True),
        sa.Column("headless", sa.Boolean(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("vip", sa.String(length=15), nullable=True),
        sa.Column("vip_source", sa.String(length=16), nullable=True),
        sa.Column("network", sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_services")),
        sa.UniqueConstraint("vip", name=op.f("uq_services_vip")),
    )
    op.create_index(
        op.f("ix_services_namespace_name"), "services", ["namespace", "name"], unique=False
    )

    op.create_table(
        "tombstones",
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_tombstones")),
    )
    op.create_index(op.f("ix_tombstones_deleted_at"), "tombstones", ["deleted_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tombstones_deleted_at"), table_name="tombstones")

    op.drop_table("tombstones")
    op.drop_index(op.f("ix_services_namespace_name"), table_name="services")

    op.drop_table("services")
    op.drop_index(op.f("ix_quarantine_until"), table_name="quarantine")

    op.drop_table("quarantine")
    op.drop_index(op.f("ix_policies_to_network"), table_name="policies")
    op.drop_index(op.f("ix_policies_from_network"), table_name="policies")

    op.drop_table("policies")
    op.drop_index(op.f("ix_pods_node"), table_name="pods")
    op.drop_index(op.f("ix_pods_namespace_name"), table_name="pods")

    op.drop_table("pods")
    op.drop_table("outbox")
    op.drop_table("nodes")
    op.drop_index(op.f("ix_networks_namespace"), table_name="networks")

    op.drop_table("networks")
    op.drop_table("namespaces")
    op.drop_index(op.f("ix_inbox_processed_at"), table_name="inbox")

    op.drop_table("inbox")
    op.drop_index(op.f("ix_floating_ips_vip"), table_name="floating_ips")
    op.drop_index(op.f("ix_floating_ips_pod_uid"), table_name="floating_ips")

    op.drop_table("floating_ips")
    op.drop_table("consumer_positions")
    op.drop_index(op.f("ix_blocks_node"), table_name="blocks")

    op.drop_table("blocks")
    op.drop_index(op.f("ix_address_history_namespace_name_at"), table_name="address_history")
    op.drop_index(op.f("ix_address_history_ip_at"), table_name="address_history")
    op.drop_index(op.f("ix_address_history_at"), table_name="address_history")

    op.drop_table("address_history")
