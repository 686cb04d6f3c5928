"""History lines written straight into the table, for tests about volume and plans."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from knm.core.store.rows import insert_rows
from knm.core.store.schema import AddressHistoryRow, table


def line(
    *, ip: str, action: str, kind: str, uid: str, at: datetime, service: str | None = None
) -> dict[str, Any]:
    return {
        "ip": ip,
        "action": action,
        "kind": kind,
        "pool": "10.0.0.0/16" if kind == "pod" else "10.254.0.0/16",
        "namespace": "bulk",
        "name": uid,
        "uid": uid,
        "network": "bulk/app" if kind != "service" else None,
        "node": "node-1" if kind != "service" else None,
        "service": service,
        "at": at,
        "fact_id": f"fact-{uid}-{action}-{at.timestamp()}",
    }


def tenures(*, addresses: int, holders: int, start: datetime) -> list[dict[str, Any]]:
    """`holders` pods in turn on each of `addresses` addresses, a minute each."""
    found = []
    for n in range(addresses):
        ip = f"10.0.{n // 250}.{n % 250 + 1}"
        for h in range(holders):
            uid = f"pod-{n}-{h}"
            began = start + timedelta(minutes=2 * h)
            found.append(line(ip=ip, action="allocated", kind="pod", uid=uid, at=began))
            ended = began + timedelta(minutes=1)
            found.append(line(ip=ip, action="released", kind="pod", uid=uid, at=ended))
    return found


def write(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as connection:
        for offset in range(0, len(rows), 1000):
            insert_rows(connection, table(AddressHistoryRow), rows[offset : offset + 1000])
