"""The bus on Apache Kafka through kafka-python: idempotent producer, manual commits."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from knm.core.bus.protocol import OutgoingMessage, PositionsLoader, Record, TopicPartition
from knm.core.topics import TopicSpec


def _ours(tp: Any) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _theirs(tp: TopicPartition) -> Any:
    return KafkaTopicPartition(tp.topic, tp.partition)


def _partition(key: str, count: int) -> int:
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % count


class KafkaBus:
    def __init__(self, *, bootstrap: str, client_id: str = "knm") -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self._partition_counts: dict[str, int] = {}

    def partition_of(self, topic: str, key: str) -> int:
        """Kafka's default partitioner (murmur2 of the key bytes), which knm's producer uses."""
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(self.end_offsets(topic))
        return _partition(key, count)

    def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
        try:
            existing = set(admin.list_topics())
            wanted = [
                NewTopic(
                    name=spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=1,
                    topic_configs=spec.config(),
                )
                for spec in specs
                if spec.name not in existing
            ]
            # Another process may create one meanwhile: that is what we wanted too.
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics(wanted)
        finally:
            admin.close()

    def publisher(self) -> KafkaPublisher:
        return KafkaPublisher(self._producer)

    def _producer(self) -> Any:
        return KafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        positions: PositionsLoader | None = None,
        keys: Mapping[str, Sequence[str]] | None = None,
    ) -> KafkaBusConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A member that died is noticed in seconds (the broker's minimum is 6 s).
            session_timeout_ms=6000,
            heartbeat_interval_ms=2000,
        )
        return KafkaBusConsumer(consumer, topics=topics, positions=positions, keys=keys)

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, client_id=self.client_id, enable_auto_commit=False
        )
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [KafkaTopicPartition(topic, p) for p in sorted(partitions)]
            return {_ours(tp): offset for tp, offset in consumer.end_offsets(tps).items()}
        finally:
            consumer.close()


class KafkaPublisher:
    """Connects on first use, so a service can be built before the broker is reachable."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._producer: Any = None

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._producer is None:
            self._producer = self._connect()
        futures = [
            self._producer.send(
                message.topic,
                key=message.key.encode(),
                value=message.value,
                headers=list(message.headers),
                partition=(
                    None
                    if message.partition_key is None
                    else self._partition(message.topic, message.partition_key)
                ),
            )
            for message in messages
        ]
        self._producer.flush()
        for future in futures:
            future.get(timeout=30)

    def _partition(self, topic: str, key: str) -> int:
        """Where the producer's own partitioner would put `key` (as `partition_of` says)."""
        return _partition(key, len(self._producer.partitions_for(topic)))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaBusConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner._assigned(frozenset(_ours(tp) for tp in assigned))


class KafkaBusConsumer:
    def __init__(
        self,
        consumer: Any,
        *,
        topics: Sequence[str],
        positions: PositionsLoader | None,
        keys: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._consumer = consumer
        self._positions = positions
        # The topics' metadata first: a member that joins (and, as the group's leader,
        # assigns) before it knows their partitions assigns none, and was seen to wait
        # for the next periodic metadata refresh (minutes) before trying again.
        counts = {topic: len(consumer.partitions_for_topic(topic) or ()) for topic in topics}
        if keys is None:
            consumer.subscribe(list(topics), listener=_Rebalance(self))
            return
        missing = sorted(topic for topic, count in counts.items() if not count)
        if missing:
            raise ValueError(f"no partitions known for {', '.join(missing)}: create the topics")
        wanted = {t: {_partition(key, counts[t]) for key in keys[t]} for t in keys if t in counts}
        assigned = [
            KafkaTopicPartition(topic, partition)
            for topic, count in counts.items()
            for partition in range(count)
            if topic not in wanted or partition in wanted[topic]
        ]
        consumer.assign(assigned)
        self._assigned(frozenset(_ours(tp) for tp in assigned))

    def _assigned(self, assigned: frozenset[TopicPartition]) -> None:
        if self._positions is None or not assigned:
            return
        for tp, offset in self._positions(assigned).items():
            if tp in assigned:
                self._consumer.seek(_theirs(tp), offset)

    def poll(self, *, max_records: int, timeout: float) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        records: list[Record] = []
        for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            for message in batches[tp]:
                key = message.key.decode() if isinstance(message.key, bytes) else message.key
                records.append(
                    Record(
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        key=key,
                        value=message.value,
                        headers=tuple(message.headers or ()),
                        timestamp_ms=message.timestamp,
                    )
                )
        return records

    def commit(self, positions: Mapping[TopicPartition, int], *, wait: bool = True) -> None:
        if not positions:
            return
        offsets = {
            _theirs(tp): OffsetAndMetadata(offset, "", -1) for tp, offset in positions.items()
        }
        if wait:
            self._consumer.commit(offsets)
        else:
            self._consumer.commit_async(offsets)

    def seek(self, positions: Mapping[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        for tp, offset in positions.items():
            theirs = _theirs(tp)
            if theirs in assigned:
                self._consumer.seek(theirs, offset)

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(_ours(tp) for tp in self._consumer.assignment())

    def close(self) -> None:
        self._consumer.close(autocommit=False)
