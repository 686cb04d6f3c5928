from __future__ import annotations

from knm.core.events.base import Event
from knm.core.events.intents import BlockDeclared, NodeDeclared
from knm.core.events.vrouter import OverlayConfigured, OverlayNode, VrouterConfigured
from services.agent.plan import (
    AddAllow,
    AddLocalRoute,
    AddOverlayRoute,
    LocalRoute,
    Op,
    OverlayRoute,
    RemoveAllow,
    RemoveLocalRoute,
    RemoveNetwork,
    RemoveOverlayRoute,
    RemoveVip,
    SetGateway,
    SetVip,
    UpdateNetwork,
    plan_program,
)
from services.applier.model import DesiredModel
from services.applier.native import compile_node, compile_overlay
from tests.services.applier.builders import GATEWAY, Shop, interface, service, withdrawn


def program(events: list[Event], node: str) -> VrouterConfigured:
    model = DesiredModel()
    for event in events:
        model.apply(event)
    return compile_node(model, node, gateway=GATEWAY)


def overlay(*nodes: OverlayNode) -> OverlayConfigured:
    return OverlayConfigured(revision="", nodes=nodes)


def plan(
    before: VrouterConfigured | None,
    after: VrouterConfigured,
    *,
    overlay_before: OverlayConfigured | None = None,
    overlay_after: OverlayConfigured | None = None,
) -> list[Op]:
    return plan_program(
        before,
        after,
        overlay_before=overlay_before,
        overlay_after=overlay_after or overlay(),
        node=after.node,
    )


def kinds(ops: list[Op]) -> list[str]:
    return [type(op).__name__ for op in ops]


def test_the_first_program_creates_sets_before_the_rules_that_name_them() -> None:
    shop = Shop()
    desired = program(shop.intents(), "n2")

    ops = plan(None, desired)

    assert kinds(ops) == [
        "SetGateway",
        "UpdateNetwork",
        "UpdateNetwork",
        "AddLocalRoute",
        "SetVip",
        "AddAllow",
        "AddAllow",
    ]
    assert ops[0] == SetGateway(GATEWAY)
    assert ops[1] == UpdateNetwork(
        network="shop/frontend", added=("10.0.0.2", "10.0.0.3"), removed=()
    )
    assert ops[3] == AddLocalRoute(LocalRoute(ip="10.0.0.66", ifname="knmr1"))


def test_the_same_program_again_needs_nothing() -> None:
    desired = program(Shop().intents(), "n1")

    assert plan(desired, desired) == []


def test_adding_one_backend_changes_one_vip_map_only() -> None:
    shop = Shop()
    spare = interface("r2", node="n4", network="shop/redis", ip="10.0.0.67")
    base = [*shop.intents(), spare]
    before = program(base, "n1")
    grown = service(
        "svc-r",
        namespace="shop",
        name="redis",
        vip="10.254.0.10",
        backends=(*shop.redis, spare),
        port=6379,
        target=6379,
    )
    after = program([*base, grown], "n1")

    ops = plan(before, after)

    (vip_map,) = [v for v in after.services if v.name == "redis"]
    assert ops == [SetVip(vip_map)]
    assert [b.ip for b in vip_map.backends] == ["10.0.0.66", "10.0.0.67"]


def test_a_pod_leaving_revokes_first_and_drops_its_sets_last() -> None:
    shop = Shop()
    before = program(shop.intents(), "n3")
    gone = [
        *shop.intents(),
        *(withdrawn(p) for p in shop.billing),
        shop.billing_service.model_copy(update={"backends": ()}),
    ]
    after = program(gone, "n3")

    ops = plan(before, after)

    assert kinds(ops) == ["RemoveAllow", "RemoveVip", "RemoveLocalRoute", "RemoveNetwork"]
    assert isinstance(ops[0], RemoveAllow)
    assert ops[1] == RemoveVip("10.254.0.30")
    assert ops[2] == RemoveLocalRoute(LocalRoute(ip="10.0.0.130", ifname="knmb1"))
    assert ops[3] == RemoveNetwork("shop/billing")


def test_member_changes_are_incremental() -> None:
    shop = Shop()
    extra = interface("f3", node="n4", network="shop/frontend", ip="10.0.0.4")
    before = program(shop.intents(), "n2")
    after = program([*shop.intents(), extra], "n2")

    assert plan(before, after) == [
        UpdateNetwork(network="shop/frontend", added=("10.0.0.4",), removed=())
    ]


def test_a_vip_that_disappears_is_removed_with_its_allows() -> None:
    shop = Shop()
    before = program(shop.intents(), "n1")
    after = program([*shop.intents(), shop.policy.model_copy(update={"to_network": "x"})], "n1")

    ops = plan(before, after)

    assert kinds(ops) == ["RemoveAllow", "RemoveVip"]
    assert ops[1] == RemoveVip("10.254.0.10")
    assert isinstance(ops[0], RemoveAllow)
    assert ops[0].allow.declared


def test_overlay_routes_go_to_remote_blocks_only() -> None:
    desired = program(Shop().intents(), "n1")
    model = DesiredModel()
    for event in Shop().intents():
        model.apply(event)
    table = compile_overlay(model)

    ops = plan(desired, desired, overlay_after=table)

    # n1's own block gets none. (Routes are ordered as text: the order only needs to
    # be stable.)
    assert ops == [
        AddOverlayRoute(OverlayRoute(block="10.0.0.128/26", node="n3", via="192.168.0.3")),
        AddOverlayRoute(OverlayRoute(block="10.0.0.64/26", node="n2", via="192.168.0.2")),
    ]


def test_an_overlay_route_follows_its_node_and_needs_an_address() -> None:
    desired = program(Shop().intents(), "n1")
    before = overlay(
        OverlayNode(name="n2", address="192.168.0.2", blocks=("10.0.0.64/26",)),
        OverlayNode(name="n3", address="192.168.0.3", blocks=("10.0.0.128/26",)),
    )
    after = overlay(
        OverlayNode(name="n2", address="192.168.0.22", blocks=("10.0.0.64/26",)),
        OverlayNode(name="n3", address=None, blocks=("10.0.0.128/26",)),
    )

    ops = plan(desired, desired, overlay_before=before, overlay_after=after)

    assert ops == [
        RemoveOverlayRoute(OverlayRoute(block="10.0.0.128/26", node="n3", via="192.168.0.3")),
        RemoveOverlayRoute(OverlayRoute(block="10.0.0.64/26", node="n2", via="192.168.0.2")),
        AddOverlayRoute(OverlayRoute(block="10.0.0.64/26", node="n2", via="192.168.0.22")),
    ]


def test_a_new_gateway_is_set_again() -> None:
    desired = program(Shop().intents(), "n1")
    moved = desired.model_copy(update={"gateway": "169.254.9.9"})

    assert plan(desired, moved) == [SetGateway("169.254.9.9")]


def test_allows_are_granted_after_the_vips_they_name() -> None:
    shop = Shop()
    events: list[Event] = [
        *shop.frontend,
        NodeDeclared(name="n1"),
        BlockDeclared(cidr="10.0.0.0/26", node="n1"),
    ]
    before = program(events, "n1")
    after = program(shop.intents(), "n1")

    ops = plan(before, after)

    assert kinds(ops) == ["SetVip", "SetVip", "AddAllow", "AddAllow"]
    assert all(isinstance(op, AddAllow) for op in ops[2:])
