"""An address: who held it at an instant, and everyone who held or carried it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from ipaddress import IPv4Address
from typing import Any

from sqlalchemy import Connection, bindparam, literal_column

from knm.core.domain.model import AddressAction
from services.audit.models import AddressHistory, Holder
from services.audit.queries.holdings import (
    history,
    holder_lines,
    in_order,
    overlapping,
    tenure_lines,
    tenures,
)
from services.audit.queries.prepared import prepared, rows

# One seek on the holders' index (ip, at, seq); floating IPs' lines are not in it.
HOLDER_AT = prepared(
    "holder_at",
    tenure_lines()
    .where(
        history.c.ip == bindparam("ip"),
        holder_lines(),
        history.c.at <= bindparam("at", type_=history.c.at.type),
    )
    .order_by(history.c.at.desc(), history.c.seq.desc())
    .limit(literal_column("1")),
)
# A seek on (ip, at).
ADDRESS_LINES = prepared(
    "address_lines", in_order(tenure_lines().where(history.c.ip == bindparam("ip")))
)


def holder_at(connection: Connection, *, ip: IPv4Address, at: datetime) -> Holder | None:
    found = holder_fields(rows(connection, HOLDER_AT, ip=str(ip), at=at), ip=str(ip), at=at)
    return None if found is None else Holder.model_validate(found)


def holder_fields(
    found: Sequence[Sequence[Any]], *, ip: str, at: datetime
) -> dict[str, Any] | None:
    """From HOLDER_AT's row, the newest holder's line at or before `at`: held if it is an
    allocation. `Holder`'s fields in its order, as the database gave them (`ip` as
    IPv4Address writes it)."""
    if not found:
        return None
    (_, action, kind, namespace, name, uid, network, node, _, pool, since, fact) = found[0]
    if action != ALLOCATED:
        return None
    return {
        "ip": ip,
        "at": at,
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "network": network,
        "node": node,
        "pool": pool,
        "allocated_at": since,
        "allocation_fact_id": fact,
    }


def address_history(
    connection: Connection,
    *,
    ip: IPv4Address,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> AddressHistory:
    found = rows(connection, ADDRESS_LINES, ip=str(ip))
    fields = address_history_fields(found, ip=str(ip), since=since, until=until, limit=limit)
    return AddressHistory.model_validate(fields)


def address_history_fields(
    found: Sequence[Sequence[Any]],
    *,
    ip: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> dict[str, Any]:
    """`AddressHistory`'s fields: every tenure of the address that overlaps [since,
    until], oldest first.

    All of the address's lines are read (ADDRESS_LINES): a tenure that began long before
    `since`, or ended after `until`, needs both of its ends.
    """
    held = overlapping(tenures(found), since=since, until=until)
    return {"ip": ip, "holdings": held[:limit], "truncated": len(held) > limit}


def nobody_held(*, ip: str, at: datetime) -> str:
    """The 404's detail."""
    return f"nobody held {ip} at {at.isoformat()}"


ALLOCATED = AddressAction.ALLOCATED.value
