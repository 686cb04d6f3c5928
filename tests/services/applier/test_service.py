from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from knm.core.bus.memory import MemoryBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.events.base import Envelope, Event, envelope
from knm.core.events.codec import decode, encode
from knm.core.events.intents import NetworkDeclared
from knm.core.events.vrouter import OverlayConfigured
from knm.core.topics import OVERLAY_KEY
from services.agent.program import NodeProgram
from services.applier.model import DesiredModel
from services.applier.native import compile_node, compile_overlay
from services.applier.service import Applier
from tests.services.applier.builders import (
    AT,
    GATEWAY,
    TOPICS,
    Shop,
    interface,
    publish,
    withdrawn,
)


def drain(applier: Applier) -> None:
    while applier.step():
        pass


def published(bus: MemoryBus) -> list[tuple[str, Envelope]]:
    """(bus key, message) of every vrouter record; the applier always sets the key."""
    return [(record.key or "", decode(record.value)) for record in bus.records(TOPICS.vrouter)]


def programs(bus: MemoryBus) -> dict[str, NodeProgram]:
    """Each node's program, folded from its pieces as an agent folds them."""
    folded: dict[str, NodeProgram] = {}
    for _, message in published(bus):
        node = getattr(message.payload, "node", None)
        if node is not None:
            folded.setdefault(node, NodeProgram(node)).take(message.payload)
    return folded


def program_of(model: DesiredModel, node: str) -> NodeProgram:
    """The node's program as the compiler makes it whole."""
    program = NodeProgram(node)
    program.take(compile_node(model, node, gateway=GATEWAY))
    return program


def keys_published(bus: MemoryBus) -> Counter[str]:
    return Counter(key for key, _ in published(bus))


def model_of(events: list[Event]) -> DesiredModel:
    model = DesiredModel()
    for event in events:
        model.apply(event)
    return model


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus(partitions=3)


@pytest.fixture
def applier(bus: MemoryBus) -> Iterator[Applier]:
    applier = Applier(bus=bus, topics=TOPICS, gateway=GATEWAY)
    applier.start()
    yield applier
    applier.close()


def test_every_node_gets_its_compiled_program_and_the_overlay(
    bus: MemoryBus, applier: Applier
) -> None:
    intents = Shop().intents()
    publish(bus, TOPICS.intents, intents)

    drain(applier)

    expected = model_of(intents)
    assert programs(bus) == {node: program_of(expected, node) for node in ("n1", "n2", "n3")}
    overlays = [m.payload for _, m in published(bus) if isinstance(m.payload, OverlayConfigured)]
    assert overlays[-1] == compile_overlay(expected)


def test_messages_are_keyed_by_node_and_caused_by_the_last_intent(
    bus: MemoryBus, applier: Applier
) -> None:
    publish(bus, TOPICS.intents, Shop().intents())

    applier.step()  # one batch holds them all

    # The consumer reads partition after partition, as `records` lists them.
    consumed_last = decode(bus.records(TOPICS.intents)[-1].value)
    records = published(bus)
    assert {key.split("/")[0] for key, _ in records} == {"_overlay", "n1", "n2", "n3"}
    # n2 hosts redis: its VIP, with the allows into it, and the members of its sources.
    assert sorted(key for key, _ in records if key.startswith("n2")) == [
        "n2",
        "n2/network/shop/frontend",
        "n2/network/shop/redis",
        "n2/vip/10.254.0.10",
    ]
    for bus_key, message in records:
        assert message.key == (OVERLAY_KEY if bus_key == OVERLAY_KEY else f"vrouter/{bus_key}")
        assert message.causation_id == consumed_last.id
        assert message.occurred_at == consumed_last.occurred_at


def test_nothing_is_republished_when_no_program_changed(bus: MemoryBus, applier: Applier) -> None:
    shop = Shop()
    publish(bus, TOPICS.intents, shop.intents())
    drain(applier)
    before = len(bus.records(TOPICS.vrouter))

    # The same snapshots again, and an intent no program depends on.
    publish(
        bus,
        TOPICS.intents,
        [
            *shop.frontend,
            shop.redis_service,
            NetworkDeclared(kind="pod", name="shop/redis", namespace="shop", subject="redis"),
        ],
    )
    drain(applier)

    assert len(bus.records(TOPICS.vrouter)) == before


def test_a_change_republishes_only_the_programs_it_changed(
    bus: MemoryBus, applier: Applier
) -> None:
    publish(bus, TOPICS.intents, Shop().intents())
    drain(applier)
    before = Counter(key for key, _ in published(bus))

    publish(
        bus, TOPICS.intents, [interface("f3", node="n1", network="shop/frontend", ip="10.0.0.4")]
    )
    drain(applier)

    # n1 runs the new pod; n2 admits shop/frontend to redis. n3, the VIPs and the
    # overlay stay.
    after = Counter(key for key, _ in published(bus))
    assert after - before == Counter(["n1", "n1/network/shop/frontend", "n2/network/shop/frontend"])


def test_a_node_whose_last_pod_left_gets_an_empty_program(bus: MemoryBus, applier: Applier) -> None:
    shop = Shop()
    publish(bus, TOPICS.intents, shop.intents())
    drain(applier)

    # What the allocator sends when billing's only pod goes: the pod, and its service.
    publish(
        bus,
        TOPICS.intents,
        [
            *(withdrawn(pod) for pod in shop.billing),
            shop.billing_service.model_copy(update={"backends": ()}),
        ],
    )
    drain(applier)

    last = programs(bus)["n3"]
    assert last.ready
    assert (last.interfaces, last.networks, last.vips) == ((), {}, {})
    withdrawals = [m.payload.TYPE for k, m in published(bus) if k.startswith("n3/")]
    assert withdrawals[-2:] == ["NetworkMembersWithdrawn", "VipWithdrawn"]


def test_a_restarted_applier_publishes_the_final_state_once(
    bus: MemoryBus, applier: Applier
) -> None:
    shop = Shop()
    publish(bus, TOPICS.intents, shop.intents())
    drain(applier)
    # History the replay must not publish: a pod that came and went.
    passing = interface("f9", node="n1", network="shop/frontend", ip="10.0.0.9")
    publish(bus, TOPICS.intents, [passing])
    drain(applier)
    publish(bus, TOPICS.intents, [withdrawn(passing)])
    drain(applier)
    first = programs(bus)
    applier.close()
    before = Counter(key for key, _ in published(bus))

    # Small batches: the replay takes many steps.
    again = Applier(bus=bus, topics=TOPICS, gateway=GATEWAY, batch_size=2)
    again.start()
    drain(again)

    # It read what it had published: nothing changed since, so nothing is sent.
    assert programs(bus) == first
    assert keys_published(bus) == before
    assert not again.replaying
    again.close()


def test_a_restarted_applier_sends_what_changed_while_it_was_away(
    bus: MemoryBus, applier: Applier
) -> None:
    shop = Shop()
    publish(bus, TOPICS.intents, shop.intents())
    drain(applier)
    applier.close()
    before = keys_published(bus)
    # While it is away, billing's only pod and its service's backends go.
    changes = [
        *(withdrawn(pod) for pod in shop.billing),
        shop.billing_service.model_copy(update={"backends": ()}),
    ]
    publish(bus, TOPICS.intents, changes)

    again = Applier(bus=bus, topics=TOPICS, gateway=GATEWAY)
    again.start()
    drain(again)

    expected = model_of([*shop.intents(), *changes])
    assert programs(bus) == {node: program_of(expected, node) for node in ("n1", "n2", "n3")}
    sent = keys_published(bus) - before
    assert "n3" in sent
    assert "n1" not in sent
    assert {m.payload.TYPE for k, m in published(bus) if k.startswith("n3/")} >= {
        "NetworkMembersWithdrawn",
        "VipWithdrawn",
    }
    again.close()


def test_a_whole_program_of_an_earlier_version_is_replaced_by_pieces(
    bus: MemoryBus,
) -> None:
    shop = Shop()
    intents = shop.intents()
    publish(bus, TOPICS.intents, intents)
    model = model_of(intents)
    # What an earlier version left on the topic: n3's whole program, with a VIP that
    # is not wanted any more.
    old = compile_node(model, "n3", gateway=GATEWAY)
    stale = old.services[0].model_copy(update={"vip": "10.254.9.9"})
    legacy = envelope(
        old.model_copy(update={"services": (*old.services, stale)}),
        key="vrouter/n3",
        occurred_at=AT,
    )
    bus.publisher().publish([OutgoingMessage(topic=TOPICS.vrouter, key="n3", value=encode(legacy))])

    applier = Applier(bus=bus, topics=TOPICS, gateway=GATEWAY)
    applier.start()
    drain(applier)

    keys = keys_published(bus)
    assert keys["n3/vip/10.254.9.9"] == 1  # withdrawn
    assert programs(bus)["n3"] == program_of(model, "n3")
    applier.close()


def test_a_restarted_applier_waits_for_the_end_of_the_replay(bus: MemoryBus) -> None:
    publish(bus, TOPICS.intents, Shop().intents())
    applier = Applier(bus=bus, topics=TOPICS, gateway=GATEWAY, batch_size=2)
    applier.start()

    applier.step()

    assert applier.replaying
    assert bus.records(TOPICS.vrouter) == []


def test_an_undecodable_intent_goes_to_dead_letters_and_the_rest_is_applied(
    bus: MemoryBus, applier: Applier
) -> None:
    # Met during the replay at start: counted only, it was dead-lettered when first read.
    bus.publisher().publish(
        [OutgoingMessage(topic=TOPICS.intents, key="interface/x", value=b"{not json")]
    )
    drain(applier)
    assert applier.undecodable == 1
    assert bus.records(TOPICS.dead_letters) == []
    # Met live: dead-lettered with the reason, and the intents around it still applied.
    bus.publisher().publish(
        [OutgoingMessage(topic=TOPICS.intents, key="interface/y", value=b'{"type": "Nope"}')]
    )
    publish(bus, TOPICS.intents, Shop().intents())
    drain(applier)
    assert applier.undecodable == 2
    (dead,) = bus.records(TOPICS.dead_letters)
    assert dead.key == "interface/y"
    assert "Nope" in dict(dead.headers)["knm-reason"].decode()
    assert set(programs(bus)) == {"n1", "n2", "n3"}
