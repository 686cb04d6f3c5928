"""The table's content kept per piece of the node's program, so that a changed piece
costs the commands of that piece and not a pass over the whole program.

Pure. Each piece (see `services.agent.program`) contributes content no other piece
does: the node's piece the pod addresses and sources, a network's piece its members, a
VIP's piece its routes (one per network allowed in, and port) and slots. So the
difference of a few pieces is the difference of the whole table. What pieces share is
kept here by count: the spread chains (one per slot count, start and port in use) and
the networks' numbers (one per name in use).

A whole build is one transaction (`rebuild`), or, where the kernel holds no table yet,
several (`stages`): the table is filled while the next stage is worked out, and hooked
into the kernel's paths last, so nothing sees it before it is whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from services.agent.linux.ruleset import (
    Json,
    RouteKey,
    SlotKey,
    Tables,
    capacity,
    chains_of,
    counts,
    element_changes,
    filling,
    full,
    hooks,
    number_networks,
    outgrown,
    start,
    vip_layout,
    vip_tables,
)
from services.agent.program import NODE, NodeProgram, Piece


class PieceTables:
    def __init__(self) -> None:
        self.gateway: str | None = None
        self.numbers: dict[str, int] = {}
        self._parts: dict[Piece, Tables] = {}
        self._uses: dict[Piece, frozenset[str]] = {}
        self._names: Counter[str] = Counter()
        # Per spread chain, the VIP ports routed to it.
        self._chains: Counter[str] = Counter()
        # The sizes the big maps were declared with, and what they hold.
        self._declared: dict[str, int] = {}
        self._counts: Counter[str] = Counter()

    @property
    def built(self) -> bool:
        return self.gateway is not None

    def rebuild(self, program: NodeProgram) -> list[Json]:
        """The commands that build the whole table from nothing for `program`, replacing
        whatever the kernel holds, in one transaction."""
        pieces = self._begin(program)
        whole = self._take({piece: _part(program, piece, self.numbers) for piece in pieces})
        return full(whole, room=self._declared)

    def stages(self, program: NodeProgram, *, per_stage: int = 2000) -> Iterator[list[Json]]:
        """The same table as `rebuild`'s, as one transaction per stage: declared, filled
        `per_stage` pieces at a time, then hooked. Each stage is worked out only when the
        one before it is taken, so the caller can apply one while this works out the next.
        For a kernel without the table: over a table in use, the stages would replace it
        with one that is not whole yet (`rebuild` replaces it at once)."""
        pieces = self._begin(program)
        yield start(self._declared)
        made: set[str] = set()
        for first in range(0, len(pieces), per_stage):
            parts = {
                piece: _part(program, piece, self.numbers)
                for piece in pieces[first : first + per_stage]
            }
            stage = self._take(parts)
            chains = chains_of(stage) - made
            made |= chains
            yield filling(stage, chains=chains)
        assert self.gateway is not None
        yield hooks(gateway=self.gateway)

    def _begin(self, program: NodeProgram) -> list[Piece]:
        """Start again from nothing for `program`: its networks numbered, its big maps'
        room decided; its pieces, whose parts are to be taken."""
        assert program.gateway is not None, "a program without its node's piece"
        pieces = list(program.pieces())
        uses = {piece: _uses(program, piece) for piece in pieces}
        names: set[str] = set().union(*uses.values())
        self.numbers = number_networks(names, previous=self.numbers)
        self.gateway = program.gateway
        self._parts = {}
        self._uses = uses
        self._names = Counter(name for used in uses.values() for name in used)
        self._chains = Counter()
        self._declared = room(program)
        self._counts = Counter()
        return pieces

    def _take(self, parts: dict[Piece, Tables]) -> Tables:
        """Pieces' parts into the table; what they hold together."""
        self._parts.update(parts)
        assert self.gateway is not None
        together = _merged(self.gateway, parts.values())
        # No two pieces hold the same route or slot: counted together, counted apart.
        self._chains.update(chain for part in parts.values() for chain in part.routes.values())
        self._counts.update(counts(together))
        return together

    def update(self, program: NodeProgram, changed: Iterable[Piece]) -> list[Json]:
        """The commands that take the table from what it holds to `program`, given the
        pieces that changed since (a piece absent from `program` was withdrawn)."""
        changed = sorted(set(changed))
        gateway = self.gateway
        if gateway is None or (NODE in changed and program.gateway != gateway):
            # The gateway is in the fixed rules: the table is built again.
            return self.rebuild(program)
        present = {piece for piece in changed if program.has(piece)}
        for piece in changed:
            used = _uses(program, piece) if piece in present else frozenset()
            self._names.subtract(self._uses.pop(piece, frozenset()))
            self._names.update(used)
            if used:
                self._uses[piece] = used
        self.numbers = number_networks(
            (name for name, count in self._names.items() if count > 0), previous=self.numbers
        )
        self._names = +self._names
        chains_before = set(self._chains)
        before: list[Tables] = []
        after: list[Tables] = []
        for piece in changed:
            old = self._parts.pop(piece, None)
            if old is not None:
                before.append(old)
                self._chains.subtract(old.routes.values())
                self._counts.subtract(counts(old))
            if piece in present:
                new = _part(program, piece, self.numbers)
                self._parts[piece] = new
                after.append(new)
                self._chains.update(new.routes.values())
                self._counts.update(counts(new))
        self._chains = +self._chains
        if outgrown(self._declared, counts=self._counts):
            # A map declared with a size holds no more: the table is built with more room.
            return self.rebuild(program)
        return element_changes(
            _merged(gateway, before),
            _merged(gateway, after),
            chains=(chains_before, set(self._chains)),
        )

    def forget(self) -> None:
        """The kernel's table is unknown (a refused transaction): build it again next."""
        self.gateway = None

    def tables(self) -> Tables:
        """The whole table's content."""
        assert self.gateway is not None
        return _merged(self.gateway, self._parts.values())


def room(program: NodeProgram) -> dict[str, int]:
    """The room each big map is declared with, from the program alone (a build in stages
    declares the maps before it works out their elements): at most a route per port an
    allow names, and a slot, or a slot's port, per port a backend maps, of every VIP
    something may reach."""
    routes = slots = 0
    for entry in program.vips.values():
        if entry.allows:
            routes += sum(len(allow.ports) for allow in entry.allows)
            slots += sum(len(backend.target_ports) for backend in entry.vip_map.backends)
    return {
        "vips": capacity(routes),
        "backend_addr": capacity(slots),
        "backend_port": capacity(slots),
    }


def _uses(program: NodeProgram, piece: Piece) -> frozenset[str]:
    """The networks a piece needs numbers of."""
    kind, name = piece
    if kind == "node":
        return frozenset(i.network for i in program.interfaces)
    if kind == "network":
        return frozenset((name,))
    return frozenset(a.from_network for a in program.vips[name].allows)


def _part(program: NodeProgram, piece: Piece, numbers: dict[str, int]) -> Tables:
    kind, name = piece
    if kind == "node":
        return Tables(
            gateway="",
            pod_network={i.ip: numbers[i.network] for i in program.interfaces},
            pod_sources=frozenset((i.ifname, i.ip) for i in program.interfaces),
        )
    if kind == "network":
        number = numbers[name]
        return Tables(gateway="", members=frozenset((number, m) for m in program.networks[name]))
    entry = program.vips[name]
    vip = vip_tables(vip_layout(entry.vip_map), allows=entry.allows, numbers=numbers)
    return Tables(gateway="", routes=vip.routes, slots=vip.slots, slot_ports=vip.slot_ports)


def _merged(gateway: str, parts: Iterable[Tables]) -> Tables:
    pod_network: dict[str, int] = {}
    pod_sources: set[tuple[str, str]] = set()
    members: set[tuple[int, str]] = set()
    routes: dict[RouteKey, str] = {}
    slots: dict[SlotKey, str] = {}
    slot_ports: dict[SlotKey, int] = {}
    for part in parts:
        pod_network.update(part.pod_network)
        pod_sources |= part.pod_sources
        members |= part.members
        routes.update(part.routes)
        slots.update(part.slots)
        slot_ports.update(part.slot_ports)
    return Tables(
        gateway=gateway,
        pod_network=pod_network,
        pod_sources=frozenset(pod_sources),
        members=frozenset(members),
        routes=routes,
        slots=slots,
        slot_ports=slot_ports,
    )
