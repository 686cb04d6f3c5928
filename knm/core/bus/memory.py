"""An in-process bus with Kafka's semantics: partitions, offsets, groups, rebalances."""

from __future__ import annotations

import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence

from knm.core.bus.protocol import (
    OutgoingMessage,
    PositionsLoader,
    Record,
    TopicPartition,
)
from knm.core.topics import TopicSpec


class MemoryBus:
    def __init__(self, *, partitions: int = 4, topic_partitions: Mapping[str, int] | None = None):
        self._default_partitions = partitions
        self._topic_partitions = dict(topic_partitions or {})
        self._logs: dict[str, list[list[Record]]] = {}
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._members: dict[str, list[MemoryConsumer]] = defaultdict(list)
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)

    # ---- topics ------------------------------------------------------------------------

    def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        with self._lock:
            for spec in specs:
                if spec.name not in self._logs:
                    self._topic_partitions[spec.name] = spec.partitions
                    self._log(spec.name)

    def _log(self, topic: str) -> list[list[Record]]:
        log = self._logs.get(topic)
        if log is None:
            count = self._topic_partitions.get(topic, self._default_partitions)
            log = self._logs[topic] = [[] for _ in range(count)]
        return log

    def partitions(self, topic: str) -> list[TopicPartition]:
        with self._lock:
            return [TopicPartition(topic, p) for p in range(len(self._log(topic)))]

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        with self._lock:
            return {TopicPartition(topic, p): len(log) for p, log in enumerate(self._log(topic))}

    def partition_of(self, topic: str, key: str) -> int:
        with self._lock:
            return zlib.crc32(key.encode()) % len(self._log(topic))

    def records(self, topic: str) -> list[Record]:
        """Every record of a topic, partition by partition (for tests and tools)."""
        with self._lock:
            return [record for log in self._log(topic) for record in log]

    # ---- producing ---------------------------------------------------------------------

    def publisher(self) -> MemoryPublisher:
        return MemoryPublisher(self)

    def _append(self, messages: Sequence[OutgoingMessage]) -> None:
        with self._lock:
            for message in messages:
                log = self._log(message.topic)
                partition = self.partition_of(message.topic, message.partition_key or message.key)
                entries = log[partition]
                entries.append(
                    Record(
                        topic=message.topic,
                        partition=partition,
                        offset=len(entries),
                        key=message.key,
                        value=message.value,
                        headers=message.headers,
                        timestamp_ms=int(time.time() * 1000),
                    )
                )
            self._arrived.notify_all()

    # ---- consuming ---------------------------------------------------------------------

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        positions: PositionsLoader | None = None,
        keys: Mapping[str, Sequence[str]] | None = None,
    ) -> MemoryConsumer:
        with self._lock:
            consumer = MemoryConsumer(self, group=group, topics=tuple(topics), positions=positions)
            if keys is None:
                self._members[group].append(consumer)
                self._rebalance(group)
            else:
                wanted = {t: {self.partition_of(t, key) for key in keys[t]} for t in keys}
                consumer._pending_assignment = {
                    tp
                    for topic in topics
                    for tp in self.partitions(topic)
                    if topic not in wanted or tp.partition in wanted[topic]
                }
            return consumer

    def _leave(self, consumer: MemoryConsumer) -> None:
        with self._lock:
            members = self._members[consumer.group]
            if consumer in members:
                members.remove(consumer)
                self._rebalance(consumer.group)

    def _rebalance(self, group: str) -> None:
        members = self._members[group]
        if not members:
            return
        topics = sorted({t for m in members for t in m.topics})
        assignments: dict[int, set[TopicPartition]] = {id(m): set() for m in members}
        for topic in topics:
            subscribed = [m for m in members if topic in m.topics]
            for tp in self.partitions(topic):
                owner = subscribed[tp.partition % len(subscribed)]
                assignments[id(owner)].add(tp)
        for member in members:
            member._pending_assignment = assignments[id(member)]

    def _committed_offset(self, group: str, tp: TopicPartition) -> int:
        return self._committed.get((group, tp), 0)

    def _commit(self, group: str, positions: Mapping[TopicPartition, int]) -> None:
        with self._lock:
            for tp, offset in positions.items():
                self._committed[(group, tp)] = offset

    def _fetch(self, tp: TopicPartition, offset: int, limit: int) -> list[Record]:
        entries = self._log(tp.topic)[tp.partition]
        return entries[offset : offset + limit]


class MemoryPublisher:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._bus._append(messages)

    def close(self) -> None:
        return None


class MemoryConsumer:
    def __init__(
        self,
        bus: MemoryBus,
        *,
        group: str,
        topics: tuple[str, ...],
        positions: PositionsLoader | None,
    ) -> None:
        self._bus = bus
        self.group = group
        self.topics = topics
        self._positions_loader = positions
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._pending_assignment: set[TopicPartition] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._closed = False

    def _apply_rebalance(self) -> None:
        pending = self._pending_assignment
        if pending is None:
            return
        self._pending_assignment = None
        self._assignment = frozenset(pending)
        self._positions = {
            tp: self._bus._committed_offset(self.group, tp) for tp in sorted(self._assignment)
        }
        if self._positions_loader is not None and self._assignment:
            for tp, offset in self._positions_loader(self._assignment).items():
                if tp in self._assignment:
                    self._positions[tp] = offset

    def poll(self, *, max_records: int, timeout: float) -> list[Record]:
        if self._closed:
            raise RuntimeError("consumer is closed")
        with self._bus._lock:
            records = self._take(max_records)
            if not records and timeout > 0:
                self._bus._arrived.wait(timeout)
                records = self._take(max_records)
            return records

    def _take(self, max_records: int) -> list[Record]:
        self._apply_rebalance()
        records: list[Record] = []
        for tp in sorted(self._assignment):
            if len(records) >= max_records:
                break
            found = self._bus._fetch(tp, self._positions[tp], max_records - len(records))
            if found:
                self._positions[tp] = found[-1].offset + 1
                records.extend(found)
        return records

    def commit(self, positions: Mapping[TopicPartition, int], *, wait: bool = True) -> None:
        self._bus._commit(self.group, positions)

    def seek(self, positions: Mapping[TopicPartition, int]) -> None:
        with self._bus._lock:
            self._apply_rebalance()
            for tp, offset in positions.items():
                if tp in self._assignment:
                    self._positions[tp] = offset

    def assignment(self) -> frozenset[TopicPartition]:
        with self._bus._lock:
            self._apply_rebalance()
            return self._assignment

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._leave(self)
