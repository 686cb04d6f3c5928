from __future__ import annotations

import hashlib

from knm.core.events.base import Event
from knm.core.events.intents import BlockDeclared, NodeDeclared, PolicyPortSpec
from knm.core.events.vrouter import (
    Allow,
    NetworkMembers,
    OverlayNode,
    VipBackend,
)
from services.applier.model import DesiredModel
from services.applier.native import compile_node, compile_overlay
from tests.services.applier.builders import GATEWAY, Shop, interface, service


def model_of(events: list[Event]) -> DesiredModel:
    model = DesiredModel()
    for event in events:
        model.apply(event)
    return model


def tcp(port: int) -> tuple[PolicyPortSpec, ...]:
    return (PolicyPortSpec(port=port, protocol="TCP"),)


def test_a_user_node_gets_a_declared_allow_to_the_used_vip() -> None:
    shop = Shop()
    program = compile_node(model_of(shop.intents()), "n1", gateway=GATEWAY)

    assert program.allows == (
        Allow(
            from_network="shop/frontend",
            vip="10.254.0.10",
            service="shop/redis",
            ports=tcp(6379),
            declared=True,
        ),
        Allow(
            from_network="shop/frontend",
            vip="10.254.0.20",
            service="shop/frontend",
            ports=tcp(80),
            declared=False,
        ),
    )
    assert [v.name for v in program.services] == ["redis", "frontend"]
    assert program.networks == (
        NetworkMembers(name="shop/frontend", members=("10.0.0.2", "10.0.0.3")),
    )
    assert [i.pod_uid for i in program.interfaces] == ["f1", "f2"]
    assert program.node == "n1"
    assert program.gateway == GATEWAY


def test_the_backend_node_gets_the_ingress_allow_and_the_sources_members() -> None:
    shop = Shop()
    program = compile_node(model_of(shop.intents()), "n2", gateway=GATEWAY)

    assert program.allows == (
        Allow(
            from_network="shop/frontend",
            vip="10.254.0.10",
            service="shop/redis",
            ports=tcp(6379),
            declared=True,
        ),
        Allow(
            from_network="shop/redis",
            vip="10.254.0.10",
            service="shop/redis",
            ports=tcp(6379),
            declared=False,
        ),
    )
    assert program.networks == (
        NetworkMembers(name="shop/frontend", members=("10.0.0.2", "10.0.0.3")),
        NetworkMembers(name="shop/redis", members=("10.0.0.66",)),
    )
    (redis,) = program.services
    assert redis.vip == "10.254.0.10"
    assert redis.network == "shop/service-redis"
    assert redis.ports == tcp(6379)
    assert redis.backends == (
        VipBackend(ip="10.0.0.66", node="n2", target_ports=((6379, "TCP", 6379),)),
    )


def test_an_unrelated_tier_sees_neither_side_of_the_policy() -> None:
    shop = Shop()
    program = compile_node(model_of(shop.intents()), "n3", gateway=GATEWAY)

    assert program.allows == (
        Allow(
            from_network="shop/billing",
            vip="10.254.0.30",
            service="shop/billing",
            ports=tcp(80),
            declared=False,
        ),
    )
    assert [v.name for v in program.services] == ["billing"]
    assert [n.name for n in program.networks] == ["shop/billing"]


def test_a_node_without_pods_gets_an_empty_program() -> None:
    program = compile_node(model_of(Shop().intents()), "n9", gateway=GATEWAY)

    assert (program.interfaces, program.networks, program.services, program.allows) == (
        (),
        (),
        (),
        (),
    )


def test_a_service_spanning_two_networks_lets_each_reach_it_and_ingress_admits_both() -> None:
    a = interface("a1", node="n1", network="ns/a", ip="10.0.0.2")
    b = interface("b1", node="n2", network="ns/b", ip="10.0.0.70")
    both = service("svc", namespace="ns", name="both", vip="10.254.0.5", backends=(a, b))
    model = model_of([a, b, both])

    on_n1 = compile_node(model, "n1", gateway=GATEWAY)

    # n1 hosts a backend: it admits both backend networks, and must know both member sets.
    assert {(x.from_network, x.declared) for x in on_n1.allows} == {
        ("ns/a", False),
        ("ns/b", False),
    }
    assert [n.name for n in on_n1.networks] == ["ns/a", "ns/b"]


def test_lists_are_sorted_numerically_and_backends_deduplicated() -> None:
    pods = tuple(
        interface(f"p{i}", node="n1", network="ns/a", ip=f"10.0.0.{i}") for i in (10, 9, 100)
    )
    svc = service("svc", namespace="ns", name="a", vip="10.254.0.5", backends=(*pods, pods[0]))
    program = compile_node(model_of([*pods, svc]), "n1", gateway=GATEWAY)

    assert program.networks[0].members == ("10.0.0.9", "10.0.0.10", "10.0.0.100")
    assert [b.ip for b in program.services[0].backends] == ["10.0.0.9", "10.0.0.10", "10.0.0.100"]


def test_the_revision_is_a_hash_of_the_content_only() -> None:
    shop = Shop()
    intents = shop.intents()
    forwards = compile_node(model_of(intents), "n2", gateway=GATEWAY)
    backwards = compile_node(model_of(intents[::-1]), "n2", gateway=GATEWAY)

    assert forwards == backwards
    canonical = forwards.model_dump_json(exclude={"revision"}).encode()
    assert forwards.revision == hashlib.sha256(canonical).hexdigest()[:16]


def test_the_revision_changes_with_the_content() -> None:
    shop = Shop()
    model = model_of(shop.intents())
    before = compile_node(model, "n2", gateway=GATEWAY)
    model.apply(interface("f3", node="n4", network="shop/frontend", ip="10.0.0.4"))
    after = compile_node(model, "n2", gateway=GATEWAY)

    assert after.revision != before.revision
    assert compile_node(model, "n2", gateway="169.254.9.9").revision != after.revision


def test_the_overlay_lists_nodes_with_their_blocks() -> None:
    model = model_of(
        [
            BlockDeclared(cidr="10.0.0.64/26", node="n1"),
            BlockDeclared(cidr="10.0.0.0/26", node="n1"),
            NodeDeclared(name="n1", address="192.168.0.1"),
            NodeDeclared(name="n2", address="192.168.0.2"),
            BlockDeclared(cidr="10.0.1.0/26", node="n3"),
        ]
    )

    overlay = compile_overlay(model)

    assert overlay.nodes == (
        OverlayNode(name="n1", address="192.168.0.1", blocks=("10.0.0.0/26", "10.0.0.64/26")),
        OverlayNode(name="n2", address="192.168.0.2", blocks=()),
        OverlayNode(name="n3", address=None, blocks=("10.0.1.0/26",)),
    )
    assert len(overlay.revision) == 16
    assert overlay.revision == compile_overlay(model).revision
    assert overlay.revision != compile_overlay(DesiredModel()).revision


def test_a_public_address_is_another_vip_of_its_service_with_the_same_allows() -> None:
    shop = Shop()
    public = shop.redis_service.model_copy(update={"public_ip": "10.1.0.1"})
    events = [e if e is not shop.redis_service else public for e in shop.intents()]
    model = model_of(events)

    for node in ("n1", "n2"):
        program = compile_node(model, node, gateway=GATEWAY)
        maps = {v.vip: v for v in program.services if v.name == "redis"}
        assert set(maps) == {"10.254.0.10", "10.1.0.1"}, node
        assert maps["10.1.0.1"] == maps["10.254.0.10"].model_copy(update={"vip": "10.1.0.1"})
        by_vip = {
            vip: {
                (a.from_network, a.declared, a.ports)
                for a in program.allows
                if a.service == "shop/redis" and a.vip == vip
            }
            for vip in maps
        }
        assert by_vip["10.254.0.10"], node
        assert by_vip["10.1.0.1"] == by_vip["10.254.0.10"], node
    # The billing node neither reaches nor hosts redis: neither address is there.
    billing = compile_node(model, "n3", gateway=GATEWAY)
    assert not [v for v in billing.services if v.name == "redis"]

    # Released: the public address leaves every program.
    model.apply(shop.redis_service)
    for node in ("n1", "n2"):
        program = compile_node(model, node, gateway=GATEWAY)
        assert "10.1.0.1" not in {v.vip for v in program.services}
        assert "10.1.0.1" not in {a.vip for a in program.allows}
