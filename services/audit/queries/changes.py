"""The change log: history lines in the order they were written, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection

from knm.core.domain.model import AddressAction, AddressKind
from services.audit import cursor
from services.audit.models import ChangePage
from services.audit.queries.holdings import change, history, lines


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    namespace: str | None = None
    network: str | None = None
    node: str | None = None
    kind: AddressKind | None = None
    action: AddressAction | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        for column, value in (
            (history.c.namespace, self.namespace),
            (history.c.network, self.network),
            (history.c.node, self.node),
            (history.c.kind, self.kind.value if self.kind else None),
            (history.c.action, self.action.value if self.action else None),
        ):
            if value is not None:
                found.append(column == value)
        if self.since is not None:
            found.append(history.c.at >= self.since)
        if self.until is not None:
            found.append(history.c.at <= self.until)
        return found


def changes(
    connection: Connection, *, matching: ChangeFilter, after: str | None, limit: int
) -> ChangePage:
    """Up to `limit` lines after the cursor `after`, by `seq` (the primary key): a page
    resumes exactly where the last one ended, whatever was written in between."""
    start = cursor.decode(after) if after is not None else None
    statement = lines().where(*matching.conditions())
    if start is not None:
        statement = statement.where(history.c.seq > start)
    rows = connection.execute(statement.order_by(history.c.seq).limit(limit + 1)).all()
    page = [change(row) for row in rows[:limit]]
    last = cursor.encode(page[-1].seq) if page else after
    return ChangePage(items=page, next_cursor=last, has_more=len(rows) > limit)
