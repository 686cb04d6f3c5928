from __future__ import annotations

import logging
import uuid

import pytest

from knm.core.bus.memory import MemoryBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.events.codec import decode, encode
from knm.core.events.vrouter import OverlayConfigured
from knm.core.topics import OVERLAY_KEY
from services.agent.dataplane import PodInterface
from services.agent.plan import AttachInterface, DetachInterface
from services.agent.program import NodeProgram
from services.agent.recording import RecordingDataplane
from services.agent.service import Agent
from services.applier.service import Applier
from tests.services.applier.builders import (
    GATEWAY,
    TOPICS,
    Shop,
    attach,
    detach,
    interface,
    publish,
    withdrawn,
)


def drain(*consumers: Applier | Agent) -> None:
    while sum(consumer.step() for consumer in consumers):
        pass


def agent_on(bus: MemoryBus, node: str) -> tuple[Agent, RecordingDataplane]:
    dataplane = RecordingDataplane()
    agent = Agent(node=node, bus=bus, topics=TOPICS, dataplane=dataplane)
    agent.start()
    return agent, dataplane


def run_shop(bus: MemoryBus, shop: Shop) -> Applier:
    """What the allocator would have published for the shop, and the applier's answer."""
    pods = [*shop.frontend, *shop.redis, *shop.billing]
    publish(bus, TOPICS.intents, shop.intents())
    publish(bus, TOPICS.node_commands, [attach(pod) for pod in pods])
    applier = Applier(bus=bus, topics=TOPICS, gateway=GATEWAY)
    applier.start()
    drain(applier)
    return applier


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus(partitions=3)


def test_an_agent_wires_its_own_pods_only(bus: MemoryBus) -> None:
    shop = Shop()
    publish(bus, TOPICS.node_commands, [attach(p) for p in (*shop.frontend, *shop.redis)])
    agent, dataplane = agent_on(bus, "n1")

    drain(agent)

    assert dataplane.operations == [
        AttachInterface(PodInterface.of(attach(pod))) for pod in shop.frontend
    ]
    assert sorted(dataplane.interfaces) == ["f1", "f2"]


def test_commands_are_idempotent(bus: MemoryBus) -> None:
    shop = Shop()
    pod = shop.frontend[0]
    agent, dataplane = agent_on(bus, "n1")
    publish(bus, TOPICS.node_commands, [attach(pod)])
    drain(agent)

    publish(bus, TOPICS.node_commands, [attach(pod)])
    drain(agent)
    publish(bus, TOPICS.node_commands, [detach(pod)])
    drain(agent)
    publish(bus, TOPICS.node_commands, [detach(pod)])
    drain(agent)

    assert dataplane.operations == [
        AttachInterface(PodInterface.of(attach(pod))),
        DetachInterface(pod_uid=pod.pod_uid, ifname=pod.ifname),
    ]


def test_a_pod_gone_within_one_batch_is_never_wired(bus: MemoryBus) -> None:
    pod = Shop().frontend[0]
    publish(bus, TOPICS.node_commands, [attach(pod), detach(pod)])
    agent, dataplane = agent_on(bus, "n1")

    drain(agent)

    # The newest command wins: a detach of a pod the dataplane never had.
    assert dataplane.operations == []


def test_the_agent_runs_its_nodes_newest_program(bus: MemoryBus) -> None:
    shop = Shop()
    run_shop(bus, shop)
    agent, dataplane = agent_on(bus, "n2")

    drain(agent)

    payloads = [decode(record.value).payload for record in bus.records(TOPICS.vrouter)]
    expected = NodeProgram("n2")
    for payload in payloads:
        if getattr(payload, "node", None) == "n2":
            expected.take(payload)
    (overlay,) = [p for p in payloads if isinstance(p, OverlayConfigured)]
    assert agent.program == expected
    assert dataplane.config == expected.assemble()
    assert dataplane.overlay == overlay
    summary = dataplane.summary()
    assert [i.pod_uid for i in summary.interfaces] == ["r1"]
    assert summary.allow_count == 2
    assert summary.vip_count == 1
    assert summary.overlay_route_count == 2


def test_a_new_program_is_applied_incrementally(bus: MemoryBus) -> None:
    shop = Shop()
    applier = run_shop(bus, shop)
    agent, dataplane = agent_on(bus, "n1")
    drain(agent)
    before = len(dataplane.operations)

    extra = interface("f3", node="n1", network="shop/frontend", ip="10.0.0.4")
    publish(bus, TOPICS.intents, [extra])
    publish(bus, TOPICS.node_commands, [attach(extra)])
    drain(applier, agent)

    assert [type(op).__name__ for op in dataplane.operations[before:]] == [
        "AttachInterface",
        "UpdateNetwork",
        "AddLocalRoute",
    ]


def test_an_identical_revision_is_not_programmed_again(
    bus: MemoryBus, caplog: pytest.LogCaptureFixture
) -> None:
    run_shop(bus, Shop())
    agent, _ = agent_on(bus, "n1")
    drain(agent)
    (again,) = [record for record in bus.records(TOPICS.vrouter) if record.key == "n1"]
    # The applier restarted and sent the same program in a new envelope.
    republished = decode(again.value).model_copy(update={"id": uuid.uuid4()})
    bus.publisher().publish(
        [OutgoingMessage(topic=TOPICS.vrouter, key="n1", value=encode(republished))]
    )

    with caplog.at_level(logging.INFO, logger="knm.agent"):
        drain(agent)

    assert not [r for r in caplog.records if r.getMessage() == "vrouter programmed"]


def test_other_nodes_messages_are_ignored(bus: MemoryBus) -> None:
    run_shop(bus, Shop())
    agent, dataplane = agent_on(bus, "n9")

    drain(agent)

    # Only the overlay concerns every node, and without a program of its own it waits.
    assert dataplane.operations == []
    assert agent.overlay.nodes


def test_an_agent_reads_only_the_partitions_of_its_nodes_keys() -> None:
    """At 5,000 nodes, an agent that read every node's commands and pieces would replay
    the cluster's whole program to start."""
    bus = MemoryBus(partitions=8)
    shop = Shop()
    run_shop(bus, shop)
    everything = sum(len(bus.records(t)) for t in (TOPICS.node_commands, TOPICS.vrouter))
    ours = {
        (topic, bus.partition_of(topic, key))
        for topic, keys in ((TOPICS.node_commands, ["n1"]), (TOPICS.vrouter, ["n1", OVERLAY_KEY]))
        for key in keys
    }
    on_ours = sum(
        1
        for topic in (TOPICS.node_commands, TOPICS.vrouter)
        for record in bus.records(topic)
        if (topic, record.partition) in ours
    )
    agent, dataplane = agent_on(bus, "n1")

    read = 0
    while consumed := agent.step():
        read += consumed

    assert read == on_ours < everything
    assert not agent.replaying
    assert sorted(dataplane.interfaces) == ["f1", "f2"]


def test_a_restarted_agent_converges_to_the_same_state(bus: MemoryBus) -> None:
    shop = Shop()
    applier = run_shop(bus, shop)
    first, dataplane = agent_on(bus, "n1")
    drain(first)
    # Some churn, so that the log holds more than the final state.
    gone = shop.frontend[1]
    publish(bus, TOPICS.intents, [withdrawn(gone)])
    publish(bus, TOPICS.node_commands, [detach(gone)])
    drain(applier, first)
    first.close()

    fresh = RecordingDataplane()
    second = Agent(node="n1", bus=bus, topics=TOPICS, dataplane=fresh, batch_size=1)
    second.start()
    drain(second)
    third = Agent(node="n1", bus=bus, topics=TOPICS, dataplane=dataplane)
    third.start()
    recorded = len(dataplane.operations)
    drain(third)

    assert fresh.interfaces == dataplane.interfaces
    assert fresh.config == dataplane.config
    assert fresh.overlay == dataplane.overlay
    assert fresh.summary() == dataplane.summary()
    assert sorted(fresh.interfaces) == ["f1"]
    # One record per step, yet the replay wires only the final state.
    assert [type(op).__name__ for op in fresh.operations].count("AttachInterface") == 1
    # The same dataplane resynced by a new agent: nothing to do.
    assert len(dataplane.operations) == recorded
