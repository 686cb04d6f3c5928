from __future__ import annotations

from dataclasses import replace

from knm.core.events.base import Event
from services.agent.dataplane import PodInterface
from services.agent.plan import AttachInterface, DetachInterface, OverlayRoute, SetGateway
from services.agent.program import NodeProgram
from services.agent.recording import RecordingDataplane
from services.applier.model import DesiredModel
from services.applier.native import compile_node, compile_overlay
from tests.services.applier.builders import GATEWAY, Shop, attach

POD = PodInterface.of(attach(Shop().frontend[0]))


def test_attach_records_once_and_detach_of_an_unknown_pod_records_nothing() -> None:
    dataplane = RecordingDataplane()

    dataplane.attach(POD, None)
    dataplane.attach(POD, None)
    dataplane.detach("nobody")

    assert dataplane.operations == [AttachInterface(POD)]
    assert dataplane.interfaces == {POD.pod_uid: POD}


def test_a_pod_attached_differently_is_rewired() -> None:
    dataplane = RecordingDataplane()
    dataplane.attach(POD, None)
    moved = replace(POD, ip="10.0.0.9")

    dataplane.attach(moved, None)
    dataplane.detach(POD.pod_uid)
    dataplane.detach(POD.pod_uid)

    assert dataplane.operations == [
        AttachInterface(POD),
        DetachInterface(pod_uid=POD.pod_uid, ifname=POD.ifname),
        AttachInterface(moved),
        DetachInterface(pod_uid=POD.pod_uid, ifname=POD.ifname),
    ]
    assert dataplane.interfaces == {}


def test_program_records_the_plan_and_the_summary_shows_the_result() -> None:
    shop = Shop()
    model = DesiredModel()
    events: list[Event] = shop.intents()
    for event in events:
        model.apply(event)
    config = compile_node(model, "n1", gateway=GATEWAY)
    table = compile_overlay(model)
    dataplane = RecordingDataplane()
    for pod in shop.frontend:
        dataplane.attach(PodInterface.of(attach(pod)), None)

    program = NodeProgram("n1")
    program.take(config)
    dataplane.program(program, None, table)
    dataplane.program(program, set(), table)

    assert dataplane.operations.count(SetGateway(GATEWAY)) == 1
    summary = dataplane.summary()
    assert summary.node == "n1"
    assert summary.interface_count == 2
    assert [i.pod_uid for i in summary.interfaces] == ["f1", "f2"]
    assert summary.overlay_routes == (
        OverlayRoute(block="10.0.0.128/26", node="n3", via="192.168.0.3"),
        OverlayRoute(block="10.0.0.64/26", node="n2", via="192.168.0.2"),
    )
    assert summary.overlay_route_count == 2
    assert summary.allow_count == 2
    assert [v.name for v in summary.vips] == ["redis", "frontend"]
    assert summary.vip_count == 2


def test_an_unprogrammed_dataplane_summarises_as_empty() -> None:
    summary = RecordingDataplane().summary()

    assert (summary.node, summary.interfaces, summary.allows, summary.vips) == (None, (), (), ())
    assert summary.overlay_routes == ()
