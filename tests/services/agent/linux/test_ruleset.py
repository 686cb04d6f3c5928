"""The vrouter's nftables content and the commands between two programs."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from knm.core.events.intents import PolicyPortSpec
from knm.core.events.vrouter import (
    Allow,
    LocalInterface,
    NetworkMembers,
    VipBackend,
    VipMap,
    VrouterConfigured,
)
from services.agent.linux.ruleset import (
    MARK_SPACE,
    Tables,
    changes,
    desired_tables,
    full,
    network_numbers,
    parse_spread_chain,
    spread_chain,
    vip_layout,
)

TCP80 = PolicyPortSpec(port=80, protocol="TCP")
HTTPS = PolicyPortSpec(port=443, protocol="TCP")


def iface(n: int, network: str) -> LocalInterface:
    return LocalInterface(
        pod_uid=f"u{n}",
        namespace="shop",
        name=f"p{n}",
        ip=f"10.0.0.{n}",
        mac=f"0a:58:0a:00:00:{n:02x}",
        ifname=f"knm{n:011x}",
        network=network,
    )


def vip(
    address: str,
    *backends: int,
    target: int = 8080,
    mixed: bool = False,
    https: frozenset[int] = frozenset(),
) -> VipMap:
    """A VIP on TCP 80 (and UDP 53, which no backend maps, and TCP 443, which the
    backends in `https` serve); `mixed`: odd backends listen one port above the others."""
    return VipMap(
        namespace="shop",
        name=f"svc-{address}",
        vip=address,
        network="shop/service-x",
        ports=(TCP80, PolicyPortSpec(port=53, protocol="UDP"), HTTPS),
        backends=tuple(
            VipBackend(
                ip=f"10.0.0.{b}",
                node="node-1",
                target_ports=(
                    (80, "TCP", target + (b % 2 if mixed else 0)),
                    *([(443, "TCP", 8443)] if b in https else []),
                ),
            )
            for b in backends
        ),
    )


def program(
    *, pods: dict[int, str], vips: tuple[VipMap, ...] = (), allows: int = 0
) -> VrouterConfigured:
    networks: dict[str, list[str]] = {}
    for n, network in pods.items():
        networks.setdefault(network, []).append(f"10.0.0.{n}")
    return VrouterConfigured(
        node="node-1",
        revision="r",
        gateway="169.254.1.1",
        interfaces=tuple(iface(n, network) for n, network in sorted(pods.items())),
        networks=tuple(
            NetworkMembers(name=k, members=tuple(v)) for k, v in sorted(networks.items())
        ),
        services=vips,
        allows=tuple(
            Allow(from_network="shop/web", vip=v.vip, service=v.name, ports=(TCP80,), declared=True)
            for v in vips[:allows]
        ),
    )


def test_numbers_come_from_names_and_stay_with_their_networks() -> None:
    first = network_numbers(program(pods={1: "shop/a", 2: "shop/b"}), previous={})
    assert len(set(first.values())) == 2
    assert all(0 < number <= MARK_SPACE for number in first.values())
    # A restart (nothing previous) numbers the same networks the same way.
    assert network_numbers(program(pods={1: "shop/a", 2: "shop/b"}), previous={}) == first
    # A number in use is kept even when the name would hash elsewhere.
    kept = network_numbers(program(pods={1: "shop/a"}), previous={"shop/a": 7})
    assert kept == {"shop/a": 7}


def test_a_colliding_name_takes_the_next_free_number() -> None:
    config = program(pods={1: "shop/a", 2: "shop/b"})
    natural = network_numbers(config, previous={})
    taken_by_a = network_numbers(config, previous={"shop/a": natural["shop/b"]})
    assert taken_by_a["shop/a"] == natural["shop/b"]
    assert taken_by_a["shop/b"] == natural["shop/b"] % MARK_SPACE + 1


def test_tables_resolve_each_port_to_its_backends() -> None:
    config = program(pods={1: "shop/web", 2: "shop/db"}, vips=(vip("10.254.0.1", 2, 1),), allows=1)
    numbers = network_numbers(config, previous={})
    tables = desired_tables(config, numbers=numbers)

    web, db = numbers["shop/web"], numbers["shop/db"]
    assert tables.pod_network == {"10.0.0.1": web, "10.0.0.2": db}
    assert tables.members == {(web, "10.0.0.1"), (db, "10.0.0.2")}
    # The web network's route to the VIP; UDP 53 is a service port no backend maps: no
    # route rather than an empty hash.
    assert tables.routes == {(web, "10.254.0.1", "tcp", 80): spread_chain(2, port=8080)}
    assert tables.slots == {("10.254.0.1", 0): "10.0.0.1", ("10.254.0.1", 1): "10.0.0.2"}
    assert tables.slot_ports == {}


def test_ports_served_by_the_same_backends_share_their_slots() -> None:
    https = PolicyPortSpec(port=443, protocol="TCP")
    metrics = PolicyPortSpec(port=9100, protocol="TCP")

    def backend(n: int, *extra: tuple[int, str, int]) -> VipBackend:
        return VipBackend(
            ip=f"10.0.0.{n}",
            node="node-1",
            target_ports=((80, "TCP", 8080), (443, "TCP", 8443), *extra),
        )

    layout = vip_layout(
        VipMap(
            namespace="shop",
            name="web",
            vip="10.254.0.1",
            network="shop/service-web",
            ports=(TCP80, https, metrics),
            # Only the second backend serves metrics.
            backends=(backend(2), backend(1, (9100, "TCP", 9100))),
        )
    )

    assert layout.routes == {
        ("10.254.0.1", "tcp", 80): spread_chain(2, start=0, port=8080),
        ("10.254.0.1", "tcp", 443): spread_chain(2, start=0, port=8443),
        ("10.254.0.1", "tcp", 9100): spread_chain(1, start=2, port=9100),
    }
    assert layout.slots == {
        ("10.254.0.1", 0): "10.0.0.1",
        ("10.254.0.1", 1): "10.0.0.2",
        ("10.254.0.1", 2): "10.0.0.1",
    }
    assert layout.slot_ports == {}
    assert parse_spread_chain(spread_chain(1, start=2, port=9100)) == (1, 2, 9100)
    assert parse_spread_chain(spread_chain(3)) == (3, 0, None)


def test_a_vip_no_local_network_may_reach_costs_nothing() -> None:
    config = program(pods={1: "shop/web"}, vips=(vip("10.254.0.1", 1, 2),), allows=0)
    tables = desired_tables(config, numbers=network_numbers(config, previous={}))
    assert (tables.routes, tables.slots, tables.slot_ports) == ({}, {}, {})


def test_nothing_changed_no_commands() -> None:
    config = program(pods={1: "shop/web"}, vips=(vip("10.254.0.1", 1),), allows=1)
    tables = desired_tables(config, numbers=network_numbers(config, previous={}))
    assert changes(tables, tables) == []


def test_a_backend_change_rewrites_only_that_vips_chain() -> None:
    vips = (vip("10.254.0.1", 1, 2), vip("10.254.0.2", 1, 2))
    before = program(pods={1: "shop/web", 2: "shop/web"}, vips=vips, allows=2)
    after = program(
        pods={1: "shop/web", 2: "shop/web"}, vips=(vip("10.254.0.1", 1), vips[1]), allows=2
    )
    numbers = network_numbers(before, previous={})

    commands = changes(
        desired_tables(before, numbers=numbers), desired_tables(after, numbers=numbers)
    )

    # The VIP now has one backend: its entry moves to the one-slot chain, made for it,
    # and its second slot goes. Nothing of the other VIP is touched.
    touched = [
        (verb, kind, body.get("name"))
        for c in commands
        for verb, b in c.items()
        for kind, body in b.items()
    ]
    assert touched == [
        ("delete", "element", "vips"),
        ("delete", "element", "backend_addr"),
        ("add", "chain", spread_chain(1, port=8080)),
        ("add", "rule", None),
        ("add", "element", "vips"),
    ]
    keys = [
        json.dumps(e)
        for c in commands
        for b in c.values()
        for body in b.values()
        for e in body.get("elem", [])
    ]
    assert all("10.254.0.1" in key and "10.254.0.2" not in key for key in keys)


def test_a_swapped_backend_rewrites_only_its_slot() -> None:
    before = program(pods={1: "shop/web"}, vips=(vip("10.254.0.1", 1, 2),), allows=1)
    after = program(pods={1: "shop/web"}, vips=(vip("10.254.0.1", 1, 3),), allows=1)
    numbers = network_numbers(before, previous={})

    commands = changes(
        desired_tables(before, numbers=numbers), desired_tables(after, numbers=numbers)
    )

    assert [(verb, body["element"]["name"]) for c in commands for verb, body in c.items()] == [
        ("delete", "backend_addr"),
        ("add", "backend_addr"),
    ]
    (added,) = commands[1]["add"]["element"]["elem"]
    assert added == [{"concat": ["10.254.0.1", 1]}, "10.0.0.3"]


def test_backends_on_different_ports_take_a_port_per_slot() -> None:
    shared = vip("10.254.0.1", 1, 2)
    mixed = shared.model_copy(
        update={
            "backends": (
                shared.backends[0],
                shared.backends[1].model_copy(update={"target_ports": ((80, "TCP", 9090),)}),
            )
        }
    )
    before = program(pods={1: "shop/web"}, vips=(shared,), allows=1)
    after = program(pods={1: "shop/web"}, vips=(mixed,), allows=1)
    numbers = network_numbers(before, previous={})

    commands = changes(
        desired_tables(before, numbers=numbers), desired_tables(after, numbers=numbers)
    )

    elements = {
        (verb, body["element"]["name"]): body["element"]["elem"]
        for c in commands
        for verb, body in c.items()
        if "element" in body
    }
    # The addresses stay in their slots; the ports join them, and the route moves to
    # the chain that reads them.
    assert ("add", "backend_addr") not in elements
    assert elements[("add", "backend_port")] == [
        [{"concat": ["10.254.0.1", 0]}, 8080],
        [{"concat": ["10.254.0.1", 1]}, 9090],
    ]
    web = numbers["shop/web"]
    assert elements[("add", "vips")] == [
        [{"concat": [web, "10.254.0.1", "tcp", 80]}, {"goto": {"target": spread_chain(2)}}]
    ]


# ---- the commands, replayed on a model of the table ----------------------------------------


class Table:
    """Enough of nftables' semantics to replay knm's commands and compare outcomes."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {}
        self.chains: dict[str, list[str]] = {}

    def apply(self, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            ((verb, body),) = command.items()
            ((kind, spec),) = body.items()
            getattr(self, f"_{kind}")(verb, spec)

    def _table(self, verb: str, spec: dict[str, Any]) -> None:
        if verb == "delete":
            self.sets.clear()
            self.chains.clear()

    def _set(self, verb: str, spec: dict[str, Any]) -> None:
        assert verb == "add"
        self.sets.setdefault(spec["name"], set())

    _map = _set

    def _chain(self, verb: str, spec: dict[str, Any]) -> None:
        name = spec["name"]
        if verb == "add":
            assert name not in self.chains or "hook" in spec, f"chain {name} added twice"
            self.chains.setdefault(name, [])
        elif verb == "flush":
            self.chains[name].clear()
        else:
            del self.chains[name]

    def _rule(self, verb: str, spec: dict[str, Any]) -> None:
        self.chains[spec["chain"]].append(json.dumps(spec["expr"], sort_keys=True))

    def _element(self, verb: str, spec: dict[str, Any]) -> None:
        members = self.sets[spec["name"]]
        for element in spec["elem"]:
            key = json.dumps(element, sort_keys=True)
            if verb == "add":
                assert key not in members, f"{key} added to {spec['name']} twice"
                members.add(key)
            else:
                assert key in members, f"{key} deleted from {spec['name']} but absent"
                members.remove(key)

    def consistent(self) -> bool:
        """Every route leads to an existing spread chain whose slots (its count from its
        start) are all there, with a port per slot where the chain reads one; no spread
        chain, slot or port is left over."""
        entries = [json.loads(e) for e in self.sets.get("vips", set())]
        routes = {tuple(key["concat"]): verdict["goto"]["target"] for key, verdict in entries}
        slots, ported = set(), set()
        for (_, address, _, _), target in routes.items():
            count, start, port = parse_spread_chain(target)
            indexed = {(address, index) for index in range(start, start + count)}
            slots |= indexed
            if port is None:
                ported |= indexed

        def keys(name: str) -> set[tuple[Any, ...]]:
            return {tuple(json.loads(e)[0]["concat"]) for e in self.sets.get(name, set())}

        if (keys("backend_addr"), keys("backend_port")) != (slots, ported):
            return False
        spreads = {name for name in self.chains if name.startswith("spread_")}
        return set(routes.values()) == spreads


@st.composite
def programs(draw: st.DrawFn) -> VrouterConfigured:
    pods = draw(
        st.dictionaries(
            st.integers(1, 12), st.sampled_from(["shop/web", "shop/db", "shop/api"]), max_size=8
        )
    )
    addresses = draw(st.lists(st.integers(1, 4), unique=True, max_size=3))
    vips = tuple(
        vip(
            f"10.254.0.{a}",
            *(backends := draw(st.lists(st.integers(1, 12), unique=True, max_size=4))),
            target=draw(st.sampled_from([80, 8080])),
            mixed=draw(st.booleans()),
            # All of them (the slots shared with port 80), some, or none.
            https=draw(
                st.sampled_from([frozenset(), frozenset(backends), frozenset(backends[:1])])
            ),
        )
        for a in addresses
    )
    return program(pods=pods, vips=vips, allows=draw(st.integers(0, len(vips))))


@settings(max_examples=150, deadline=None)
@given(st.lists(programs(), min_size=1, max_size=5))
def test_changes_reach_the_same_table_as_building_it_afresh(
    sequence: list[VrouterConfigured],
) -> None:
    numbers: dict[str, int] = {}
    kernel = Table()
    before: Tables | None = None
    for config in sequence:
        numbers = network_numbers(config, previous=numbers)
        tables = desired_tables(config, numbers=numbers)
        kernel.apply(full(tables) if before is None else changes(before, tables))
        before = tables

        fresh = Table()
        fresh.apply(full(tables))
        assert kernel.sets == fresh.sets
        assert kernel.chains == fresh.chains
        assert kernel.consistent()
