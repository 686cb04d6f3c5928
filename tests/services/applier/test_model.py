from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from knm.core.events.base import Event
from knm.core.events.facts import ServicePortSpec
from knm.core.events.intents import (
    Backend,
    BackendPort,
    BlockDeclared,
    BlockWithdrawn,
    InterfaceWithdrawn,
    NetworkDeclared,
    NetworkWithdrawn,
    NodeDeclared,
    NodeWithdrawn,
    PolicyDeclared,
    PolicyPortSpec,
    PolicyWithdrawn,
    ServiceDeclared,
    ServiceWithdrawn,
)
from knm.core.events.vrouter import VrouterConfigured
from services.applier.model import DesiredModel, Dirty
from services.applier.native import compile_node, compile_overlay
from tests.services.applier.builders import GATEWAY, Shop, intent_key, interface, withdrawn

# A small universe, so that random intents keep colliding on the same objects.
NODES = ("n1", "n2", "n3", "n4")
NETWORKS = ("ns/a", "ns/b", "ns/c")
# Both services may claim one network (a transient of re-creation); a service without a
# network falls back to "ns/service-<uid>".
SERVICE_NETWORKS = ("ns/service-s1", "ns/service-s2")
PODS = ("p1", "p2", "p3", "p4")
SERVICES = ("s1", "s2")
IPS = ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.70")
VIPS = ("10.254.0.1", "10.254.0.2", "10.254.0.3", None)

nodes = st.sampled_from(NODES)
networks = st.sampled_from(NETWORKS)
ports = st.sampled_from((80, 443, 6379))

interfaces = st.builds(
    lambda uid, node, network, ip: interface(uid, node=node, network=network, ip=ip),
    st.sampled_from(PODS),
    nodes,
    networks,
    st.sampled_from(IPS),
)
interface_withdrawals = st.builds(
    lambda uid, node: InterfaceWithdrawn(pod_uid=uid, namespace="ns", name=uid, node=node),
    st.sampled_from(PODS),
    nodes,
)
backends = st.builds(
    lambda uid, ip, node, network, port: Backend(
        pod_uid=uid,
        namespace="ns",
        name=uid,
        ip=ip,
        node=node,
        network=network,
        ports=(BackendPort(port=port, protocol="TCP", target_port=port + 8000),),
    ),
    st.sampled_from(PODS),
    st.sampled_from(IPS),
    nodes,
    networks,
    ports,
)
services = st.builds(
    lambda uid, vip, network, service_ports, members: ServiceDeclared(
        uid=uid,
        namespace="ns",
        name=uid,
        vip=vip,
        # None exercises the name-derived fallback ("ns/service-<uid>").
        network=network,
        ports=tuple(ServicePortSpec(port=p) for p in service_ports),
        backends=tuple(members),
    ),
    st.sampled_from(SERVICES),
    st.sampled_from(VIPS),
    st.sampled_from((*SERVICE_NETWORKS, None)),
    st.lists(ports, max_size=2),
    st.lists(backends, max_size=2),
)
service_withdrawals = st.builds(
    lambda uid: ServiceWithdrawn(uid=uid, namespace="ns", name=uid), st.sampled_from(SERVICES)
)
policies = st.builds(
    lambda name, source, target, uid, policy_ports: PolicyDeclared(
        name=name,
        from_network=source,
        to_network=target,
        service_uid=uid,
        ports=tuple(PolicyPortSpec(port=p, protocol="TCP") for p in policy_ports),
    ),
    st.sampled_from(("q1", "q2", "q3")),
    networks,
    st.sampled_from(SERVICE_NETWORKS),
    st.sampled_from(SERVICES),
    st.lists(ports, max_size=2),
)
policy_withdrawals = st.builds(PolicyWithdrawn, name=st.sampled_from(("q1", "q2", "q3")))
cidrs = st.sampled_from(("10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26"))
overlay_intents = st.one_of(
    st.builds(BlockDeclared, cidr=cidrs, node=nodes),
    st.builds(BlockWithdrawn, cidr=cidrs, node=nodes),
    st.builds(NodeDeclared, name=nodes, address=st.sampled_from(("192.168.0.1", None))),
    st.builds(NodeWithdrawn, name=nodes),
    st.builds(
        NetworkDeclared,
        kind=st.just("pod"),
        name=networks,
        namespace=st.just("ns"),
        subject=st.just("a"),
    ),
    st.builds(NetworkWithdrawn, kind=st.just("pod"), name=networks, namespace=st.just("ns")),
)
# Weighted (one_of alone would give each of the dozen intent types the same share):
# declarations dominate, so that sequences build configurations where services,
# policies and pods on several nodes meet, and then change them.
WEIGHTED: list[st.SearchStrategy[Event]] = [
    *[interfaces] * 4,
    *[services] * 3,
    *[policies] * 3,
    interface_withdrawals,
    service_withdrawals,
    policy_withdrawals,
    overlay_intents,
]
intents: st.SearchStrategy[Event] = st.sampled_from(WEIGHTED).flatmap(lambda kind: kind)


def compile_all(model: DesiredModel) -> dict[str, VrouterConfigured]:
    return {node: compile_node(model, node, gateway=GATEWAY) for node in NODES}


@settings(max_examples=400, deadline=None)
@given(sequence=st.lists(intents, min_size=10, max_size=40), seed=st.integers())
def test_dirty_nodes_cover_every_changed_program(sequence: list[Event], seed: int) -> None:
    model = DesiredModel()
    surviving: dict[str, Event] = {}
    programs = compile_all(model)
    overlay = compile_overlay(model)
    for event in sequence:
        dirty = model.apply(event)
        surviving[intent_key(event)] = event

        after = compile_all(model)
        changed = {node for node in NODES if after[node] != programs[node]}
        assert changed <= dirty.nodes, f"{event!r} changed {changed - dirty.nodes} unreported"
        overlay_after = compile_overlay(model)
        assert overlay_after == overlay or dirty.overlay

        # Level-triggered: the newest intent per key, in any order, is the same model.
        fresh = DesiredModel()
        replay = list(surviving.values())
        random.Random(seed).shuffle(replay)
        for intent in replay:
            fresh.apply(intent)
        assert compile_all(fresh) == after
        assert compile_overlay(fresh) == overlay_after

        programs, overlay = after, overlay_after


def test_a_new_user_pod_dirties_its_node_its_peers_and_the_used_services_nodes() -> None:
    shop = Shop()
    model = DesiredModel()
    for event in shop.intents():
        model.apply(event)

    dirty = model.apply(interface("f3", node="n4", network="shop/frontend", ip="10.0.0.4"))

    # n1 holds shop/frontend's members, n2 admits shop/frontend to redis; n3 is unrelated.
    assert dirty == Dirty(nodes={"n1", "n2", "n4"})


def test_a_policy_dirties_its_sources_and_the_target_backends() -> None:
    shop = Shop()
    model = DesiredModel()
    for event in shop.intents():
        if event != shop.policy:
            model.apply(event)

    assert model.apply(shop.policy) == Dirty(nodes={"n1", "n2"})
    assert model.apply(PolicyWithdrawn(name=shop.policy.name)) == Dirty(nodes={"n1", "n2"})


def test_a_service_dirties_its_backends_its_collection_and_its_users() -> None:
    shop = Shop()
    model = DesiredModel()
    for event in shop.intents():
        model.apply(event)

    dirty = model.apply(ServiceWithdrawn(uid="svc-r", namespace="shop", name="redis"))

    assert dirty == Dirty(nodes={"n1", "n2"})


def test_withdrawing_an_unknown_interface_still_dirties_its_node() -> None:
    # After a restart on a compacted topic, only the Withdrawn may be left.
    pod = interface("x", node="n7", network="ns/a", ip="10.0.0.9")

    assert DesiredModel().apply(withdrawn(pod)) == Dirty(nodes={"n7"})


def test_overlay_and_network_intents() -> None:
    model = DesiredModel()

    assert model.apply(NodeDeclared(name="n1", address="192.168.0.1")) == Dirty(overlay=True)
    assert model.apply(BlockDeclared(cidr="10.0.0.0/26", node="n1")) == Dirty(overlay=True)
    assert not model.apply(NetworkDeclared(kind="pod", name="ns/a", namespace="ns", subject="a"))
