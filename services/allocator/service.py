"""The allocator: consume facts in batches; per batch, one transaction holds the model's
changes, the history, the outbox, the inbox of applied event ids and the positions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from sqlalchemy import Engine

from knm.core.bus.protocol import Bus, Consumer, OutgoingMessage, Record, TopicPartition
from knm.core.clock import Clock, utcnow
from knm.core.domain.engine import NetworkModel
from knm.core.domain.model import Cause, NetworkSettings
from knm.core.domain.state import ClusterState
from knm.core.events.base import Envelope
from knm.core.events.codec import UndecodableError, decode
from knm.core.store.database import require_current_schema
from knm.core.store.tracking import (
    OutboxRelay,
    already_applied,
    enqueue,
    load_positions,
    record_applied,
    save_positions,
)
from knm.core.topics import Topics
from services.allocator.intents import IntentWriter
from services.allocator.observations import observation_of
from services.allocator.repository import load_state, save_changes

log = logging.getLogger("knm.allocator")


class Allocator:
    def __init__(
        self,
        *,
        engine: Engine,
        bus: Bus,
        settings: NetworkSettings,
        topics: Topics,
        group: str = "knm-allocator",
        batch_size: int = 500,
        clock: Clock = utcnow,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._settings = settings
        self._topics = topics
        self._group = group
        self._batch_size = batch_size
        self._clock = clock
        self._consumer: Consumer | None = None
        self.state = ClusterState(collection_label=settings.collection_label)
        self._model = NetworkModel(self.state, settings)
        self.relay = OutboxRelay(engine=engine, publisher=bus.publisher())
        self.applied = 0
        self.skipped = 0
        self.dead_lettered = 0

    def start(self) -> None:
        require_current_schema(self._engine)
        self._reload()
        self._rejoin()

    def _rejoin(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        self._consumer = self._bus.consumer(
            group=self._group, topics=[self._topics.facts], positions=self._positions
        )

    def _reload(self) -> None:
        with self._engine.connect() as connection:
            self.state = load_state(connection, collection_label=self._settings.collection_label)
        self._model = NetworkModel(self.state, self._settings)
        self._model.rebuild_pending()

    def _positions(self, assigned: frozenset[TopicPartition]) -> Mapping[TopicPartition, int]:
        with self._engine.connect() as connection:
            return load_positions(connection, consumer=self._group, partitions=assigned)

    def step(self, *, timeout: float = 0.0) -> int:
        """Apply one batch; returns how many records it consumed."""
        assert self._consumer is not None, "start() first"
        records = self._consumer.poll(max_records=self._batch_size, timeout=timeout)
        if not records:
            return 0
        started = time.perf_counter()
        try:
            positions, applied, skipped = self._apply(records)
        except Exception:
            # The model ran ahead of a transaction that did not commit, and the consumer
            # ahead of the stored positions: take both back to what the database says.
            self._reload()
            self._rejoin()
            raise
        self._consumer.commit(positions)
        self.applied += applied
        self.skipped += skipped
        log.info(
            "batch applied",
            extra={
                "records": len(records),
                "applied": applied,
                "skipped": skipped,
                "first_event_key": records[0].key,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return len(records)

    def _apply(self, records: list[Record]) -> tuple[dict[TopicPartition, int], int, int]:
        positions: dict[TopicPartition, int] = {}
        decoded: list[Envelope] = []
        dead: list[OutgoingMessage] = []
        for record in records:
            positions[record.position] = record.offset + 1
            try:
                decoded.append(decode(record.value))
            except UndecodableError as error:
                dead.append(self._dead_letter(record, error.reason))
        now = self._clock()
        with self._engine.begin() as connection:
            seen = already_applied(
                connection, consumer=self._group, event_ids=(str(m.id) for m in decoded)
            )
            fresh: list[Envelope] = []
            for message in decoded:
                event_id = str(message.id)
                if event_id in seen:
                    continue
                seen.add(event_id)
                fresh.append(message)
                observation = observation_of(message)
                if observation is not None:
                    self._model.apply(observation, Cause(fact_id=event_id, at=message.occurred_at))
            changes = self.state.take_changes()
            save_changes(connection, changes)
            for problem in changes.problems:
                log.warning(
                    problem.message, extra={"code": problem.code, "subject": problem.subject}
                )
            last = fresh[-1] if fresh else None
            messages = IntentWriter(
                state=self.state, settings=self._settings, topics=self._topics
            ).messages(
                changes,
                at=last.occurred_at if last else now,
                causation_id=last.id if last else None,
            )
            enqueue(connection, [*messages, *dead], at=now)
            record_applied(
                connection, consumer=self._group, event_ids=(str(m.id) for m in fresh), at=now
            )
            save_positions(connection, consumer=self._group, positions=positions)
        self.dead_lettered += len(dead)
        return positions, len(fresh), len(decoded) - len(fresh)

    def _dead_letter(self, record: Record, reason: str) -> OutgoingMessage:
        log.warning(
            "message sent to dead letters",
            extra={
                "reason": reason,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "key": record.key,
            },
        )
        return OutgoingMessage(
            topic=self._topics.dead_letters,
            key=record.key or "",
            value=record.value,
            headers=(
                ("knm-reason", reason.encode()),
                ("knm-origin", f"{record.topic}/{record.partition}/{record.offset}".encode()),
                ("knm-consumer", self._group.encode()),
            ),
        )

    def run(self, stop: threading.Event, *, poll_timeout: float = 0.5) -> None:
        while not stop.is_set():
            self.step(timeout=poll_timeout)
            self.relay.drain()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
