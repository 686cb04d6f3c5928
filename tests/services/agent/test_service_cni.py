"""The agent's CNI requests meeting the allocator's commands, on a real node namespace."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from knm.core.bus.memory import MemoryBus
from services.agent.cni.protocol import Attachment, Request
from services.agent.cni.spec import ADD, CHECK, DEL, CniError, PodRef
from services.agent.dataplane import PodInterface, Sandbox
from services.agent.linux.dataplane import LinuxDataplane
from services.agent.linux.links import find_link, ipv4_addresses
from services.agent.linux.namespaces import routing
from services.agent.recording import RecordingDataplane
from services.agent.service import Agent
from tests.services.agent.namespaces import Namespaces
from tests.services.agent.node import (
    NODE,
    attach,
    detach,
    eventually,
    linux_dataplane,
    running_agent,
)
from tests.services.applier.builders import TOPICS, publish

POD = attach("p1", "10.0.0.5", name="web-1")


def request(command: str, netns: str, *, container: str = "c1", by_uid: bool = False) -> Request:
    pod = (
        PodRef(uid=POD.pod_uid, namespace=None, name=None)
        if by_uid
        else PodRef(uid=None, namespace=POD.namespace, name=POD.name)
    )
    return Request(command=command, container_id=container, netns=netns, ifname="eth0", pod=pod)


def address_in(netns: str) -> set[tuple[str, int]]:
    with routing(netns) as ipr:
        eth = find_link(ipr, "eth0")
        return ipv4_addresses(ipr, eth.index) if eth is not None else set()


def host_index(node: str) -> int | None:
    with routing(node) as ipr:
        link = find_link(ipr, POD.ifname)
    return link.index if link is not None else None


@pytest.fixture
def node(spaces: Namespaces) -> str:
    return spaces.make("node")


@pytest.fixture
def dataplane(node: str) -> LinuxDataplane:
    return linux_dataplane(node)


def test_an_add_waits_for_its_pods_command(spaces: Namespaces, dataplane: LinuxDataplane) -> None:
    box = spaces.make("pod")
    with running_agent(dataplane) as running:
        answers: list[Attachment] = []
        add = threading.Thread(
            target=lambda: answers.append(running.agent.cni_add(request(ADD, box)))
        )
        add.start()
        time.sleep(0.3)
        assert add.is_alive()

        running.publish(POD)
        add.join(timeout=10)

    assert answers == [
        Attachment(host_ifname=POD.ifname, ip=POD.ip, mac=POD.mac, gateway=POD.gateway)
    ]
    assert address_in(box) == {("10.0.0.5", 32)}


def test_a_new_command_for_a_pod_rewires_it_in_its_sandbox(
    spaces: Namespaces, dataplane: LinuxDataplane
) -> None:
    box = spaces.make("pod")
    with running_agent(dataplane, commands=(POD,)) as running:
        running.agent.cni_add(request(ADD, box))

        running.publish(POD.model_copy(update={"ip": "10.0.0.9"}))

        eventually(lambda: address_in(box) == {("10.0.0.9", 32)})
        assert running.agent.interfaces[POD.pod_uid].ip == "10.0.0.9"


def test_a_detach_command_unwires_the_pod_and_forgets_its_sandbox(
    spaces: Namespaces, node: str, dataplane: LinuxDataplane
) -> None:
    box = spaces.make("pod")
    with running_agent(dataplane, commands=(POD,)) as running:
        running.agent.cni_add(request(ADD, box))

        running.publish(detach(POD))

        eventually(lambda: host_index(node) is None)
        assert address_in(box) == set()
        assert running.agent.sandboxes == {}
        assert running.agent.interfaces == {}


def test_the_del_of_a_sandbox_the_pod_has_left_keeps_its_new_wiring(
    spaces: Namespaces, dataplane: LinuxDataplane
) -> None:
    old, new = spaces.make("old"), spaces.make("new")
    with running_agent(dataplane, commands=(POD,)) as running:
        running.agent.cni_add(request(ADD, old, container="c1"))
        running.agent.cni_add(request(ADD, new, container="c2"))

        running.agent.cni_del(request(DEL, old, container="c1"))

        assert address_in(new) == {("10.0.0.5", 32)}
        running.agent.cni_check(request(CHECK, new, container="c2"))
        running.agent.cni_del(request(DEL, new, container="c2"))
        assert address_in(new) == set()


def test_a_restarted_agent_adopts_the_wiring_and_check_teaches_it_the_sandbox(
    spaces: Namespaces, node: str
) -> None:
    box = spaces.make("pod")
    bus = MemoryBus(partitions=2)
    with running_agent(linux_dataplane(node), bus=bus, commands=(POD,)) as first:
        first.agent.cni_add(request(ADD, box))
    index = host_index(node)

    with running_agent(linux_dataplane(node), bus=bus) as second:
        assert host_index(node) == index
        assert second.agent.sandboxes == {}

        second.agent.cni_check(request(CHECK, box, by_uid=True))

        assert second.agent.sandboxes == {
            POD.pod_uid: Sandbox(container_id="c1", netns=box, ifname="eth0")
        }
        second.agent.cni_del(request(DEL, box, by_uid=True))
        assert host_index(node) is None


def test_check_of_a_sandbox_never_wired_is_an_unknown_container(
    spaces: Namespaces, dataplane: LinuxDataplane
) -> None:
    box = spaces.make("pod")
    with running_agent(dataplane, commands=(POD,)) as running, pytest.raises(CniError) as error:
        running.agent.cni_check(request(CHECK, box))

    assert error.value.code == 3
    assert "eth0 in" in error.value.details


def test_check_of_a_wiring_that_drifted_says_what_differs(
    spaces: Namespaces, node: str, dataplane: LinuxDataplane
) -> None:
    box = spaces.make("pod")
    with running_agent(dataplane, commands=(POD,)) as running:
        running.agent.cni_add(request(ADD, box))
        with routing(box) as ipr:
            eth = find_link(ipr, "eth0")
            assert eth is not None
            ipr.addr("del", index=eth.index, address=POD.ip, prefixlen=32)

        with pytest.raises(CniError) as error:
            running.agent.cni_check(request(CHECK, box))

    assert error.value.code == 101
    assert f"lacks the address {POD.ip}/32" in error.value.details


def test_an_add_into_a_sandbox_whose_interface_name_is_taken_is_refused(
    spaces: Namespaces, dataplane: LinuxDataplane
) -> None:
    box = spaces.make("pod")
    with routing(box) as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "theirs"})
    with running_agent(dataplane, commands=(POD,)) as running:
        with pytest.raises(CniError) as error:
            running.agent.cni_add(request(ADD, box))

        assert error.value.code == 102
        assert running.agent.sandboxes == {}


# -- without namespaces: the agent's own bookkeeping ------------------------------------


@pytest.fixture
def replaying() -> Iterator[Agent]:
    bus = MemoryBus(partitions=2)
    publish(bus, TOPICS.node_commands, [POD])
    agent = Agent(node=NODE, bus=bus, topics=TOPICS, dataplane=RecordingDataplane(), cni_wait=0.2)
    agent.start()
    yield agent
    agent.close()


def test_a_replaying_agent_asks_to_retry_rather_than_answer_early(replaying: Agent) -> None:
    with pytest.raises(CniError) as check:
        replaying.cni_check(request(CHECK, "/proc/self/ns/net"))
    with pytest.raises(CniError) as add:
        replaying.cni_add(request(ADD, "/proc/self/ns/net"))

    assert (check.value.code, add.value.code) == (11, 11)
    while replaying.step():
        pass
    assert replaying.cni_add(request(ADD, "/proc/self/ns/net")).ip == POD.ip


def test_a_closing_agent_releases_a_waiting_add() -> None:
    agent = Agent(node=NODE, bus=MemoryBus(), topics=TOPICS, dataplane=RecordingDataplane())
    agent.start()
    agent.step()
    errors: list[CniError] = []

    def add() -> None:
        try:
            agent.cni_add(request(ADD, "/proc/self/ns/net"))
        except CniError as error:
            errors.append(error)

    waiting = threading.Thread(target=add)
    waiting.start()
    time.sleep(0.2)
    agent.close()
    waiting.join(timeout=5)

    assert [e.code for e in errors] == [11]


def test_a_pod_renamed_by_its_newest_command_is_found_by_its_new_name() -> None:
    bus = MemoryBus(partitions=2)
    renamed = replace(PodInterface.of(POD), name="web-renamed")
    publish(bus, TOPICS.node_commands, [POD, POD.model_copy(update={"name": renamed.name})])
    agent = Agent(node=NODE, bus=bus, topics=TOPICS, dataplane=RecordingDataplane(), cni_wait=0)
    agent.start()
    while agent.step():
        pass

    with pytest.raises(CniError):
        agent.cni_add(request(ADD, "/proc/self/ns/net"))
    found = agent.cni_add(
        Request(
            command=ADD,
            container_id="c1",
            netns="/proc/self/ns/net",
            ifname="eth0",
            pod=PodRef(uid=None, namespace=POD.namespace, name=renamed.name),
        )
    )
    agent.close()

    assert found.ip == POD.ip


def test_a_pod_recreated_under_its_name_is_found_when_the_old_ones_detach_comes_late() -> None:
    bus = MemoryBus(partitions=2)
    again = attach("p2", "10.0.0.6", name=POD.name)
    publish(bus, TOPICS.node_commands, [POD, again, detach(POD)])
    agent = Agent(node=NODE, bus=bus, topics=TOPICS, dataplane=RecordingDataplane(), cni_wait=0)
    agent.start()
    while agent.step():
        pass

    found = agent.cni_add(request(ADD, "/proc/self/ns/net"))
    agent.close()

    assert found.ip == "10.0.0.6"


def test_a_command_the_dataplane_failed_on_is_retried_by_the_next_step(
    spaces: Namespaces,
) -> None:
    # The node's namespace does not exist yet: the first attempt fails for real.
    late = f"/var/run/netns/knmt-{spaces.run}-late"
    bus = MemoryBus(partitions=2)
    publish(bus, TOPICS.node_commands, [POD])
    agent = Agent(
        node=NODE,
        bus=bus,
        topics=TOPICS,
        dataplane=linux_dataplane(late),
    )
    agent.start()
    with pytest.raises(FileNotFoundError):
        agent.step()

    spaces.make("late")
    agent.step()
    agent.close()

    assert agent.interfaces == {POD.pod_uid: PodInterface.of(POD)}
