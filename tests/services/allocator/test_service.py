"""The allocator over a bus and a database: batches, exactly-once, poison, restarts."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, select

from knm.core.bus.memory import MemoryBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.domain.engine import Observation, PodGone, PodSeen, ServiceSeen
from knm.core.domain.model import NetworkSettings, Pod, Service, ServicePort
from knm.core.events.codec import decode
from knm.core.events.commands import AttachRequested, DetachRequested
from knm.core.events.intents import (
    AllocationFailed,
    InterfaceDeclared,
    InterfaceWithdrawn,
    PolicyDeclared,
    ServiceDeclared,
)
from knm.core.store import tracking
from knm.core.store.schema import AddressHistoryRow, Base, table
from knm.core.topics import Topics
from services.allocator.report import plan_document
from services.allocator.service import Allocator
from tests.core.domain.strategies import histories
from tests.services.allocator.facts import envelopes, messages

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = Topics(prefix="t.")


def make(engine: Engine, bus: MemoryBus, **kwargs: Any) -> Allocator:
    allocator = Allocator(
        engine=engine,
        bus=bus,
        settings=kwargs.pop("settings", NetworkSettings()),
        topics=TOPICS,
        clock=lambda: T0,
        **kwargs,
    )
    allocator.start()
    return allocator


def run_until_idle(allocator: Allocator) -> None:
    while allocator.step() or not allocator.ready:
        pass
    allocator.relay.drain()


def seed_observations() -> list[Observation]:
    return [
        ServiceSeen(
            Service("s-redis", "default", "redis", {"name": "redis"}, (ServicePort(6379),))
        ),
        PodSeen(Pod("p-redis", "default", "redis", node="node-1", labels={"name": "redis"})),
        PodSeen(
            Pod(
                "p-web",
                "default",
                "web",
                node="node-2",
                labels={"name": "web", "uses": "redis"},
            )
        ),
    ]


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus(partitions=3)


def publish(bus: MemoryBus, observations: list[Observation]) -> None:
    bus.publisher().publish(messages(envelopes(observations, start=T0), TOPICS))


def test_facts_become_rows_history_intents_and_commands(engine: Engine, bus: MemoryBus) -> None:
    publish(bus, seed_observations())
    allocator = make(engine, bus)
    run_until_idle(allocator)
    with engine.connect() as connection:
        document = plan_document(connection)
        history = connection.execute(select(func.count()).select_from(table(AddressHistoryRow)))
        # The VIP, two pod addresses, and the VIP as redis' floating IP.
        assert history.scalar() == 4
    assert [p["name"] for p in document["pods"]] == ["redis", "web"]
    assert document["policies"][0]["name"] == "default/web->default/service-redis"
    intents = [decode(r.value).payload for r in bus.records(TOPICS.intents)]
    assert sum(isinstance(i, InterfaceDeclared) for i in intents) == 2
    assert any(isinstance(i, ServiceDeclared) and i.backends for i in intents)
    assert any(isinstance(i, PolicyDeclared) for i in intents)
    commands = bus.records(TOPICS.node_commands)
    attach = [decode(r.value).payload for r in commands]
    assert {(c.node, c.name) for c in attach if isinstance(c, AttachRequested)} == {
        ("node-1", "redis"),
        ("node-2", "web"),
    }
    # Node commands are partitioned by node, so one agent reads one key.
    assert {r.key for r in commands} == {"node-1", "node-2"}


def test_a_deleted_pod_is_detached_and_withdrawn(engine: Engine, bus: MemoryBus) -> None:
    publish(bus, [*seed_observations(), PodGone("p-web", "default", "web")])
    run_until_idle(make(engine, bus, batch_size=1))
    payloads = [decode(r.value).payload for r in bus.records(TOPICS.node_commands)]
    assert any(isinstance(p, DetachRequested) and p.name == "web" for p in payloads)
    intents = [decode(r.value).payload for r in bus.records(TOPICS.intents)]
    assert any(isinstance(i, InterfaceWithdrawn) and i.name == "web" for i in intents)


def test_redelivered_facts_are_skipped_by_event_id(engine: Engine, bus: MemoryBus) -> None:
    pairs = envelopes(seed_observations(), start=T0)
    bus.publisher().publish(messages(pairs, TOPICS))
    allocator = make(engine, bus)
    run_until_idle(allocator)
    with engine.connect() as connection:
        before = plan_document(connection)
    intents_before = len(bus.records(TOPICS.intents))
    bus.publisher().publish(messages(pairs, TOPICS))
    run_until_idle(allocator)
    assert allocator.skipped == len(pairs)
    with engine.connect() as connection:
        assert plan_document(connection) == before
    assert len(bus.records(TOPICS.intents)) == intents_before


def test_a_restart_resumes_from_the_positions_in_the_database(
    engine: Engine, bus: MemoryBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(bus, seed_observations())
    first = make(engine, bus)
    # The process dies after its transaction committed but before Kafka heard of it.
    consumer = first._consumer
    assert consumer is not None
    monkeypatch.setattr(consumer, "commit", lambda positions: None)
    run_until_idle(first)
    first.close()
    second = make(engine, bus)
    run_until_idle(second)
    assert second.applied == 0
    assert second.skipped == 0
    with engine.connect() as connection:
        history = connection.execute(select(func.count()).select_from(table(AddressHistoryRow)))
        assert history.scalar() == 4


def test_a_failed_transaction_leaves_nothing_and_the_batch_is_retried(
    engine: Engine, bus: MemoryBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.allocator.service as module

    publish(bus, seed_observations())
    allocator = make(engine, bus)
    real = tracking.save_positions
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away")
        real(*args, **kwargs)

    monkeypatch.setattr(module, "save_positions", failing)
    with pytest.raises(RuntimeError):
        allocator.step()
    with engine.connect() as connection:
        assert plan_document(connection)["pods"] == []
    assert not allocator.ready
    run_until_idle(allocator)
    with engine.connect() as connection:
        assert len(plan_document(connection)["pods"]) == 2


def test_poison_messages_go_to_dead_letters_and_the_rest_is_applied(
    engine: Engine, bus: MemoryBus
) -> None:
    publisher = bus.publisher()
    publisher.publish(
        [
            OutgoingMessage(TOPICS.facts, "default", b"{not json"),
            OutgoingMessage(TOPICS.facts, "default", b'{"type": "PodExploded", "version": 1}'),
        ]
    )
    publish(bus, seed_observations())
    allocator = make(engine, bus)
    run_until_idle(allocator)
    dead = bus.records(TOPICS.dead_letters)
    assert len(dead) == 2
    reasons = [dict(r.headers)["knm-reason"].decode() for r in dead]
    assert reasons[0].startswith("not JSON")
    assert "PodExploded" in reasons[1]
    assert allocator.dead_lettered == 2
    with engine.connect() as connection:
        assert len(plan_document(connection)["pods"]) == 2


def test_an_exhausted_pool_is_an_error_event(engine: Engine, bus: MemoryBus) -> None:
    from ipaddress import IPv4Network

    tiny = NetworkSettings(pod_pools=(IPv4Network("10.0.0.0/30"),), block_prefix=30)
    publish(
        bus,
        [PodSeen(Pod(f"p{i}", "default", f"p{i}", node="node-1")) for i in range(3)],
    )
    run_until_idle(make(engine, bus, settings=tiny))
    errors = [decode(r.value).payload for r in bus.records(TOPICS.errors)]
    assert len(errors) == 1
    assert isinstance(errors[0], AllocationFailed)
    assert errors[0].code == "pool-exhausted"


def _wipe(engine: Engine) -> None:
    with engine.begin() as connection:
        for model in reversed(Base.metadata.sorted_tables):
            if model.name != "alembic_version":
                connection.execute(delete(model))


def _final(
    engine: Engine, publish_stream: Callable[[MemoryBus], None], batch: int
) -> tuple[Any, int]:
    _wipe(engine)
    bus = MemoryBus(partitions=3)
    publish_stream(bus)
    run_until_idle(make(engine, bus, batch_size=batch))
    with engine.connect() as connection:
        history = connection.execute(select(func.count()).select_from(table(AddressHistoryRow)))
        return plan_document(connection), int(history.scalar() or 0)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(histories(), st.randoms(use_true_random=False), st.integers(1, 50))
def test_replaying_the_facts_with_duplicates_gives_the_identical_state(
    engine: Engine, observations: list[Observation], rnd: random.Random, batch: int
) -> None:
    pairs = envelopes(observations, start=T0)
    # Every fact goes to partition 0 so that the stream keeps one order, as one object's
    # facts do in Kafka; duplicates are exact redeliveries (same event ids).
    stream = [messages([p], TOPICS)[0] for p in pairs]
    single = [OutgoingMessage(m.topic, "same", m.value) for m in stream]
    noisy = list(single)
    for _ in range(len(single) // 2):
        # A redelivery comes after the original, anywhere later in the stream.
        at = rnd.randrange(1, len(noisy) + 1)
        noisy.insert(at, rnd.choice(noisy[:at]))

    clean = _final(engine, lambda bus: bus.publisher().publish(single), batch)
    again = _final(engine, lambda bus: bus.publisher().publish(single), 7)
    duplicated = _final(engine, lambda bus: bus.publisher().publish(noisy), batch)
    assert clean == again
    assert clean == duplicated


def test_load_balancers_get_public_addresses_released_with_the_type_or_the_service(
    engine: Engine, bus: MemoryBus
) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from knm.core.domain.engine import ServiceGone
    from knm.core.events.intents import PublicAddressDeclared, PublicAddressWithdrawn
    from knm.core.store.schema import QuarantineRow, ServiceRow

    lb = Service(
        "s-lb", "shop", "front", {"name": "front"}, (ServicePort(80),), type="LoadBalancer"
    )
    other = replace(lb, uid="s-other", name="other")
    publish(
        bus,
        [
            ServiceSeen(lb),
            ServiceSeen(replace(lb, type="ClusterIP")),  # releases 10.1.0.1 into quarantine
            ServiceSeen(lb),  # so it comes back with the next address
            ServiceSeen(other),
            ServiceGone("s-lb", "shop", "front"),
        ],
    )
    first = make(engine, bus, batch_size=1)
    run_until_idle(first)
    first.close()

    with engine.connect() as connection:
        services = {s["name"]: s for s in plan_document(connection)["services"]}
        history = connection.execute(
            select(table(AddressHistoryRow))
            .where(table(AddressHistoryRow).c.kind == "public")
            .order_by(table(AddressHistoryRow).c.seq)
        ).all()
        quarantined = {
            row.ip: row.pool for row in connection.execute(select(table(QuarantineRow))).all()
        }
        public = connection.execute(select(table(ServiceRow).c.public_ip)).scalars().all()
    assert services == {"other": services["other"]}
    assert services["other"]["public_ip"] == "10.1.0.3"
    assert public == ["10.1.0.3"]
    assert [(h.action, h.ip, h.uid, h.pool, h.network) for h in history] == [
        ("allocated", "10.1.0.1", "s-lb", "10.1.0.0/16", "shop/service-front"),
        ("released", "10.1.0.1", "s-lb", "10.1.0.0/16", "shop/service-front"),
        ("allocated", "10.1.0.2", "s-lb", "10.1.0.0/16", "shop/service-front"),
        ("allocated", "10.1.0.3", "s-other", "10.1.0.0/16", "shop/service-other"),
        ("released", "10.1.0.2", "s-lb", "10.1.0.0/16", "shop/service-front"),
    ]
    assert {ip: pool for ip, pool in quarantined.items() if ip.startswith("10.1.")} == {
        "10.1.0.1": "10.1.0.0/16",
        "10.1.0.2": "10.1.0.0/16",
    }
    announced = [
        (r.key, type(p).__name__, p.ip)
        for r in bus.records(TOPICS.intents)
        if isinstance(p := decode(r.value).payload, PublicAddressDeclared | PublicAddressWithdrawn)
    ]
    assert announced == [
        ("public/s-lb", "PublicAddressDeclared", "10.1.0.1"),
        ("public/s-lb", "PublicAddressWithdrawn", "10.1.0.1"),
        ("public/s-lb", "PublicAddressDeclared", "10.1.0.2"),
        ("public/s-other", "PublicAddressDeclared", "10.1.0.3"),
        ("public/s-lb", "PublicAddressWithdrawn", "10.1.0.2"),
    ]
    declared = [
        p
        for r in bus.records(TOPICS.intents)
        if isinstance(p := decode(r.value).payload, ServiceDeclared)
    ]
    assert declared[-1].name == "other"
    assert declared[-1].public_ip == "10.1.0.3"

    # A restarted allocator loads who holds what: the next one skips the held address
    # and the two in quarantine.
    later = [
        (key, message.model_copy(update={"id": uuid.uuid4()}))
        for key, message in envelopes(
            [ServiceSeen(replace(lb, uid="s-new", name="new"))], start=T0 + timedelta(seconds=10)
        )
    ]
    bus.publisher().publish(messages(later, TOPICS))
    run_until_idle(make(engine, bus))
    with engine.connect() as connection:
        services = {s["name"]: s for s in plan_document(connection)["services"]}
    assert services["new"]["public_ip"] == "10.1.0.4"


def test_endpoint_slices_and_network_policies_are_consumed_and_not_acted_on(
    engine: Engine, bus: MemoryBus
) -> None:
    """No rule uses them yet: they are recorded as applied (never redelivered work, never
    dead letters) and change nothing of the model."""
    from knm.core.events.base import envelope
    from knm.core.events.codec import encode
    from knm.core.events.facts import (
        EndpointSliceDeleted,
        EndpointSliceObserved,
        EndpointSpec,
        NetworkPolicyDeleted,
        NetworkPolicyObserved,
    )

    publish(bus, seed_observations())
    events: list[
        EndpointSliceObserved | NetworkPolicyObserved | EndpointSliceDeleted | NetworkPolicyDeleted
    ] = [
        EndpointSliceObserved(
            uid="es",
            namespace="default",
            name="redis-x",
            service="redis",
            endpoints=(EndpointSpec(addresses=("10.0.0.1",), pod_uid="p-redis"),),
        ),
        NetworkPolicyObserved(uid="np", namespace="default", name="deny"),
        EndpointSliceDeleted(uid="es", namespace="default", name="redis-x"),
        NetworkPolicyDeleted(uid="np", namespace="default", name="deny"),
    ]
    later = [
        envelope(event, key=f"{event.TYPE}/default/{event.name}", occurred_at=T0)
        for event in events
    ]
    bus.publisher().publish(
        [OutgoingMessage(TOPICS.facts, "default", encode(message)) for message in later]
    )
    allocator = make(engine, bus)
    run_until_idle(allocator)
    with engine.connect() as connection:
        document = plan_document(connection)
        applied = tracking.already_applied(
            connection, consumer=TOPICS.group("allocator"), event_ids=[str(m.id) for m in later]
        )

    assert applied == {str(m.id) for m in later}
    assert allocator.applied == len(seed_observations()) + len(later)
    assert allocator.dead_lettered == 0
    assert bus.records(TOPICS.dead_letters) == []
    assert [p["name"] for p in document["pods"]] == ["redis", "web"]
