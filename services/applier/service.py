"""The applier: rebuild the desired state from the intents topic, keep backends converged.

The whole compacted intents topic is the desired state, so the applier reads it from
the beginning on every start instead of resuming from committed offsets; the commit
only shows progress (lag). It replays its own output, the vrouter topic, alongside, so
that it publishes only what differs from what the agents already have. Until it has
read up to where both topics ended at start it syncs nothing, so that backends never
see the half-replayed history. Its model must see
every partition: run one applier per group.
"""

from __future__ import annotations

import logging
import threading
import time

from knm.core.bus.protocol import Bus, Consumer, Record, TopicPartition, from_beginning
from knm.core.deadletters import dead_letter
from knm.core.events.codec import UndecodableError, decode
from knm.core.topics import OVERLAY_KEY, Topics, piece_of_key
from services.applier.backend import Backend, Cause
from services.applier.model import DesiredModel, Dirty
from services.applier.native_backend import NativeBackend

log = logging.getLogger("knm.applier")


class Applier:
    def __init__(
        self,
        *,
        bus: Bus,
        topics: Topics,
        gateway: str,
        group: str | None = None,
        batch_size: int = 1000,
        max_delay: float = 1.0,
        backend: Backend | None = None,
        resync_interval: float | None = None,
        sync_every_intent: bool = False,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._group = group or topics.group("applier")
        self._batch_size = batch_size
        self._max_delay = max_delay
        self._last_sync = time.monotonic()
        self._backend: Backend = (
            backend
            if backend is not None
            else NativeBackend(publisher=bus.publisher(), topics=topics, gateway=gateway)
        )
        # A backend that must repair what others change (Contrail) is synced this often
        # even when no intent arrives.
        self._resync_interval = resync_interval
        # Intents applied since the last sync, whatever they dirtied: a backend that
        # configures every object (Contrail) needs a sync for intents that dirty no node.
        self._sync_every_intent = sync_every_intent
        self._touched = False
        self._dead_letters = bus.publisher()
        self._consumer: Consumer | None = None
        self._horizon: dict[TopicPartition, int] = {}
        self._read: dict[TopicPartition, int] = {}
        self.replaying = True
        self.model = DesiredModel()
        # Applied to the model but not yet synced: survives a failed sync, so the next
        # step retries it even when no new intent arrives.
        self._unsynced = Dirty()
        self._cause: Cause | None = None
        self.applied = 0
        self.undecodable = 0

    def start(self) -> None:
        topics = [self._topics.intents, self._topics.vrouter]
        self._horizon = {
            tp: end for topic in topics for tp, end in self._bus.end_offsets(topic).items()
        }
        self._consumer = self._bus.consumer(
            group=self._group, topics=topics, positions=from_beginning
        )

    def step(self, *, timeout: float = 0.0) -> int:
        """Apply one batch of intents and sync the backend; returns the records consumed."""
        assert self._consumer is not None, "start() first"
        records = self._consumer.poll(max_records=self._batch_size, timeout=timeout)
        positions: dict[TopicPartition, int] = {}
        for record in records:
            positions[record.position] = record.offset + 1
            self._apply(record)
        self._read.update(positions)
        if self.replaying and self._replayed():
            self.replaying = False
            log.info(
                "intents replayed",
                extra={"intents": self.applied, "nodes": len(self._unsynced.nodes)},
            )
        # Level-triggered: a sync converges every dirty node however many intents made it
        # dirty, so while intents keep coming in full batches the syncs are spaced out.
        caught_up = len(records) < self._batch_size
        due = time.monotonic() - self._last_sync >= self._max_delay
        pending = bool(self._unsynced) or (self._touched and self._sync_every_intent)
        resync = (
            self._resync_interval is not None
            and time.monotonic() - self._last_sync >= self._resync_interval
        )
        if (
            not self.replaying
            and self._cause is not None
            and ((pending and (caught_up or due)) or resync)
        ):
            self._backend.sync(self.model, self._unsynced, cause=self._cause)
            self._unsynced = Dirty()
            self._touched = False
            self._last_sync = time.monotonic()
        if positions:
            # Progress only (the applier replays from the beginning): not waited for.
            self._consumer.commit(positions, wait=False)
        return len(records)

    def _apply(self, record: Record) -> None:
        if record.topic == self._topics.vrouter:
            self._recall(record)
            return
        try:
            message = decode(record.value)
        except UndecodableError as error:
            self.undecodable += 1
            # A replay meets the poison of earlier runs again: it was dead-lettered then.
            if not self.replaying:
                self._dead_letters.publish(
                    [
                        dead_letter(
                            record, reason=error.reason, consumer=self._group, topics=self._topics
                        )
                    ]
                )
            return
        dirty = self.model.apply(message.payload)
        self._unsynced |= dirty
        self._touched = True
        self._cause = Cause(event_id=message.id, occurred_at=message.occurred_at)
        self.applied += 1
        log.debug(
            "intent applied",
            extra={
                "event_id": str(message.id),
                "key": message.key,
                "type": message.type,
                "dirty_nodes": len(dirty.nodes),
                "dirty_overlay": dirty.overlay,
            },
        )

    def _recall(self, record: Record) -> None:
        # After the replay the topic only echoes what this run published itself.
        if not self.replaying or record.key is None:
            return
        # A piece outside its node's partition was placed by an earlier layout (key by
        # key): left out, so that the first sync publishes it where agents read it.
        if record.key != OVERLAY_KEY and record.partition != self._bus.partition_of(
            self._topics.vrouter, piece_of_key(record.key)[0]
        ):
            return
        try:
            message = decode(record.value)
        except UndecodableError:
            # Not a piece anyone runs: the next sync sends the key's piece if it has one.
            return
        self._backend.recall(record.key, message.payload)

    def _replayed(self) -> bool:
        return all(self._read.get(tp, 0) >= end for tp, end in self._horizon.items())

    def run(self, stop: threading.Event, *, poll_timeout: float = 0.5) -> None:
        while not stop.is_set():
            self.step(timeout=poll_timeout)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._backend.close()
        self._dead_letters.close()
