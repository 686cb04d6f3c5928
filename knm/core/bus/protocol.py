"""The message bus as knm uses it: keyed, partitioned, ordered per key, consumer groups."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from knm.core.topics import TopicSpec


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    # Decides the partition: messages of one key keep their order.
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    # Decides the partition instead of the key, when several keys must keep their
    # order among themselves and arrive together (one node's vrouter pieces).
    partition_key: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    # When the bus accepted it (producer time), in milliseconds since the epoch.
    timestamp_ms: int | None = None

    @property
    def position(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


# Called when partitions are assigned; returns the offsets to resume from for those the
# caller keeps its own positions for (the rest resume from the group's committed offsets).
PositionsLoader = Callable[[frozenset[TopicPartition]], Mapping[TopicPartition, int]]


def from_beginning(assigned: frozenset[TopicPartition]) -> Mapping[TopicPartition, int]:
    """For consumers whose state is the whole (compacted) topic: read it all on each start."""
    return dict.fromkeys(assigned, 0)


class Publisher(Protocol):
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Return once every message is durably accepted, in order per key; raise otherwise."""

    def close(self) -> None: ...


class Consumer(Protocol):
    def poll(self, *, max_records: int, timeout: float) -> list[Record]: ...

    def commit(self, positions: Mapping[TopicPartition, int], *, wait: bool = True) -> None:
        """Record, for the group, the next offset to read of each partition. `wait=False`
        sends it without waiting for the answer: for a consumer that keeps its positions
        elsewhere too (with its results, or by replaying from the beginning), to whom a
        lost commit costs nothing and a round trip before its next poll costs latency."""

    def seek(self, positions: Mapping[TopicPartition, int]) -> None:
        """Read these assigned partitions from these offsets next."""

    def assignment(self) -> frozenset[TopicPartition]: ...

    def close(self) -> None: ...


class Bus(Protocol):
    def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics that do not exist yet; existing ones are left as they are."""

    def publisher(self) -> Publisher: ...

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        positions: PositionsLoader | None = None,
        keys: Mapping[str, Sequence[str]] | None = None,
    ) -> Consumer:
        """A member of `group`; with no committed offset it starts at the beginning.

        With `keys`, it reads only the partitions these keys' messages go to, per topic
        named there (all partitions of the topics not named), assigned to it alone
        rather than shared with the group's other members: for a reader of a few keys
        of a topic keyed by many (an agent, of its node's commands and pieces)."""

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]: ...

    def partition_of(self, topic: str, key: str) -> int:
        """The partition a message with this key goes to (as the publisher chooses it)."""
