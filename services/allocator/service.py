"""The allocator: consume facts in batches; per batch, one transaction holds the model's
changes, the history, the outbox, the inbox of applied event ids and the positions.

Several allocators may share the work (one Kafka consumer group, one database). Each
decides only for the namespaces whose partitions it holds; its batches run under one
database lock, and each starts by absorbing what the others changed since its last one
(see `journal`), so an address, a block or a VIP is never handed out twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from knm.core.bus.protocol import Bus, Consumer, OutgoingMessage, Record, TopicPartition
from knm.core.clock import Clock, utcnow
from knm.core.deadletters import dead_letter
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
    forget_applied_before,
    load_positions,
    record_applied,
    save_positions,
)
from knm.core.topics import Topics
from services.allocator import journal
from services.allocator.intents import IntentWriter
from services.allocator.observations import observation_of
from services.allocator.repository import load_state, save_changes

log = logging.getLogger("knm.allocator")

# How often an idle allocator still looks at what the others did (their changes can
# concern its policies), and how often the journal and the inbox are pruned.
CATCH_UP_SECONDS = 2.0
HOUSEKEEPING_SECONDS = 60.0
# Redeliveries come from the bus's retention at the most; inbox lines older are useless.
INBOX_RETENTION = timedelta(days=8)


class Allocator:
    def __init__(
        self,
        *,
        engine: Engine,
        bus: Bus,
        settings: NetworkSettings,
        topics: Topics,
        group: str | None = None,
        batch_size: int = 500,
        clock: Clock = utcnow,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._settings = settings
        self._topics = topics
        self._group = group or topics.group("allocator")
        self._batch_size = batch_size
        self._clock = clock
        self._writer = uuid.uuid4().hex
        self._consumer: Consumer | None = None
        self.state = ClusterState(collection_label=settings.collection_label)
        self._model = NetworkModel(self.state, settings, owns=self._owns)
        self._owned: frozenset[int] = frozenset()
        self._seen = 0
        # The model must be loaded again from the store (at start, after a rebalance or a
        # failed batch); the consumer must be taken back to the stored positions (after a
        # failed batch, whose records it had already read).
        self._stale = True
        self._rewind = False
        self._last_catch_up = 0.0
        self._last_housekeeping = time.monotonic()
        self.relay = OutboxRelay(engine=engine, publisher=bus.publisher())
        self.applied = 0
        self.skipped = 0
        self.dead_lettered = 0

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        require_current_schema(self._engine)
        self._consumer = self._bus.consumer(
            group=self._group, topics=[self._topics.facts], positions=self._positions
        )

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.relay.close()

    def run(self, stop: threading.Event, *, poll_timeout: float = 0.5) -> None:
        while not stop.is_set():
            self.step(timeout=poll_timeout)
            self.relay.drain()

    @property
    def ready(self) -> bool:
        return self._consumer is not None and not self._stale and not self._rewind

    # ---- ownership ---------------------------------------------------------------------

    def _owns(self, namespace: str) -> bool:
        return self._bus.partition_of(self._topics.facts, namespace) in self._owned

    def _positions(self, assigned: frozenset[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Where to read from: the positions stored with the results, or the beginning of a
        partition this group never applied anything from (the bus's offsets may not say)."""
        with self._engine.connect() as connection:
            stored = load_positions(connection, consumer=self._group, partitions=assigned)
        return {tp: stored.get(tp, 0) for tp in assigned}

    # ---- one batch ---------------------------------------------------------------------

    def step(self, *, timeout: float = 0.0) -> int:
        """Apply one batch; returns how many records it consumed."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        records = consumer.poll(max_records=self._batch_size, timeout=timeout)
        owned = frozenset(tp.partition for tp in consumer.assignment())
        if owned != self._owned:
            # A rebalance: what this allocator decides for changed; start from the store.
            self._owned = owned
            self._stale = True
        if self._rewind:
            # The consumer read past the stored positions before a batch failed.
            self._rewind_to_stored(consumer)
            return 0
        idle = not records and time.monotonic() - self._last_catch_up < CATCH_UP_SECONDS
        if idle and not self._stale:
            return 0
        started = time.perf_counter()
        try:
            positions, applied, skipped = self._apply(records)
        except Exception:
            self._stale = self._rewind = True
            raise
        self._last_catch_up = time.monotonic()
        try:
            # The positions that count went with the results; this shows progress.
            consumer.commit(positions, wait=False)
        except Exception as error:
            log.warning("offsets not committed to the bus", extra={"error": str(error)})
        self.applied += applied
        self.skipped += skipped
        if records:
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

    def _rewind_to_stored(self, consumer: Consumer) -> None:
        assigned = consumer.assignment()
        consumer.seek(self._positions(assigned))
        self._rewind = False
        log.info("consumer rewound to the stored positions", extra={"partitions": len(assigned)})

    def _apply(self, records: list[Record]) -> tuple[dict[TopicPartition, int], int, int]:
        positions: dict[TopicPartition, int] = {}
        decoded: list[Envelope] = []
        dead: list[OutgoingMessage] = []
        for record in records:
            positions[record.position] = record.offset + 1
            try:
                decoded.append(decode(record.value))
            except UndecodableError as error:
                dead.append(
                    dead_letter(
                        record, reason=error.reason, consumer=self._group, topics=self._topics
                    )
                )
        now = self._clock()
        with self._engine.begin() as connection:
            journal.lock(connection)
            if self._stale:
                self._reload(connection)
            else:
                self._catch_up(connection)
            fresh = self._fresh(connection, decoded)
            for message in fresh:
                observation = observation_of(message)
                if observation is not None:
                    self._model.apply(
                        observation, Cause(fact_id=str(message.id), at=message.occurred_at)
                    )
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
            seq = journal.record(connection, writer=self._writer, changes=changes, at=now)
            if seq is not None:
                self._seen = seq
            self._housekeeping(connection, now)
        self._stale = False
        self.relay.nudge()
        self.dead_lettered += len(dead)
        return positions, len(fresh), len(decoded) - len(fresh)

    def _fresh(self, connection: Connection, decoded: list[Envelope]) -> list[Envelope]:
        """The messages not applied before (by this allocator or another): the inbox."""
        seen = already_applied(
            connection, consumer=self._group, event_ids=(str(m.id) for m in decoded)
        )
        fresh: list[Envelope] = []
        for message in decoded:
            event_id = str(message.id)
            if event_id not in seen:
                seen.add(event_id)
                fresh.append(message)
        return fresh

    def _catch_up(self, connection: Connection) -> None:
        try:
            foreign, self._seen = journal.catch_up(connection, writer=self._writer, seen=self._seen)
        except journal.BehindHorizonError as error:
            log.info("reloading the model", extra={"reason": str(error)})
            self._reload(connection)
            return
        self._model.absorb(foreign)

    def _reload(self, connection: Connection) -> None:
        self._seen = journal.newest(connection)
        self.state = load_state(connection, collection_label=self._settings.collection_label)
        self._model = NetworkModel(self.state, self._settings, owns=self._owns)
        self._model.after_load()
        log.info(
            "model loaded",
            extra={
                "pods": len(self.state.pods),
                "services": len(self.state.services),
                "owned_partitions": sorted(self._owned),
            },
        )

    def _housekeeping(self, connection: Connection, now: datetime) -> None:
        if time.monotonic() - self._last_housekeeping < HOUSEKEEPING_SECONDS:
            return
        self._last_housekeeping = time.monotonic()
        pruned = journal.prune(connection, now=now)
        forgotten = forget_applied_before(
            connection, consumer=self._group, before=now - INBOX_RETENTION
        )
        if pruned or forgotten:
            log.info("pruned", extra={"journal_lines": pruned, "inbox_lines": forgotten})
