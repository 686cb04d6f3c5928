"""One node's vrouter program as nftables content, and the commands between two of them.

Pure: `desired_tables` turns a program into plain sets and maps, `changes` turns two of
those into the nftables JSON commands that go from one to the other, and `full` into
the commands that build the table from nothing. Everything knm owns lives in one table,
`ip knm`; nothing else on the node is named or touched.

Per packet the cost does not grow with the cluster: a pod's network is one map lookup on
its address; a connection's first packet to a VIP one verdict-map lookup of (network,
VIP, protocol, port), the network's route, which exists only where the policy allows
it; then the next of the VIP's slots in turn and one lookup of (VIP, slot) in a shared
map. Nothing exists per service but map elements: a chain per service would
cost the kernel a walk over all of them on every change, and an anonymous map per
service a quadratic search for names at 10,000 services.

A VIP costs one element per allowed network and port (its routes) and one per backend
(its slots), and the keys are short, because libnftables and the kernel spend on each
element in proportion to its key's parts: at 10,000 services that is what a full build
costs. A route names the chain that spreads over the VIP's slots, and that chain carries
what routes share: the slot count, where the port's slots start, and the target port
when all the port's backends listen on one (else a port per slot, in `backend_port`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from knm.core.events.vrouter import Allow, VipMap, VrouterConfigured

TABLE = "knm"
FAMILY = "ip"
VXLAN_IFNAME = "knm-vxlan"
# Host-side pod veths are "knm" + 11 hex digits; the overlay device also starts "knm".
POD_IFNAMES = "knm*"
# On a connection: its opening packet matched an allowed (network, VIP, port).
CT_ALLOWED = 0x1
# Network numbers are marks from 1 to this (0 means unmarked).
MARK_SPACE = 0x7FFFFFFF

Json = dict[str, Any]
VipKey = tuple[str, str, int]  # (vip, protocol, port)
RouteKey = tuple[int, str, str, int]  # (network number, vip, protocol, port)
SlotKey = tuple[str, int]  # (vip, slot)
SLOT_KEY = ["ipv4_addr", "mark"]
_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
_DPORT = {"payload": {"protocol": "th", "field": "dport"}}
_L4PROTO = {"meta": {"key": "l4proto"}}
_MARK = {"meta": {"key": "mark"}}


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
    # (network number, VIP, protocol, port) -> the spread chain that picks the backend:
    # a network reaches a VIP's port only through a route of its own.
    routes: Mapping[RouteKey, str] = field(default_factory=dict)
    # (VIP, slot) -> a backend's address; and its port, where the route's chain reads
    # the port per slot.
    slots: Mapping[SlotKey, str] = field(default_factory=dict)
    slot_ports: Mapping[SlotKey, int] = field(default_factory=dict)


class VipLayout(NamedTuple):
    """One VIP's spread chain per port and its slots (see `vip_layout`); a tuple, cheap
    to make 10,000 of."""

    vip: str
    routes: dict[VipKey, str]
    slots: dict[SlotKey, str]
    slot_ports: dict[SlotKey, int]


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
    routes: dict[RouteKey, str] = {}
    slots: dict[SlotKey, str] = {}
    slot_ports: dict[SlotKey, int] = {}
    layouts = {vip_map.vip: vip_layout(vip_map) for vip_map in config.services}
    allows: dict[str, list[Allow]] = {}
    for allow in config.allows:
        allows.setdefault(allow.vip, []).append(allow)
    for address, layout in layouts.items():
        vip = vip_tables(layout, allows=allows.get(address, ()), numbers=numbers)
        routes.update(vip.routes)
        slots.update(vip.slots)
        slot_ports.update(vip.slot_ports)
    return Tables(
        gateway=config.gateway,
        pod_network={i.ip: numbers[i.network] for i in config.interfaces},
        pod_sources=frozenset((i.ifname, i.ip) for i in config.interfaces),
        members=frozenset(
            (numbers[network.name], member)
            for network in config.networks
            for member in network.members
        ),
        routes=routes,
        slots=slots,
        slot_ports=slot_ports,
    )


def vip_layout(vip_map: VipMap) -> VipLayout:
    """Per port of the VIP, its backends (address, target port) in a fixed order, laid
    out in the VIP's slots. Ports with the same backends share their slots (the usual
    case: one set of pods serves every port of a service); a port no backend maps gets
    no route rather than an empty hash."""
    vip = vip_map.vip
    routes: dict[VipKey, str] = {}
    slots: dict[SlotKey, str] = {}
    slot_ports: dict[SlotKey, int] = {}
    starts: dict[tuple[Any, ...], int] = {}
    specs = vip_map.ports
    ports = (
        [(specs[0].protocol.lower(), specs[0].port)]
        if len(specs) == 1
        else sorted({(s.protocol.lower(), s.port) for s in specs})
    )
    # Written for speed: a full build lays out every VIP of the node (10,000 and more).
    backends = vip_map.backends
    for protocol, port in ports:
        chosen: list[tuple[str, int]] = []
        targets: set[int] = set()
        for backend in backends:
            for mapped, proto, target in backend.target_ports:
                if mapped == port and (proto == protocol or proto.lower() == protocol):
                    chosen.append((backend.ip, target))
                    targets.add(target)
        if not chosen:
            continue
        chosen.sort()
        shared = targets.pop() if len(targets) == 1 else None
        # Slots hold addresses, and ports too when the backends' ports differ.
        content = tuple([a for a, _ in chosen]) if shared is not None else tuple(chosen)
        start = starts.get(content)
        if start is None:
            start = starts[content] = len(slots)
            for index, (address, target) in enumerate(chosen, start):
                slots[(vip, index)] = address
                if shared is None:
                    slot_ports[(vip, index)] = target
        routes[(vip, protocol, port)] = (
            f"spread_{len(chosen)}_{start}_{'ports' if shared is None else shared}"
        )
    return VipLayout(vip, routes, slots, slot_ports)


class VipTables(NamedTuple):
    routes: dict[RouteKey, str]
    slots: dict[SlotKey, str]
    slot_ports: dict[SlotKey, int]


def vip_tables(
    layout: VipLayout, *, allows: Iterable[Allow], numbers: Mapping[str, int]
) -> VipTables:
    """A VIP's part of the table: a route per network allowed in and port that some
    backend serves, and the slots those routes hash into (no route, no slots: nothing
    on this node may reach them)."""
    routes: dict[RouteKey, str] = {}
    for allow in allows:
        number = numbers[allow.from_network]
        for spec in allow.ports:
            key = (layout.vip, spec.protocol.lower(), spec.port)
            chain = layout.routes.get(key)
            if chain is not None:
                routes[(number, *key)] = chain
    if not routes:
        return VipTables({}, {}, {})
    chains = set(routes.values())
    if len(chains) == len(set(layout.routes.values())):
        return VipTables(routes, layout.slots, layout.slot_ports)
    # Some port's own slots are reached by no route.
    used: set[int] = set()
    for chain in chains:
        count, start, _ = parse_spread_chain(chain)
        used.update(range(start, start + count))
    return VipTables(
        routes,
        {key: a for key, a in layout.slots.items() if key[1] in used},
        {key: p for key, p in layout.slot_ports.items() if key[1] in used},
    )


def spread_chain(count: int, *, start: int = 0, port: int | None = None) -> str:
    """The chain that hashes a flow into `count` slots from `start` and translates it:
    to `port`, or (backends on different ports) to the slot's own."""
    return f"spread_{count}_{start}_{'ports' if port is None else port}"


def parse_spread_chain(chain: str) -> tuple[int, int, int | None]:
    count, start, port = chain.removeprefix("spread_").split("_")
    return int(count), int(start), None if port == "ports" else int(port)


# ---- commands -------------------------------------------------------------------------


def full(tables: Tables, *, room: Mapping[str, int] | None = None) -> list[Json]:
    """Build the table from nothing, replacing whatever it held, as one transaction (the
    big maps declared with `room`, by default `sizes(tables)`)."""
    return [
        *start(sizes(tables) if room is None else room),
        *filling(tables, chains=chains_of(tables)),
        *hooks(gateway=tables.gateway),
    ]


def start(room: Mapping[str, int]) -> list[Json]:
    """The first part of a build: the table made again (whatever it held goes), its sets
    and maps declared, and the chains no hook leads to yet."""
    return [
        {"add": {"table": _table()}},
        {"delete": {"table": _table()}},
        {"add": {"table": _table()}},
        *_declarations(room),
        *_inner_chains(),
    ]


def filling(tables: Tables, *, chains: Iterable[str]) -> list[Json]:
    """The elements of `tables` (all of the table or a part of it) and the spread `chains`
    they need that are not made yet, in an order the kernel takes: a route's chain and
    slots before the route."""
    commands: list[Json] = []
    commands += _elements("add", "pod_network", tables.pod_network.items(), is_map=True)
    commands += _elements("add", "pod_sources", tables.pod_sources)
    commands += _elements("add", "members", tables.members)
    for chain in sorted(chains):
        commands += _spread(chain)
    commands += _slot_commands("add", tables.slots, tables.slot_ports)
    commands += _route_commands("add", tables.routes)
    return commands


def hooks(*, gateway: str) -> list[Json]:
    """The last part of a build: the chains hooked into the kernel's paths. Until they
    are there, nothing in the table sees a packet."""
    return _hooked_chains(gateway=gateway)


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
    before and after (a chain is shared by every route of its count, start and port)."""
    chains_before, chains_after = chains
    commands: list[Json] = []
    # A map element whose value changes is taken out and put back with the new one.
    commands += _route_commands("delete", _differing(before.routes, after.routes))
    commands += _slot_commands(
        "delete",
        _differing(before.slots, after.slots),
        _differing(before.slot_ports, after.slot_ports),
    )
    commands += _elements("delete", "members", before.members - after.members)
    commands += _elements("delete", "pod_sources", before.pod_sources - after.pod_sources)
    commands += _elements(
        "delete",
        "pod_network",
        sorted(_differing(before.pod_network, after.pod_network).items()),
        is_map=True,
    )
    commands += _elements(
        "add",
        "pod_network",
        sorted(_differing(after.pod_network, before.pod_network).items()),
        is_map=True,
    )
    commands += _elements("add", "pod_sources", after.pod_sources - before.pod_sources)
    commands += _elements("add", "members", after.members - before.members)
    for chain in sorted(chains_after - chains_before):
        commands += _spread(chain)
    commands += _slot_commands(
        "add",
        _differing(after.slots, before.slots),
        _differing(after.slot_ports, before.slot_ports),
    )
    commands += _route_commands("add", _differing(after.routes, before.routes))
    for chain in sorted(chains_before - chains_after):
        commands.append({"delete": {"chain": _chain(chain)}})
    return commands


def _differing(these: Mapping[Any, Any], those: Mapping[Any, Any]) -> dict[Any, Any]:
    return {k: v for k, v in these.items() if those.get(k) != v}


def _route_commands(verb: str, routes: Mapping[RouteKey, str]) -> list[Json]:
    return _elements(
        verb,
        "vips",
        [[{"concat": list(key)}, {"goto": {"target": chain}}] for key, chain in routes.items()],
        is_map=True,
    )


def _slot_commands(
    verb: str, slots: Mapping[SlotKey, str], ports: Mapping[SlotKey, int]
) -> list[Json]:
    return [
        *_elements(
            verb,
            "backend_addr",
            [[{"concat": [vip, slot]}, address] for (vip, slot), address in slots.items()],
            is_map=True,
        ),
        *_elements(
            verb,
            "backend_port",
            [[{"concat": [vip, slot]}, port] for (vip, slot), port in ports.items()],
            is_map=True,
        ),
    ]


def _table() -> Json:
    return {"family": FAMILY, "name": TABLE}


def _chain(name: str, **hook: Any) -> Json:
    return {"family": FAMILY, "table": TABLE, "name": name, **hook}


# The smallest room a sized map is declared with.
MIN_CAPACITY = 1024


def capacity(count: int) -> int:
    """Room for `count` elements to double: a power of two, at least MIN_CAPACITY."""
    room = MIN_CAPACITY
    while room < 2 * count:
        room *= 2
    return room


def sizes(tables: Tables) -> dict[str, int]:
    """The size each big map is declared with. A map with a size is a fixed hash table in
    the kernel, which fills with 40 % less kernel time than one that grows as it fills
    (measured at 50,000 elements); the size is also its limit, so a table whose content
    outgrows it is built again with more room (see `outgrown`)."""
    return {name: capacity(count) for name, count in counts(tables).items()}


def counts(tables: Tables) -> dict[str, int]:
    """How many elements each sized map holds."""
    return {
        "vips": len(tables.routes),
        "backend_addr": len(tables.slots),
        "backend_port": len(tables.slot_ports),
    }


def outgrown(declared: Mapping[str, int], *, counts: Mapping[str, int]) -> bool:
    return any(counts[name] > room for name, room in declared.items())


def _declarations(room: Mapping[str, int]) -> list[Json]:
    def declared(kind: str, name: str, key: str | list[str], **more: Any) -> Json:
        return {
            "add": {kind: {"family": FAMILY, "table": TABLE, "name": name, "type": key, **more}}
        }

    return [
        declared("map", "pod_network", "ipv4_addr", map="mark"),
        declared("set", "pod_sources", ["ifname", "ipv4_addr"]),
        declared("set", "members", ["mark", "ipv4_addr"]),
        declared(
            "map",
            "vips",
            ["mark", "ipv4_addr", "inet_proto", "inet_service"],
            map="verdict",
            size=room["vips"],
        ),
        declared("map", "backend_addr", SLOT_KEY, map="ipv4_addr", size=room["backend_addr"]),
        declared("map", "backend_port", SLOT_KEY, map="inet_service", size=room["backend_port"]),
    ]


_SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
_IIFNAME = {"meta": {"key": "iifname"}}
_OIFNAME = {"meta": {"key": "oifname"}}


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _concat(*parts: Json) -> Json:
    return {"concat": list(parts)}


def _rule(chain: str, *expr: Json) -> Json:
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": list(expr)}}}


def _inner_chains() -> list[Json]:
    """Pods' forwarded traffic (jumped to from `forward`): what the policy allows, else
    dropped. Policy is enforced where a connection starts; the overlay carries only what
    a vrouter let out."""
    return [
        {"add": {"chain": _chain("from_pod")}},
        _rule("from_pod", _match({"ct": {"key": "mark"}}, CT_ALLOWED), {"accept": None}),
        # NAT's slot counter took the mark; the sender's network number goes back in.
        _rule(
            "from_pod",
            {"mangle": {"key": _MARK, "value": {"map": {"key": _SADDR, "data": "@pod_network"}}}},
        ),
        _rule("from_pod", _match(_concat(_MARK, _DADDR), "@members"), {"accept": None}),
        _rule("from_pod", {"drop": None}),
    ]


def _hooked_chains(*, gateway: str) -> list[Json]:
    def base(name: str, kind: str, hook: str, priority: int, policy: str = "accept") -> Json:
        return {"add": {"chain": _chain(name, type=kind, hook=hook, prio=priority, policy=policy)}}

    established = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    return [
        # Before NAT, while the destination is still the VIP: which network sends.
        base("classify", "filter", "prerouting", -150),
        _rule("classify", _match(_IIFNAME, VXLAN_IFNAME), {"return": None}),
        _rule(
            "classify",
            _match(_IIFNAME, POD_IFNAMES),
            _match(_concat(_IIFNAME, _SADDR), "@pod_sources", "!="),
            {"drop": None},
        ),
        _rule(
            "classify",
            {"mangle": {"key": _MARK, "value": {"map": {"key": _SADDR, "data": "@pod_network"}}}},
        ),
        # A connection's first packet: the network's route to this VIP and port, if it
        # has one, leads to the spread chain that allows and translates it.
        base("dnat", "nat", "prerouting", -100),
        _rule("dnat", {"vmap": {"key": _concat(_MARK, _DADDR, _L4PROTO, _DPORT), "data": "@vips"}}),
        # A pod's new connection the node has no route for (a VIP its network has no
        # route to, left untranslated, among them) is dropped, as the policy drops what
        # it denies, not answered by the routing code. Where the node has a default
        # route, such a packet is routed and `forward` drops it.
        base("unrouted", "filter", "prerouting", 0),
        _rule(
            "unrouted",
            _match({"ct": {"key": "state"}}, "new", "in"),
            _match(_IIFNAME, POD_IFNAMES),
            _match({"fib": {"result": "oif", "flags": ["daddr"]}}, False),
            {"drop": None},
        ),
        base("forward", "filter", "forward", 0),
        _rule("forward", established, {"accept": None}),
        _rule("forward", _match(_IIFNAME, VXLAN_IFNAME), {"accept": None}),
        _rule("forward", _match(_IIFNAME, POD_IFNAMES), {"jump": {"target": "from_pod"}}),
        _rule("forward", _match(_OIFNAME, POD_IFNAMES), {"drop": None}),
        # A pod reaching its own VIP and sent to itself: the answer must come back
        # through the vrouter to be un-translated, so its source becomes the gateway.
        base("hairpin", "nat", "postrouting", 100),
        _rule(
            "hairpin",
            _match({"ct": {"key": "status"}}, "dnat", "in"),
            _match(_concat(_OIFNAME, _SADDR), "@pod_sources"),
            {"snat": {"family": "ip", "addr": gateway}},
        ),
    ]


def _spread(chain: str) -> list[Json]:
    """The chain for routes of one slot count, start and port: a route here is an
    allowed connection (marked so, for `forward`); a counter picks its slot (in the
    packet mark, free again once NAT is done: `from_pod` sets it back), the slot the
    backend's address, and the chain or the slot the port.

    Only a connection's first packet comes here: connection tracking keeps every later
    packet of the flow on the backend chosen, so the choice need not be a hash of the
    flow to be consistent. Taking slots in turn spreads evenly where a hash spreads at
    random: one client's 60 connections over 3 backends fall more than 2:1 uneven 7.5 %
    of the time with a uniform hash (multinomial), never in turn."""
    count, start, port = parse_spread_chain(chain)
    slot = {"concat": [_DADDR, _MARK]}
    turn: Json = {"mode": "inc", "mod": count}
    if start:
        turn["offset"] = start
    return [
        {"add": {"chain": _chain(chain)}},
        {
            "add": {
                "rule": {
                    "family": FAMILY,
                    "table": TABLE,
                    "chain": chain,
                    "expr": [
                        # What routes here is one of these already (the route's key);
                        # nftables translates a port only after a transport match.
                        {
                            "match": {
                                "op": "==",
                                "left": _L4PROTO,
                                "right": {"set": ["tcp", "udp", "sctp"]},
                            }
                        },
                        {"mangle": {"key": {"ct": {"key": "mark"}}, "value": CT_ALLOWED}},
                        {"mangle": {"key": _MARK, "value": {"numgen": turn}}},
                        {
                            "dnat": {
                                "family": "ip",
                                "addr": {"map": {"key": slot, "data": "@backend_addr"}},
                                "port": (
                                    {"map": {"key": slot, "data": "@backend_port"}}
                                    if port is None
                                    else port
                                ),
                            }
                        },
                    ],
                }
            }
        },
    ]


def chains_of(tables: Tables) -> set[str]:
    """The spread chains the table's routes lead to."""
    return set(tables.routes.values())


def _elements(verb: str, name: str, elements: Iterable[Any], *, is_map: bool = False) -> list[Json]:
    values = (
        [list(e) if isinstance(e, tuple) else e for e in elements]
        if is_map
        else [
            {"concat": list(element)} if isinstance(element, tuple) else element
            for element in sorted(elements)
        ]
    )
    if not values:
        return []
    return [{verb: {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": values}}}]
