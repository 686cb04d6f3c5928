"""One node's vrouter program as nftables content, and the commands between two of them.

Pure: `desired_tables` turns a program into plain sets and maps, `changes` turns two of
those into the nftables JSON commands that go from one to the other, and `full` into
the commands that build the table from nothing. Everything knm owns lives in one table,
`ip knm`; nothing else on the node is named or touched.

Per packet the cost does not grow with the cluster: a pod's network is one map lookup on
its address, an allowed VIP one set lookup, the VIP one verdict-map lookup, and the
backend a hash of the flow into a slot and one lookup of (VIP, port, slot) in two shared
maps (address, port). Nothing exists per service but map elements: a chain per service
would cost the kernel a walk over all of them on every change, and an anonymous map per
service a quadratic search for names at 10,000 services.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from knm.core.events.vrouter import VipMap, VrouterConfigured

TABLE = "knm"
FAMILY = "ip"
VXLAN_IFNAME = "knm-vxlan"
# Host-side pod veths are "knm" + 11 hex digits; the overlay device also starts "knm".
POD_IFNAMES = "knm*"
# On a connection: its opening packet matched an allowed (network, VIP, port).
CT_ALLOWED = 0x1
# Network numbers are marks from 1 to this (0 means unmarked).
MARK_SPACE = 0x7FFFFFFF
# Fixed, so that a restarted agent spreads new flows as the one before it did.
HASH_SEED = 0x6B6E6D

Json = dict[str, Any]
VipKey = tuple[str, str, int]  # (vip, protocol, port)
SLOT_KEY = ["ipv4_addr", "inet_proto", "inet_service", "mark"]
_SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
_SPORT = {"payload": {"protocol": "th", "field": "sport"}}
_DPORT = {"payload": {"protocol": "th", "field": "dport"}}
_L4PROTO = {"meta": {"key": "l4proto"}}
_MARK = {"meta": {"key": "mark"}}
Backends = tuple[tuple[str, int], ...]  # ((backend ip, target port), ...)


@dataclass(frozen=True, slots=True)
class Tables:
    """What the table holds besides its fixed chains."""

    gateway: str
    # Local pod address -> its network's number (the packet mark).
    pod_network: Mapping[str, int] = field(default_factory=dict)
    # (host-side interface, address) of every local pod: spoofing and hairpin checks.
    pod_sources: frozenset[tuple[str, str]] = frozenset()
    # (network number, address) of every member of the networks local pods send from.
    members: frozenset[tuple[int, str]] = frozenset()
    # (network number, VIP, protocol, port) a network may open connections to.
    allows: frozenset[tuple[int, str, str, int]] = frozenset()
    # (VIP, protocol, port) -> its backends, in a fixed order.
    vips: Mapping[VipKey, Backends] = field(default_factory=dict)


def network_numbers(config: VrouterConfigured, *, previous: Mapping[str, int]) -> dict[str, int]:
    """A number per network the program names (the packet mark of its pods' traffic).

    A network keeps the number it had, so an update never renumbers what packets in
    flight carry; a new one takes a number derived from its name, so that a restarted
    agent numbers as the one before it did and rebuilds the very same table.
    """
    names = {i.network for i in config.interfaces} | {n.name for n in config.networks}
    names |= {a.from_network for a in config.allows}
    return number_networks(names, previous=previous)


def number_networks(names: Iterable[str], *, previous: Mapping[str, int]) -> dict[str, int]:
    """`previous`'s numbers of these names, and a fresh one for each new name."""
    wanted = set(names)
    numbers = {name: number for name, number in previous.items() if name in wanted}
    taken = set(numbers.values())
    for name in sorted(wanted - numbers.keys()):
        candidate = zlib.crc32(name.encode()) % MARK_SPACE + 1
        while candidate in taken:
            candidate = candidate % MARK_SPACE + 1
        numbers[name] = candidate
        taken.add(candidate)
    return numbers


def desired_tables(config: VrouterConfigured, *, numbers: Mapping[str, int]) -> Tables:
    vips: dict[VipKey, Backends] = {}
    for vip_map in config.services:
        vips.update(vip_slots(vip_map))
    return Tables(
        gateway=config.gateway,
        pod_network={i.ip: numbers[i.network] for i in config.interfaces},
        pod_sources=frozenset((i.ifname, i.ip) for i in config.interfaces),
        members=frozenset(
            (numbers[network.name], member)
            for network in config.networks
            for member in network.members
        ),
        allows=frozenset(
            (numbers[allow.from_network], allow.vip, spec.protocol.lower(), spec.port)
            for allow in config.allows
            for spec in allow.ports
        ),
        vips=vips,
    )


def vip_slots(vip_map: VipMap) -> dict[VipKey, Backends]:
    """Per port of the VIP, its backends (address, target port) in a fixed order."""
    vips: dict[VipKey, Backends] = {}
    for spec in vip_map.ports:
        protocol = spec.protocol.lower()
        backends = sorted(
            (backend.ip, target)
            for backend in vip_map.backends
            for port, proto, target in backend.target_ports
            if port == spec.port and proto.lower() == protocol
        )
        if backends:
            vips[(vip_map.vip, protocol, spec.port)] = tuple(backends)
    return vips


def spread_chain(count: int, *, per_slot_ports: bool = False) -> str:
    """The chain that hashes a flow into one of `count` slots and translates it: to the
    VIP's one target port, or (backends on different ports) to the slot's."""
    return f"spread_{count}_ports" if per_slot_ports else f"spread_{count}"


def parse_spread_chain(chain: str) -> tuple[int, bool]:
    count, _, kind = chain.removeprefix("spread_").partition("_")
    return int(count), kind == "ports"


# ---- commands -------------------------------------------------------------------------


def full(tables: Tables) -> list[Json]:
    """Build the table from nothing, replacing whatever it held, as one transaction."""
    commands: list[Json] = [
        {"add": {"table": _table()}},
        {"delete": {"table": _table()}},
        {"add": {"table": _table()}},
    ]
    commands += _declarations()
    commands += _fixed_chains(gateway=tables.gateway)
    commands += changes(Tables(gateway=tables.gateway), tables)
    return commands


def changes(before: Tables, after: Tables) -> list[Json]:
    """From `before` to `after`: removals first (nothing grants more than either), then
    additions; a VIP whose backends changed has only its changed slots rewritten."""
    if before.gateway != after.gateway:
        return full(after)
    return element_changes(before, after, chains=(chains_of(before), chains_of(after)))


def element_changes(
    before: Tables, after: Tables, *, chains: tuple[AbstractSet[str], AbstractSet[str]]
) -> list[Json]:
    """`changes` for a part of the table: `before` and `after` may hold only some
    pieces' content, and `chains` says which spread chains the whole table needs
    before and after (a chain is shared by every VIP of its kind and backend count)."""
    chains_before, chains_after = chains
    commands: list[Json] = []
    # A VIP is an entry in `vips` (to its spread chain), a slot per backend in the
    # backend maps and, when all its backends listen on one port, that port in
    # `vip_port`; only what differs is touched.
    old = _vip_elements({k: v for k, v in before.vips.items() if after.vips.get(k) != v})
    new = _vip_elements({k: v for k, v in after.vips.items() if before.vips.get(k) != v})
    gone = [_differing(o, n) for o, n in zip(old, new, strict=True)]
    came = [_differing(n, o) for o, n in zip(old, new, strict=True)]
    commands += _elements("delete", "allows", before.allows - after.allows)
    commands += _vip_commands("delete", gone)
    commands += _elements("delete", "members", before.members - after.members)
    commands += _elements("delete", "pod_sources", before.pod_sources - after.pod_sources)
    commands += _elements(
        "delete",
        "pod_network",
        [
            [ip, number]
            for ip, number in sorted(before.pod_network.items())
            if after.pod_network.get(ip) != number
        ],
        is_map=True,
    )
    commands += _elements(
        "add",
        "pod_network",
        [
            [ip, number]
            for ip, number in sorted(after.pod_network.items())
            if before.pod_network.get(ip) != number
        ],
        is_map=True,
    )
    commands += _elements("add", "pod_sources", after.pod_sources - before.pod_sources)
    commands += _elements("add", "members", after.members - before.members)
    for chain in sorted(chains_after - chains_before):
        commands += _spread(chain)
    commands += _vip_commands("add", came)
    for chain in sorted(chains_before - chains_after):
        commands.append({"delete": {"chain": _chain(chain)}})
    commands += _elements("add", "allows", after.allows - before.allows)
    return commands


Slot = tuple[str, str, int, int]  # (vip, protocol, port, index)


def _vip_elements(vips: Mapping[VipKey, Backends]) -> list[dict[Any, Any]]:
    """The VIPs' elements, map by map: their routes (the spread chains), their backends'
    addresses and ports by slot, and their one port where the backends share one."""
    routes: dict[VipKey, str] = {}
    addresses: dict[Slot, str] = {}
    ports: dict[Slot, int] = {}
    shared: dict[VipKey, int] = {}
    for key, backends in vips.items():
        targets = {port for _, port in backends}
        routes[key] = spread_chain(len(backends), per_slot_ports=len(targets) > 1)
        for index, (address, port) in enumerate(backends):
            addresses[(*key, index)] = address
            if len(targets) > 1:
                ports[(*key, index)] = port
        if len(targets) == 1:
            (shared[key],) = targets
    return [routes, addresses, ports, shared]


def _differing(these: dict[Any, Any], those: dict[Any, Any]) -> dict[Any, Any]:
    return {k: v for k, v in these.items() if those.get(k) != v}


def _vip_commands(verb: str, elements: list[dict[Any, Any]]) -> list[Json]:
    """Routes go last when added and first when deleted: a route never leads to a slot
    that is not there."""
    routes, addresses, ports, shared = elements

    def keyed(mapping: dict[Any, Any], value: Any = lambda v: v) -> list[Any]:
        return [[{"concat": list(key)}, value(v)] for key, v in sorted(mapping.items())]

    commands = [
        *_elements(verb, "backend_addr", keyed(addresses), is_map=True),
        *_elements(verb, "backend_port", keyed(ports), is_map=True),
        *_elements(verb, "vip_port", keyed(shared), is_map=True),
    ]
    route = _elements(
        verb, "vips", keyed(routes, lambda chain: {"goto": {"target": chain}}), is_map=True
    )
    return [*route, *commands] if verb == "delete" else [*commands, *route]


def _table() -> Json:
    return {"family": FAMILY, "name": TABLE}


def _chain(name: str, **hook: Any) -> Json:
    return {"family": FAMILY, "table": TABLE, "name": name, **hook}


def _declarations() -> list[Json]:
    def declared(kind: str, name: str, key: str | list[str], **more: Any) -> Json:
        return {
            "add": {kind: {"family": FAMILY, "table": TABLE, "name": name, "type": key, **more}}
        }

    return [
        declared("map", "pod_network", "ipv4_addr", map="mark"),
        declared("set", "pod_sources", ["ifname", "ipv4_addr"]),
        declared("set", "members", ["mark", "ipv4_addr"]),
        declared("set", "allows", ["mark", "ipv4_addr", "inet_proto", "inet_service"]),
        declared("map", "vips", ["ipv4_addr", "inet_proto", "inet_service"], map="verdict"),
        declared("map", "backend_addr", SLOT_KEY, map="ipv4_addr"),
        declared("map", "backend_port", SLOT_KEY, map="inet_service"),
        declared(
            "map", "vip_port", ["ipv4_addr", "inet_proto", "inet_service"], map="inet_service"
        ),
    ]


def _fixed_chains(*, gateway: str) -> list[Json]:
    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    daddr = {"payload": {"protocol": "ip", "field": "daddr"}}
    l4proto = {"meta": {"key": "l4proto"}}
    dport = {"payload": {"protocol": "th", "field": "dport"}}
    mark = {"meta": {"key": "mark"}}
    iifname = {"meta": {"key": "iifname"}}
    oifname = {"meta": {"key": "oifname"}}

    def match(left: Json, right: Any, op: str = "==") -> Json:
        return {"match": {"op": op, "left": left, "right": right}}

    def concat(*parts: Json) -> Json:
        return {"concat": list(parts)}

    def rule(chain: str, *expr: Json) -> Json:
        return {
            "add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": list(expr)}}
        }

    def base(name: str, kind: str, hook: str, priority: int, policy: str = "accept") -> Json:
        return {"add": {"chain": _chain(name, type=kind, hook=hook, prio=priority, policy=policy)}}

    established = match({"ct": {"key": "state"}}, ["established", "related"], "in")
    return [
        # Before NAT, while the destination is still the VIP: which network sends, and
        # whether that network may open this connection to this VIP and port.
        base("classify", "filter", "prerouting", -150),
        rule("classify", match(iifname, VXLAN_IFNAME), {"return": None}),
        rule(
            "classify",
            match(iifname, POD_IFNAMES),
            match(concat(iifname, saddr), "@pod_sources", "!="),
            {"drop": None},
        ),
        rule(
            "classify",
            {"mangle": {"key": mark, "value": {"map": {"key": saddr, "data": "@pod_network"}}}},
        ),
        rule(
            "classify",
            match({"ct": {"key": "state"}}, "new", "in"),
            match(concat(mark, daddr, l4proto, dport), "@allows"),
            {"mangle": {"key": {"ct": {"key": "mark"}}, "value": CT_ALLOWED}},
        ),
        base("dnat", "nat", "prerouting", -100),
        rule("dnat", {"vmap": {"key": concat(daddr, l4proto, dport), "data": "@vips"}}),
        # Pods' traffic: what the policy allows, else dropped. Policy is enforced where a
        # connection starts; the overlay carries only what a vrouter let out.
        {"add": {"chain": _chain("from_pod")}},
        base("forward", "filter", "forward", 0),
        rule("forward", established, {"accept": None}),
        rule("forward", match(iifname, VXLAN_IFNAME), {"accept": None}),
        rule("forward", match(iifname, POD_IFNAMES), {"jump": {"target": "from_pod"}}),
        rule("forward", match(oifname, POD_IFNAMES), {"drop": None}),
        rule("from_pod", match({"ct": {"key": "mark"}}, CT_ALLOWED), {"accept": None}),
        # NAT's slot hash took the mark; the sender's network number goes back in.
        rule(
            "from_pod",
            {"mangle": {"key": mark, "value": {"map": {"key": saddr, "data": "@pod_network"}}}},
        ),
        rule("from_pod", match(concat(mark, daddr), "@members"), {"accept": None}),
        rule("from_pod", {"drop": None}),
        # A pod reaching its own VIP and hashed to itself: the answer must come back
        # through the vrouter to be un-translated, so its source becomes the gateway.
        base("hairpin", "nat", "postrouting", 100),
        rule(
            "hairpin",
            match({"ct": {"key": "status"}}, "dnat", "in"),
            match(concat(oifname, saddr), "@pod_sources"),
            {"snat": {"family": "ip", "addr": gateway}},
        ),
    ]


def _spread(chain: str) -> list[Json]:
    """The chain for VIPs of one backend count: the flow's hash picks a slot (in the
    packet mark, free again once NAT is done: `from_pod` sets it back), the slot the
    backend's address, and the slot or the VIP the port."""
    count, per_slot_ports = parse_spread_chain(chain)
    flow = {"concat": [_SADDR, _SPORT]}
    slot = {"concat": [_DADDR, _L4PROTO, _DPORT, _MARK]}
    vip = {"concat": [_DADDR, _L4PROTO, _DPORT]}
    port = (
        {"map": {"key": slot, "data": "@backend_port"}}
        if per_slot_ports
        else {"map": {"key": vip, "data": "@vip_port"}}
    )
    return [
        {"add": {"chain": _chain(chain)}},
        {
            "add": {
                "rule": {
                    "family": FAMILY,
                    "table": TABLE,
                    "chain": chain,
                    "expr": [
                        {
                            "mangle": {
                                "key": _MARK,
                                "value": {"jhash": {"mod": count, "seed": HASH_SEED, "expr": flow}},
                            }
                        },
                        {
                            "dnat": {
                                "family": "ip",
                                "addr": {"map": {"key": slot, "data": "@backend_addr"}},
                                "port": port,
                            }
                        },
                    ],
                }
            }
        },
    ]


def chains_of(tables: Tables) -> set[str]:
    """The spread chains the table's VIPs are routed to."""
    return {route_of(backends) for backends in tables.vips.values()}


def route_of(backends: Backends) -> str:
    return spread_chain(len(backends), per_slot_ports=len({p for _, p in backends}) > 1)


def _elements(verb: str, name: str, elements: Iterable[Any], *, is_map: bool = False) -> list[Json]:
    values = [
        element
        if is_map
        else ({"concat": list(element)} if isinstance(element, tuple) else element)
        for element in (sorted(elements) if not is_map else elements)
    ]
    if not values:
        return []
    return [{verb: {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": values}}}]
