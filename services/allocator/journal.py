"""Allocators sharing one database: each batch runs under one lock, first reads what the
others changed since its last batch, and ends by saying what it changed itself."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from ipaddress import IPv4Address
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, text

from knm.core.domain.model import Foreign
from knm.core.domain.state import ChangeSet
from knm.core.store.rows import upsert
from knm.core.store.schema import (
    BlockRow,
    FloatingIpRow,
    JournalHorizonRow,
    JournalRow,
    NamespaceRow,
    NetworkRow,
    NodeRow,
    PodRow,
    PolicyRow,
    QuarantineRow,
    ServiceRow,
    TombstoneRow,
    table,
)
from services.allocator.repository import (
    block_record,
    floating_record,
    namespace_record,
    network_record,
    node_record,
    pod_record,
    policy_record,
    quarantine_record,
    service_record,
    tombstone_record,
)

# pg_advisory_xact_lock key: one allocator batch at a time across every process.
ALLOCATOR_LOCK = 0x6B6E6D01
# Journal lines live this long; an allocator idle for longer reloads everything.
RETENTION = timedelta(minutes=10)


class BehindHorizonError(Exception):
    """The journal lines this allocator needs were pruned: it must reload."""


def lock(connection: Connection) -> None:
    """Serialise allocator batches. SQLite serialises writers by itself."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ALLOCATOR_LOCK})


def newest(connection: Connection) -> int:
    journal = table(JournalRow)
    return int(connection.execute(select(func.coalesce(func.max(journal.c.seq), 0))).scalar_one())


def record(connection: Connection, *, writer: str, changes: ChangeSet, at: datetime) -> int | None:
    """Write what this batch changed; returns its journal sequence number."""
    keys: dict[str, list[Any]] = {}
    for name in (
        "namespaces",
        "nodes",
        "pods",
        "services",
        "blocks",
        "networks",
        "floating",
        "policies",
        "quarantine",
        "tombstones",
    ):
        changed = getattr(changes, name)
        if changed:
            keys[name] = [_key_json(c.key) for c in changed]
    if not keys:
        return None
    journal = table(JournalRow)
    result = connection.execute(
        journal.insert().returning(journal.c.seq),
        {"writer": writer, "changes": keys, "created_at": at},
    )
    return int(result.scalar_one())


def catch_up(connection: Connection, *, writer: str, seen: int) -> tuple[Foreign, int]:
    """Everything other writers changed after `seen`, as it now stands; and the new `seen`.

    Raises BehindHorizonError when lines after `seen` have been pruned.
    """
    horizon = connection.execute(select(table(JournalHorizonRow).c.seq)).scalar()
    if horizon is not None and seen < horizon:
        raise BehindHorizonError(f"journal pruned up to {horizon}, this allocator saw {seen}")
    journal = table(JournalRow)
    rows = connection.execute(
        select(journal.c.seq, journal.c.writer, journal.c.changes)
        .where(journal.c.seq > seen)
        .order_by(journal.c.seq)
    ).all()
    keys: dict[str, set[Any]] = defaultdict(set)
    for row in rows:
        if row.writer == writer:
            continue
        for name, changed in row.changes.items():
            keys[name].update(_key_from_json(name, key) for key in changed)
    last = rows[-1].seq if rows else seen
    return (_load(connection, keys) if keys else Foreign()), int(last)


def prune(connection: Connection, *, now: datetime) -> int:
    """Drop lines older than RETENTION, moving the horizon past them."""
    journal = table(JournalRow)
    cutoff = connection.execute(
        select(func.max(journal.c.seq)).where(journal.c.created_at < now - RETENTION)
    ).scalar()
    if cutoff is None:
        return 0
    gone = connection.execute(delete(journal).where(journal.c.seq <= cutoff)).rowcount
    upsert(connection, table(JournalHorizonRow), [{"id": 1, "seq": int(cutoff)}])
    return int(gone or 0)


def _key_json(key: Any) -> Any:
    if isinstance(key, tuple):
        return list(key)
    if isinstance(key, IPv4Address):
        return str(key)
    return key


def _key_from_json(name: str, key: Any) -> Any:
    if name in ("networks", "floating"):
        return tuple(key)
    if name == "quarantine":
        return IPv4Address(key)
    return key


def _load(connection: Connection, keys: dict[str, set[Any]]) -> Foreign:
    foreign = Foreign()

    def fetch(model: Any, column: str, wanted: Iterable[Any]) -> list[Any]:
        rows_of = table(model)
        found: list[Any] = []
        values = list(wanted)
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            found.extend(
                connection.execute(select(rows_of).where(rows_of.c[column].in_(chunk))).all()
            )
        return found

    def fetch_pairs(model: Any, columns: tuple[str, str], wanted: Iterable[Any]) -> list[Any]:
        rows_of = table(model)
        found: list[Any] = []
        values = list(wanted)
        for start in range(0, len(values), 200):
            chunk = values[start : start + 200]
            condition = or_(
                *(and_(rows_of.c[columns[0]] == a, rows_of.c[columns[1]] == b) for a, b in chunk)
            )
            found.extend(connection.execute(select(rows_of).where(condition)).all())
        return found

    def fill(target: dict[Any, Any], wanted: set[Any], loaded: dict[Any, Any]) -> None:
        for key in wanted:
            target[key] = loaded.get(key)

    for name, model, column, convert in (
        ("namespaces", NamespaceRow, "name", namespace_record),
        ("nodes", NodeRow, "name", node_record),
        ("pods", PodRow, "uid", pod_record),
        ("services", ServiceRow, "uid", service_record),
        ("blocks", BlockRow, "cidr", block_record),
        ("policies", PolicyRow, "name", policy_record),
        ("tombstones", TombstoneRow, "uid", tombstone_record),
    ):
        wanted = keys.get(name, set())
        if wanted:
            loaded = {getattr(row, column): convert(row) for row in fetch(model, column, wanted)}
            fill(getattr(foreign, name), wanted, loaded)
    if wanted := keys.get("quarantine", set()):
        quarantined = {
            IPv4Address(row.ip): quarantine_record(row)
            for row in fetch(QuarantineRow, "ip", {str(ip) for ip in wanted})
        }
        fill(foreign.quarantine, wanted, quarantined)
    if wanted := keys.get("networks", set()):
        networks = {
            (row.kind, row.name): network_record(row)
            for row in fetch_pairs(NetworkRow, ("kind", "name"), wanted)
        }
        fill(foreign.networks, wanted, networks)
    if wanted := keys.get("floating", set()):
        floating = {
            (row.service_uid, row.pod_uid): floating_record(row)
            for row in fetch_pairs(FloatingIpRow, ("service_uid", "pod_uid"), wanted)
        }
        fill(foreign.floating, wanted, floating)
    return foreign
