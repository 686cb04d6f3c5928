"""History lines paired into tenures: each allocation with the release that ended it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from ipaddress import IPv4Address
from typing import Any

from sqlalchemy import Select, TextClause, select, text

from knm.core.domain.model import AddressAction, AddressKind
from knm.core.store.schema import HOLDER_LINES, AddressHistoryRow, table
from services.audit.models import Change, Holding

history = table(AddressHistoryRow)


def holder_lines() -> TextClause:
    """The predicate of the holders' index, spelled as it is so that both databases see
    that the index answers the query."""
    return text(HOLDER_LINES)


def in_order(statement: Select[Any]) -> Select[Any]:
    """Oldest first; `seq` orders the lines of one instant as they were written."""
    return statement.order_by(history.c.at, history.c.seq)


def lines() -> Select[Any]:
    return select(history)


# A line as `pair` reads it: the columns a tenure is made of, in this order.
TENURE_COLUMNS = (
    history.c.ip,
    history.c.action,
    history.c.kind,
    history.c.namespace,
    history.c.name,
    history.c.uid,
    history.c.network,
    history.c.node,
    history.c.service,
    history.c.pool,
    history.c.at,
    history.c.fact_id,
)


def tenure_lines() -> Select[Any]:
    return select(*TENURE_COLUMNS)


def pair(rows: Iterable[Sequence[Any]]) -> list[Holding]:
    """Tenures from lines in order (`tenure_lines`): an allocation opens one for its
    (address, kind, holder, service), the next release of the same closes it."""
    tenures: list[list[Any]] = []
    open_at: dict[tuple[str, str, str, str | None], int] = {}
    # Parsed once per address, not once per line: ipaddress is pure Python.
    addresses: dict[str, IPv4Address] = {}
    for ip, action, kind, namespace, name, uid, network, node, service, pool, at, fact in rows:
        key = (ip, kind, uid, service)
        address = addresses.get(ip) or addresses.setdefault(ip, IPv4Address(ip))
        holder = [address, kind, namespace, name, uid, network, node, service, pool]
        if action == ALLOCATED:
            open_at[key] = len(tenures)
            tenures.append([*holder, at, fact, None, None])
            continue
        index = open_at.pop(key, None)
        if index is None:
            tenures.append([*holder, None, None, at, fact])
        else:
            tenures[index][11:13] = (at, fact)
    return [Holding(**dict(zip(_HOLDING_FIELDS, tenure, strict=True))) for tenure in tenures]


ALLOCATED = AddressAction.ALLOCATED.value
_HOLDING_FIELDS = tuple(Holding.model_fields)


def overlapping(
    found: list[Holding], *, since: datetime | None, until: datetime | None
) -> list[Holding]:
    """Tenures that include an instant of [since, until]: held from allocation (included)
    to release (excluded)."""
    return [
        holding
        for holding in found
        if (since is None or holding.released_at is None or holding.released_at > since)
        and (until is None or holding.allocated_at is None or holding.allocated_at <= until)
    ]


def change(row: Any) -> Change:
    return Change(
        seq=row.seq,
        at=row.at,
        action=AddressAction(row.action),
        kind=AddressKind(row.kind),
        ip=row.ip,
        pool=row.pool,
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        network=row.network,
        node=row.node,
        service=row.service,
        fact_id=row.fact_id,
    )
