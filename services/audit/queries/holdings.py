"""History lines paired into tenures: each allocation with the release that ended it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
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


def pair(rows: Iterable[Any]) -> list[Holding]:
    """Tenures from lines in order: an allocation opens one for its (address, kind, holder,
    service), the next release of the same closes it."""
    found: list[Holding] = []
    open_at: dict[tuple[str, str, str, str | None], int] = {}
    for row in rows:
        key = (row.ip, row.kind, row.uid, row.service)
        if row.action == AddressAction.ALLOCATED:
            open_at[key] = len(found)
            found.append(_holding(row, allocated=row, released=None))
            continue
        index = open_at.pop(key, None)
        if index is None:
            found.append(_holding(row, allocated=None, released=row))
        else:
            found[index] = found[index].model_copy(
                update={"released_at": row.at, "release_fact_id": row.fact_id}
            )
    return found


def _holding(row: Any, *, allocated: Any | None, released: Any | None) -> Holding:
    return Holding(
        ip=row.ip,
        kind=AddressKind(row.kind),
        namespace=row.namespace,
        name=row.name,
        uid=row.uid,
        network=row.network,
        node=row.node,
        service=row.service,
        pool=row.pool,
        allocated_at=allocated.at if allocated is not None else None,
        allocation_fact_id=allocated.fact_id if allocated is not None else None,
        released_at=released.at if released is not None else None,
        release_fact_id=released.fact_id if released is not None else None,
    )


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
