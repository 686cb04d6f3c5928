"""The contract every bus implementation keeps (in-memory now; Kafka joins with a broker)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from knm.core.bus.kafka import KafkaBus
from knm.core.bus.memory import MemoryBus
from knm.core.bus.protocol import (
    Bus,
    Consumer,
    OutgoingMessage,
    Record,
    TopicPartition,
    from_beginning,
)
from knm.core.topics import TopicSpec
from knm.lab.backing import delete_topics

BUSES = ["memory", "kafka"]


@pytest.fixture(params=BUSES)
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "memory":
        yield MemoryBus(partitions=4)
        return
    yield KafkaBus(bootstrap=request.getfixturevalue("kafka_bootstrap"))


@pytest.fixture
def topic(bus: Bus) -> Iterator[str]:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    bus.create_topics([TopicSpec(name, partitions=4)])
    yield name
    if isinstance(bus, KafkaBus):
        delete_topics(bootstrap=bus.bootstrap, prefix=name)


def drain(consumer: Consumer, *, expect: int, rounds: int = 300) -> list[Record]:
    records: list[Record] = []
    for _ in range(rounds):
        records.extend(consumer.poll(max_records=1000, timeout=0.2))
        if len(records) >= expect:
            break
    return records


def publish(bus: Bus, topic: str, pairs: list[tuple[str, str]]) -> None:
    publisher = bus.publisher()
    publisher.publish([OutgoingMessage(topic, key, value.encode()) for key, value in pairs])
    publisher.close()


def test_messages_of_one_key_arrive_in_order_on_one_partition(bus: Bus, topic: str) -> None:
    pairs = [(f"k{i % 5}", f"v{i}") for i in range(100)]
    publish(bus, topic, pairs)
    consumer = bus.consumer(group=f"{topic}-g", topics=[topic])
    records = drain(consumer, expect=100)
    assert len(records) == 100
    by_key: dict[str | None, list[Record]] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record)
    for key, group in by_key.items():
        assert len({r.partition for r in group}) == 1
        assert [r.value.decode() for r in group] == [v for k, v in pairs if k == key]
        offsets = [r.offset for r in group]
        assert offsets == sorted(offsets)
    consumer.close()


def test_a_group_resumes_after_its_committed_offsets(bus: Bus, topic: str) -> None:
    publish(bus, topic, [("k", f"v{i}") for i in range(10)])
    first = bus.consumer(group=f"{topic}-g", topics=[topic])
    records = drain(first, expect=10)
    positions: dict[TopicPartition, int] = {}
    for record in records[:4]:
        positions[record.position] = record.offset + 1
    first.commit(positions)
    first.close()
    second = bus.consumer(group=f"{topic}-g", topics=[topic])
    rest = drain(second, expect=6)
    assert [r.value for r in rest] == [f"v{i}".encode() for i in range(4, 10)]
    second.close()


def test_a_positions_loader_overrides_committed_offsets(bus: Bus, topic: str) -> None:
    publish(bus, topic, [("k", f"v{i}") for i in range(10)])
    first = bus.consumer(group=f"{topic}-g", topics=[topic])
    records = drain(first, expect=10)
    first.commit({records[-1].position: records[-1].offset + 1})
    first.close()

    def from_seven(assigned: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 7 for tp in assigned if tp == records[0].position}

    second = bus.consumer(group=f"{topic}-g", topics=[topic], positions=from_seven)
    rest = drain(second, expect=3)
    assert [r.value for r in rest] == [b"v7", b"v8", b"v9"]
    second.close()


def test_groups_are_independent(bus: Bus, topic: str) -> None:
    publish(bus, topic, [("k", "v")])
    one = bus.consumer(group=f"{topic}-one", topics=[topic])
    two = bus.consumer(group=f"{topic}-two", topics=[topic])
    assert len(drain(one, expect=1)) == 1
    assert len(drain(two, expect=1)) == 1
    one.close()
    two.close()


def test_members_of_a_group_share_partitions_and_each_record_goes_to_one(
    bus: Bus, topic: str
) -> None:
    a = bus.consumer(group=f"{topic}-g", topics=[topic])
    b = bus.consumer(group=f"{topic}-g", topics=[topic])
    # Both members in the group first: a rebalance while records flow hands a partition
    # over and its new owner re-reads what nobody committed (at least once, by design).
    for _ in range(600):
        a.poll(max_records=1000, timeout=0.1)
        b.poll(max_records=1000, timeout=0.1)
        if a.assignment() and b.assignment():
            break
    publish(bus, topic, [(f"k{i}", f"v{i}") for i in range(200)])
    seen: list[Record] = []
    for _ in range(600):
        seen.extend(a.poll(max_records=1000, timeout=0.1))
        seen.extend(b.poll(max_records=1000, timeout=0.1))
        if len(seen) >= 200 and a.assignment() and b.assignment():
            break
    assert sorted(r.value for r in seen) == sorted(f"v{i}".encode() for i in range(200))
    assert a.assignment().isdisjoint(b.assignment())
    assert a.assignment() | b.assignment() == {
        TopicPartition(topic, p) for p in range(len(bus.end_offsets(topic)))
    }
    a.close()
    b.close()


def test_poll_respects_max_records_and_headers_round_trip(bus: Bus, topic: str) -> None:
    publisher = bus.publisher()
    publisher.publish(
        [OutgoingMessage(topic, "k", f"v{i}".encode(), (("h", b"x"),)) for i in range(5)]
    )
    consumer = bus.consumer(group=f"{topic}-g", topics=[topic])
    first: list[Record] = []
    for _ in range(50):
        first = consumer.poll(max_records=2, timeout=0.2)
        if first:
            break
    assert 1 <= len(first) <= 2
    assert first[0].headers == (("h", b"x"),)
    consumer.close()


def test_records_carry_the_time_the_bus_took_them(bus: Bus, topic: str) -> None:
    before = int(time.time() * 1000)
    publish(bus, topic, [("k", "v")])
    consumer = bus.consumer(group=f"{topic}-g", topics=[topic])
    (record,) = drain(consumer, expect=1)
    assert record.timestamp_ms is not None
    assert before - 1000 <= record.timestamp_ms <= int(time.time() * 1000) + 1000
    consumer.close()


def test_end_offsets_count_what_was_published(bus: Bus, topic: str) -> None:
    publish(bus, topic, [(f"k{i}", "v") for i in range(12)])
    assert sum(bus.end_offsets(topic).values()) == 12


def test_creating_topics_is_idempotent(bus: Bus, topic: str) -> None:
    bus.create_topics([TopicSpec(topic, partitions=4)])
    assert len(bus.end_offsets(topic)) == 4


def test_partition_of_says_where_a_key_goes(bus: Bus, topic: str) -> None:
    keys = [f"namespace-{i}" for i in range(40)]
    publish(bus, topic, [(key, key) for key in keys])
    consumer = bus.consumer(group=f"{topic}-g", topics=[topic])
    records = drain(consumer, expect=40)
    assert {r.key: r.partition for r in records} == {
        key: bus.partition_of(topic, key) for key in keys
    }
    consumer.close()


def test_a_partition_key_keeps_several_keys_together_and_in_order(bus: Bus, topic: str) -> None:
    nodes = [f"node-{i}" for i in range(8)]
    messages = [
        OutgoingMessage(topic, f"{node}/piece-{i}", f"{node}:{i}".encode(), partition_key=node)
        for i in range(6)
        for node in nodes
    ]
    publisher = bus.publisher()
    publisher.publish(messages)
    publisher.close()
    consumer = bus.consumer(group=f"{topic}-g", topics=[topic])
    records = drain(consumer, expect=len(messages))
    assert len(records) == len(messages)
    for node in nodes:
        mine = [r for r in records if r.key is not None and r.key.startswith(f"{node}/")]
        assert {r.partition for r in mine} == {bus.partition_of(topic, node)}
        assert [r.value.decode() for r in sorted(mine, key=lambda r: r.offset)] == [
            f"{node}:{i}" for i in range(6)
        ]
    consumer.close()


def test_seek_rereads_from_the_given_offsets(bus: Bus, topic: str) -> None:
    publish(bus, topic, [("k", f"v{i}") for i in range(6)])
    consumer = bus.consumer(group=f"{topic}-g", topics=[topic])
    records = drain(consumer, expect=6)
    consumer.seek({records[0].position: 2})
    again = drain(consumer, expect=4)
    assert [r.value for r in again] == [b"v2", b"v3", b"v4", b"v5"]
    consumer.close()


def test_a_keyed_member_reads_the_partitions_of_its_keys_and_shares_them_with_nobody(
    bus: Bus, topic: str
) -> None:
    pairs = [(f"k{i % 20}", f"v{i}") for i in range(200)]
    publish(bus, topic, pairs)
    # Two keys on two partitions, so that others' partitions are left out.
    one = "k0"
    two = next(k for k, _ in pairs if bus.partition_of(topic, k) != bus.partition_of(topic, one))
    wanted = {bus.partition_of(topic, one), bus.partition_of(topic, two)}
    expected = sorted(v for k, v in pairs if bus.partition_of(topic, k) in wanted)
    assert 0 < len(expected) < len(pairs)
    first = bus.consumer(group=f"{topic}-g", topics=[topic], keys={topic: [one, two]})
    second = bus.consumer(group=f"{topic}-g", topics=[topic], keys={topic: [one]})

    records = drain(first, expect=len(expected))
    assert first.assignment() == {TopicPartition(topic, p) for p in wanted}
    assert sorted(r.value.decode() for r in records) == expected
    assert [r.value.decode() for r in records if r.key == one] == [v for k, v in pairs if k == one]
    # The second member of the group reads its key's partition in full too.
    alone = [v for k, v in pairs if bus.partition_of(topic, k) == bus.partition_of(topic, one)]
    assert sorted(r.value.decode() for r in drain(second, expect=len(alone))) == sorted(alone)
    first.close()
    second.close()


def test_a_keyed_member_resumes_from_the_groups_offsets_or_its_loader(bus: Bus, topic: str) -> None:
    publish(bus, topic, [("k", f"v{i}") for i in range(10)])
    keys = {topic: ["k"]}
    first = bus.consumer(group=f"{topic}-g", topics=[topic], keys=keys)
    records = drain(first, expect=10)
    first.commit({records[3].position: records[3].offset + 1})
    first.close()

    resumed = bus.consumer(group=f"{topic}-g", topics=[topic], keys=keys)
    assert [r.value for r in drain(resumed, expect=6)] == [f"v{i}".encode() for i in range(4, 10)]
    resumed.close()
    again = bus.consumer(group=f"{topic}-g", topics=[topic], keys=keys, positions=from_beginning)
    assert len(drain(again, expect=10)) == 10
    again.close()
