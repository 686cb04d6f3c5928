"""Exactly-once bookkeeping inside the consumer's own transaction: inbox, positions, outbox."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, select, text

from knm.core.bus.protocol import OutgoingMessage, Publisher, TopicPartition
from knm.core.store.rows import insert_rows, upsert
from knm.core.store.schema import InboxRow, OutboxRow, PositionRow, table

log = logging.getLogger("knm.relay")


def already_applied(connection: Connection, *, consumer: str, event_ids: Iterable[str]) -> set[str]:
    ids = list(event_ids)
    found: set[str] = set()
    rows_of = table(InboxRow)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = connection.execute(
            select(rows_of.c.event_id).where(
                rows_of.c.consumer == consumer, rows_of.c.event_id.in_(chunk)
            )
        )
        found.update(row[0] for row in rows)
    return found


def record_applied(
    connection: Connection, *, consumer: str, event_ids: Iterable[str], at: datetime
) -> None:
    rows = [{"consumer": consumer, "event_id": eid, "processed_at": at} for eid in event_ids]
    insert_rows(connection, table(InboxRow), rows)


def forget_applied_before(connection: Connection, *, consumer: str, before: datetime) -> int:
    """Drop inbox lines older than any redelivery can be (Kafka's retention bounds it)."""
    rows_of = table(InboxRow)
    result = connection.execute(
        delete(rows_of).where(rows_of.c.consumer == consumer, rows_of.c.processed_at < before)
    )
    return int(result.rowcount or 0)


def load_positions(
    connection: Connection, *, consumer: str, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    wanted = set(partitions)
    rows_of = table(PositionRow)
    rows = connection.execute(
        select(rows_of.c.topic, rows_of.c.partition, rows_of.c.offset).where(
            rows_of.c.consumer == consumer
        )
    )
    found = {TopicPartition(topic, partition): offset for topic, partition, offset in rows}
    return {tp: offset for tp, offset in found.items() if tp in wanted}


def save_positions(
    connection: Connection, *, consumer: str, positions: Mapping[TopicPartition, int]
) -> None:
    upsert(
        connection,
        table(PositionRow),
        [
            {"consumer": consumer, "topic": tp.topic, "partition": tp.partition, "offset": offset}
            for tp, offset in sorted(positions.items())
        ],
    )


def enqueue(connection: Connection, messages: Sequence[OutgoingMessage], *, at: datetime) -> None:
    insert_rows(
        connection,
        table(OutboxRow),
        [
            {
                "topic": message.topic,
                "key": message.key,
                "value": message.value,
                "headers": [[name, value.decode()] for name, value in message.headers],
                "created_at": at,
            }
            for message in messages
        ],
    )


# pg_try_advisory_xact_lock key: one relay publishes at a time, so the outbox leaves in
# the order it was written even when several processes relay it.
RELAY_LOCK = 0x6B6E6D02


class OutboxRelay:
    """Publishes committed outbox messages in order, then deletes them.

    A crash between publishing and deleting publishes them again; consumers skip the
    duplicates by event id, which is why every message carries one.
    """

    def __init__(self, *, engine: Engine, publisher: Publisher, batch: int = 1000) -> None:
        self._engine = engine
        self._publisher = publisher
        self._batch = batch
        self._work = threading.Event()
        self.relayed = 0

    def nudge(self) -> None:
        """Say that a transaction committed outbox messages (wakes `run` early)."""
        self._work.set()

    def run(self, stop: threading.Event, *, idle: float = 0.5, max_backoff: float = 10.0) -> None:
        """Relay until `stop`; on failure wait and retry (nothing is lost: it stays put)."""
        delay = 0.5
        while not stop.is_set():
            try:
                moved = self.drain()
                delay = 0.5
            except Exception as error:  # the bus or the database is away
                log.warning("relay failed; retrying", extra={"error": str(error)[:300]})
                stop.wait(delay)
                delay = min(delay * 2, max_backoff)
                continue
            if not moved:
                self._work.wait(idle)
                self._work.clear()

    def relay_once(self) -> int:
        rows_of = table(OutboxRow)
        with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                locked = connection.execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": RELAY_LOCK}
                ).scalar()
                if not locked:
                    return 0
            query = select(rows_of).order_by(rows_of.c.seq).limit(self._batch)
            rows = connection.execute(query).all()
            if not rows:
                return 0
            self._publisher.publish(
                [
                    OutgoingMessage(
                        topic=row.topic,
                        key=row.key,
                        value=row.value,
                        headers=tuple((name, value.encode()) for name, value in row.headers),
                    )
                    for row in rows
                ]
            )
            connection.execute(delete(rows_of).where(rows_of.c.seq.in_([row.seq for row in rows])))
        self.relayed += len(rows)
        return len(rows)

    def close(self) -> None:
        self._publisher.close()

    def drain(self) -> int:
        total = 0
        while count := self.relay_once():
            total += count
        return total
