"""An address: who held it at an instant, and everyone who held or carried it."""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Address

from sqlalchemy import Connection

from knm.core.domain.model import AddressAction, AddressKind
from services.audit.models import AddressHistory, Holder
from services.audit.queries.holdings import (
    history,
    holder_lines,
    in_order,
    lines,
    overlapping,
    pair,
)


def holder_at(connection: Connection, *, ip: IPv4Address, at: datetime) -> Holder | None:
    """The newest holder's line at or before `at`: held if it is an allocation.

    One seek on the holders' index (ip, at, seq); floating IPs' lines are not in it.
    """
    statement = (
        lines()
        .where(history.c.ip == str(ip), holder_lines(), history.c.at <= at)
        .order_by(history.c.at.desc(), history.c.seq.desc())
        .limit(1)
    )
    row = connection.execute(statement).first()
    if row is None or row.action != AddressAction.ALLOCATED:
        return None
    return Holder(
        ip=ip,
        at=at,
        kind=AddressKind(row.kind),
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        network=row.network,
        node=row.node,
        pool=row.pool,
        allocated_at=row.at,
        allocation_fact_id=row.fact_id,
    )


def address_history(
    connection: Connection,
    *,
    ip: IPv4Address,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> AddressHistory:
    """Every tenure of the address that overlaps [since, until], oldest first.

    All of the address's lines are read (a seek on (ip, at)): a tenure that began long
    before `since`, or ended after `until`, needs both of its ends.
    """
    rows = connection.execute(in_order(lines().where(history.c.ip == str(ip))))
    found = overlapping(pair(rows), since=since, until=until)
    return AddressHistory(ip=ip, holdings=found[:limit], truncated=len(found) > limit)
