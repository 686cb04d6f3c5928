"""History lines paired into tenures: each allocation with the release that ended it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


def tenures(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Tenures from lines in order (`tenure_lines`): an allocation opens one for its
    (address, kind, holder, service), the next release of the same closes it.

    Each tenure is a dict of `Holding`'s fields in its order, with the values as the
    database gave them: what the busiest routes serialize directly (see wire.py), and
    what `pair` validates into models.
    """
    found: list[dict[str, Any]] = []
    open_at: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}
    for ip, action, kind, namespace, name, uid, network, node, service, pool, at, fact in rows:
        key = (ip, kind, uid, service)
        if action != ALLOCATED:
            opened = open_at.pop(key, None)
            if opened is not None:
                opened["released_at"] = at
                opened["release_fact_id"] = fact
                continue
        # An allocation opens a tenure; a release with none open stands alone.
        allocated = action == ALLOCATED
        tenure = {
            "ip": ip,
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "network": network,
            "node": node,
            "service": service,
            "pool": pool,
            "allocated_at": at if allocated else None,
            "allocation_fact_id": fact if allocated else None,
            "released_at": None if allocated else at,
            "release_fact_id": None if allocated else fact,
        }
        if allocated:
            open_at[key] = tenure
        found.append(tenure)
    return found


def pair(rows: Iterable[Sequence[Any]]) -> list[Holding]:
    """The same tenures as models."""
    return [Holding.model_validate(tenure) for tenure in tenures(rows)]


ALLOCATED = AddressAction.ALLOCATED.value


def overlapping(
    found: list[dict[str, Any]], *, since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    """Tenures that include an instant of [since, until]: held from allocation (included)
    to release (excluded)."""
    if since is None and until is None:
        return found
    return [
        tenure
        for tenure in found
        if (since is None or tenure["released_at"] is None or tenure["released_at"] > since)
        and (until is None or tenure["allocated_at"] is None or tenure["allocated_at"] <= until)
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
