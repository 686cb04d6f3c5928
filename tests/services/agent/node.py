"""An agent as a node runs it, for CNI tests: its poll loop on a thread, an in-memory bus
carrying the allocator's commands, and its CNI socket served."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address

from knm.core.bus.memory import MemoryBus
from knm.core.domain.addresses import host_ifname, mac_for
from knm.core.events.base import Event
from knm.core.events.commands import AttachRequested, DetachRequested
from services.agent.cni.server import CniServer
from services.agent.dataplane import Dataplane
from services.agent.linux.dataplane import LinuxDataplane
from services.agent.linux.vrouter import Vrouter
from services.agent.linux.wiring import PodWiring
from services.agent.service import Agent
from tests.services.applier.builders import GATEWAY, TOPICS, publish

NODE = "n1"


def attach(uid: str, ip: str, *, name: str | None = None, node: str = NODE) -> AttachRequested:
    return AttachRequested(
        node=node,
        pod_uid=uid,
        namespace="shop",
        name=name or f"web-{uid}",
        network="shop/web",
        ip=ip,
        mac=mac_for(IPv4Address(ip)),
        gateway=GATEWAY,
        ifname=host_ifname(uid),
    )


def detach(command: AttachRequested) -> DetachRequested:
    return DetachRequested(
        node=command.node,
        pod_uid=command.pod_uid,
        namespace=command.namespace,
        name=command.name,
        ifname=command.ifname,
    )


def linux_dataplane(netns: str) -> LinuxDataplane:
    """The Linux dataplane of a node whose namespace is `netns`."""
    return LinuxDataplane(
        wiring=PodWiring(node_netns=netns), vrouter=Vrouter(node=NODE, netns=netns)
    )


def eventually(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.02)


class NodeAgent:
    def __init__(self, *, bus: MemoryBus, agent: Agent, socket: str) -> None:
        self.bus = bus
        self.agent = agent
        self.socket = socket

    def publish(self, *events: Event) -> None:
        publish(self.bus, TOPICS.node_commands, list(events))


@contextmanager
def running_agent(
    dataplane: Dataplane,
    *,
    bus: MemoryBus | None = None,
    commands: tuple[Event, ...] = (),
    cni_wait: float = 2.0,
) -> Iterator[NodeAgent]:
    """The agent running with its CNI socket in a short private directory (a unix
    socket's path has at most 107 bytes)."""
    bus = bus or MemoryBus(partitions=2)
    if commands:
        publish(bus, TOPICS.node_commands, list(commands))
    agent = Agent(node=NODE, bus=bus, topics=TOPICS, dataplane=dataplane, cni_wait=cni_wait)
    agent.start()
    directory = tempfile.mkdtemp(prefix="knmt-")
    server = CniServer(path=f"{directory}/agent.sock", handler=agent)
    stop = threading.Event()
    loop = threading.Thread(
        target=agent.run, args=(stop,), kwargs={"poll_timeout": 0.05}, daemon=True
    )
    loop.start()
    server.start()
    try:
        eventually(lambda: not agent.replaying)
        yield NodeAgent(bus=bus, agent=agent, socket=server.path)
    finally:
        stop.set()
        loop.join()
        agent.close()
        server.close()
        shutil.rmtree(directory, ignore_errors=True)
