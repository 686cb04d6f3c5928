"""The database: the allocator's model, its append-only history, and exactly-once tracking.

One schema for SQLite (embedded) and PostgreSQL (distributed); Alembic migrations in
`migrations/` create it, and a test keeps them equal to these models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both backends (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Plain JSON on PostgreSQL too: knm writes these far more than it queries inside them,
# and JSON is stored as given while JSONB is parsed and rebuilt on every insert.
Json = JSON()
# SQLite only autoincrements an INTEGER PRIMARY KEY.
Serial = BigInteger().with_variant(Integer(), "sqlite")

NAME = 253
IP = 15
CIDR = 18
UID = 64


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UtcDateTime()}  # noqa: RUF012  (SQLAlchemy reads it as is)


# ---- the cluster as observed, with knm's decisions --------------------------------------


class NamespaceRow(Base):
    __tablename__ = "namespaces"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(String(UID))
    labels: Mapped[dict[str, str]] = mapped_column(Json)


class NodeRow(Base):
    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    uid: Mapped[str] = mapped_column(String(UID))
    address: Mapped[str | None] = mapped_column(String(45))
    labels: Mapped[dict[str, str]] = mapped_column(Json)


class PodRow(Base):
    __tablename__ = "pods"
    uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(NAME))
    node: Mapped[str | None] = mapped_column(String(NAME), index=True)
    labels: Mapped[dict[str, str]] = mapped_column(Json)
    annotations: Mapped[dict[str, str]] = mapped_column(Json)
    host_network: Mapped[bool] = mapped_column(Boolean)
    phase: Mapped[str] = mapped_column(String(32))
    ready: Mapped[bool] = mapped_column(Boolean)
    owners: Mapped[list[dict[str, str]]] = mapped_column(Json)
    ports: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    version: Mapped[int | None] = mapped_column(BigInteger)
    collection: Mapped[str] = mapped_column(String(NAME))
    uses: Mapped[list[list[str]]] = mapped_column(Json)
    network: Mapped[str | None] = mapped_column(String(320))
    # Unique: the database itself refuses an address handed out twice.
    ip: Mapped[str | None] = mapped_column(String(IP), unique=True)
    block: Mapped[str | None] = mapped_column(String(CIDR))

    __table_args__ = (Index(None, "namespace", "name"),)


class ServiceRow(Base):
    __tablename__ = "services"
    uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    selector: Mapped[dict[str, str] | None] = mapped_column(Json)
    ports: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    cluster_ip: Mapped[str | None] = mapped_column(String(IP))
    headless: Mapped[bool] = mapped_column(Boolean)
    type: Mapped[str] = mapped_column(String(32))
    version: Mapped[int | None] = mapped_column(BigInteger)
    vip: Mapped[str | None] = mapped_column(String(IP), unique=True)
    vip_source: Mapped[str | None] = mapped_column(String(16))
    network: Mapped[str | None] = mapped_column(String(320))
    # A LoadBalancer service's ingress address, from the public pools; unique like the VIP.
    public_ip: Mapped[str | None] = mapped_column(String(IP), unique=True)

    __table_args__ = (Index(None, "namespace", "name"),)


class BlockRow(Base):
    __tablename__ = "blocks"
    cidr: Mapped[str] = mapped_column(String(CIDR), primary_key=True)
    pool: Mapped[str] = mapped_column(String(CIDR))
    node: Mapped[str] = mapped_column(String(NAME), index=True)


class NetworkRow(Base):
    __tablename__ = "networks"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(320), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(63), index=True)
    subject: Mapped[str] = mapped_column(String(NAME))


class FloatingIpRow(Base):
    __tablename__ = "floating_ips"
    service_uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    pod_uid: Mapped[str] = mapped_column(String(UID), primary_key=True, index=True)
    vip: Mapped[str] = mapped_column(String(IP), index=True)


class PolicyRow(Base):
    __tablename__ = "policies"
    name: Mapped[str] = mapped_column(String(700), primary_key=True)
    from_network: Mapped[str] = mapped_column(String(320), index=True)
    to_network: Mapped[str] = mapped_column(String(320), index=True)
    service_uid: Mapped[str] = mapped_column(String(UID))
    ports: Mapped[list[dict[str, Any]]] = mapped_column(Json)


class QuarantineRow(Base):
    __tablename__ = "quarantine"
    ip: Mapped[str] = mapped_column(String(IP), primary_key=True)
    pool: Mapped[str] = mapped_column(String(CIDR))
    released_at: Mapped[datetime]
    until: Mapped[datetime] = mapped_column(index=True)


class TombstoneRow(Base):
    __tablename__ = "tombstones"
    uid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(NAME))
    deleted_at: Mapped[datetime] = mapped_column(index=True)


# ---- the append-only allocation history -------------------------------------------------


# Lines of floating IPs share their VIP's address but do not hold it: they say which pods
# carry it. Leaving them out of this index keeps "who held IP X at T" one seek however
# many backends came and went.
HOLDER_LINES = "kind <> 'floating'"


class AddressHistoryRow(Base):
    """Every allocation and release, never updated: "who held IP X at T" is one seek on
    (ip, at, seq) among the holders' lines for the newest one at or before T."""

    __tablename__ = "address_history"
    seq: Mapped[int] = mapped_column(Serial, primary_key=True, autoincrement=True)
    ip: Mapped[str] = mapped_column(String(IP))
    action: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    pool: Mapped[str | None] = mapped_column(String(CIDR))
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(NAME))
    uid: Mapped[str] = mapped_column(String(UID))
    network: Mapped[str | None] = mapped_column(String(320))
    node: Mapped[str | None] = mapped_column(String(NAME))
    service: Mapped[str | None] = mapped_column(String(320))
    at: Mapped[datetime]
    fact_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index(None, "ip", "at"),
        Index(None, "namespace", "name", "at"),
        Index(None, "at"),
        Index(
            "ix_address_history_holder",
            "ip",
            "at",
            "seq",
            postgresql_where=text(HOLDER_LINES),
            sqlite_where=text(HOLDER_LINES),
        ),
    )


# ---- exactly-once tracking: inbox, positions, outbox ----------------------------------------


class InboxRow(Base):
    """Ids of the events a consumer has applied, so a redelivered one is skipped."""

    __tablename__ = "inbox"
    consumer: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(index=True)


class PositionRow(Base):
    """The next offset a consumer reads, written in the transaction of the batch before it."""

    __tablename__ = "consumer_positions"
    consumer: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    topic: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)


class OutboxRow(Base):
    """Messages decided in a transaction, published by the relay after it commits."""

    __tablename__ = "outbox"
    seq: Mapped[int] = mapped_column(Serial, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(NAME))
    key: Mapped[str] = mapped_column(String(1024))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[list[list[str]]] = mapped_column(Json)
    created_at: Mapped[datetime]


# ---- sharing between allocators -------------------------------------------------------------


class JournalRow(Base):
    """The keys each allocator batch changed, in commit order (batches hold one lock), so
    that every other allocator reads those rows again before its next decision."""

    __tablename__ = "model_journal"
    seq: Mapped[int] = mapped_column(Serial, primary_key=True, autoincrement=True)
    writer: Mapped[str] = mapped_column(String(64))
    changes: Mapped[dict[str, list[Any]]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(index=True)


class JournalHorizonRow(Base):
    """Journal lines at or below `seq` were pruned: a reader behind it reloads everything."""

    __tablename__ = "model_journal_horizon"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)


def table(model: type[Base]) -> Table:
    """The Core table of a mapped class (typed as a Table, which it always is here)."""
    found = model.__table__
    assert isinstance(found, Table)
    return found
