from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from knm.core.bus.memory import MemoryBus
from knm.core.bus.protocol import OutgoingMessage, TopicPartition
from knm.core.store.schema import OutboxRow, table
from knm.core.store.tracking import (
    OutboxRelay,
    already_applied,
    enqueue,
    forget_applied_before,
    load_positions,
    record_applied,
    save_positions,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_inbox_remembers_applied_events_per_consumer(engine: Engine) -> None:
    with engine.begin() as connection:
        record_applied(connection, consumer="a", event_ids=["e1", "e2"], at=NOW)
    with engine.connect() as connection:
        assert already_applied(connection, consumer="a", event_ids=["e1", "e3"]) == {"e1"}
        assert already_applied(connection, consumer="b", event_ids=["e1"]) == set()
    with engine.begin() as connection:
        assert forget_applied_before(connection, consumer="a", before=NOW + timedelta(1)) == 2


def test_positions_are_saved_and_loaded_per_partition(engine: Engine) -> None:
    tp0, tp1 = TopicPartition("facts", 0), TopicPartition("facts", 1)
    with engine.begin() as connection:
        save_positions(connection, consumer="a", positions={tp0: 5, tp1: 7})
        save_positions(connection, consumer="a", positions={tp0: 9})
    with engine.connect() as connection:
        assert load_positions(connection, consumer="a", partitions=[tp0, tp1]) == {tp0: 9, tp1: 7}
        assert load_positions(connection, consumer="a", partitions=[tp1]) == {tp1: 7}


def test_the_relay_publishes_the_outbox_in_order_then_empties_it(engine: Engine) -> None:
    bus = MemoryBus(partitions=1)
    with engine.begin() as connection:
        enqueue(
            connection,
            [OutgoingMessage("t", "k", f"m{i}".encode(), (("h", b"v"),)) for i in range(2500)],
            at=NOW,
        )
    relay = OutboxRelay(engine=engine, publisher=bus.publisher(), batch=1000)
    assert relay.drain() == 2500
    records = bus.records("t")
    assert [r.value for r in records] == [f"m{i}".encode() for i in range(2500)]
    assert records[0].headers == (("h", b"v"),)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(table(OutboxRow))).scalar() == 0


def test_nothing_is_published_from_a_rolled_back_transaction(engine: Engine) -> None:
    bus = MemoryBus(partitions=1)
    try:
        with engine.begin() as connection:
            enqueue(connection, [OutgoingMessage("t", "k", b"lost")], at=NOW)
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    assert OutboxRelay(engine=engine, publisher=bus.publisher()).drain() == 0
    assert bus.records("t") == []
