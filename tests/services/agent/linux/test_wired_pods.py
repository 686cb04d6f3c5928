from __future__ import annotations

from services.agent.dataplane import PodInterface, Sandbox
from services.agent.linux.wired_pods import WiredPodsDataplane
from services.agent.linux.wiring import PodWiring
from services.agent.plan import SetGateway
from services.applier.model import DesiredModel
from services.applier.native import compile_node, compile_overlay
from tests.services.agent.namespaces import Namespaces
from tests.services.agent.node import attach
from tests.services.applier.builders import GATEWAY, Shop


def test_pods_are_wired_for_real_and_programs_recorded(spaces: Namespaces) -> None:
    node, box = spaces.make("node"), spaces.make("pod")
    dataplane = WiredPodsDataplane(wiring=PodWiring(node_netns=node))
    iface = PodInterface.of(attach("p1", "10.0.0.5"))
    model = DesiredModel()
    for event in Shop().intents():
        model.apply(event)

    dataplane.attach(iface, Sandbox(container_id="c1", netns=box, ifname="eth0"))
    dataplane.program(compile_node(model, "n1", gateway=GATEWAY), compile_overlay(model))

    assert dataplane.check(iface, Sandbox(container_id="c1", netns=box, ifname="eth0")) == []
    assert SetGateway(GATEWAY) in dataplane.programs.operations
    dataplane.detach("p1")
    assert dataplane.wiring.owned() == set()
    dataplane.close()
