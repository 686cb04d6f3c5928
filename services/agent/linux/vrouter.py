"""The node's vrouter in the kernel: nftables for policy and VIPs, VXLAN for the overlay.

The first program after a start builds knm's table. Over a table in use (a restarted
agent) it is one transaction that replaces it; the kernel's connection tracking keeps
established connections (and their address translations) across it, so a restarted
agent does not disturb them. Where the kernel holds no table yet (a node's first
program), the build runs in stages, each applied by a second thread while the next is
worked out, and hooked into the kernel's paths last. Every later program applies only
the difference of the pieces that changed. Overlay routes are reconciled against what
the kernel holds, and only routes carrying knm's protocol number on knm's own device
are ever removed.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import json
import logging
import queue
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import nftables
import pydantic_core
from pyroute2 import IPRoute
from pyroute2.nftables.main import NFTables

from knm.core.events.vrouter import OverlayConfigured
from services.agent.linux.incremental import PieceTables
from services.agent.linux.namespaces import NamespaceThread
from services.agent.linux.ruleset import TABLE, VXLAN_IFNAME
from services.agent.plan import overlay_routes
from services.agent.program import NodeProgram, Piece

log = logging.getLogger("knm.agent.vrouter")

# Marks the routes knm made (rtnetlink protocol numbers up to 255; values above the
# kernel's and routing daemons' well-known ones are free for local use).
RTPROT_KNM = 97
VNI = 4242
VXLAN_PORT = 4789
RTNH_F_ONLINK = 4
# A forwarding entry of the VXLAN device itself (`bridge fdb ... self`).
NTF_SELF = 2
NUD_PERMANENT = 0x80
AF_INET = 2
# nftables' family of `ip` tables.
NFPROTO_IPV4 = 2


class NftablesError(RuntimeError):
    pass


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """A full build makes a few hundred thousand small containers, none of them cyclic
    garbage; the collector's passes over the agent's heap meanwhile tripled its cost."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _document(commands: list[dict[str, Any]]) -> bytes:
    """Commands as libnftables' JSON input: compact, serialized by pydantic-core (a third
    of `json.dumps`'s time for 60,000 elements, measured)."""
    return pydantic_core.to_json(
        {"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}
    )


def vtep_mac(address: str) -> str:
    """The overlay device's MAC, derived from the node's underlay address: every node
    computes every other node's without asking it."""
    packed = ipaddress.IPv4Address(address).packed
    return "0e:4b:" + ":".join(f"{octet:02x}" for octet in packed)


@dataclass(frozen=True, slots=True)
class ProgramTiming:
    # Working out the table and the commands; then the kernel taking them.
    compute_ms: float
    nft_ms: float
    overlay_ms: float
    commands: int


class Vrouter:
    def __init__(self, *, node: str, netns: str | None, vxlan_mtu: int = 1450) -> None:
        self.node = node
        self._thread = NamespaceThread(netns, name=f"vrouter-{node}")
        self._vxlan_mtu = vxlan_mtu
        self._nft: nftables.Nftables | None = None
        self._tables = PieceTables()
        self._remotes: dict[str, str] | None = None  # remote address -> its MAC
        self._overlay_revision: str | None = None
        self.last = ProgramTiming(0.0, 0.0, 0.0, 0)

    # ---- the program --------------------------------------------------------------------

    def program(
        self, program: NodeProgram, changed: Collection[Piece] | None, overlay: OverlayConfigured
    ) -> None:
        """Converge to `program`; `changed` names the pieces that changed since the last
        call (None: any may have)."""
        self._thread.run(lambda: self._program(program, changed, overlay))

    def _program(
        self, program: NodeProgram, changed: Collection[Piece] | None, overlay: OverlayConfigured
    ) -> None:
        started = time.perf_counter()
        with _collection_paused():
            try:
                if changed is not None and self._tables.built:
                    computed, count = self._apply(self._tables.update(program, changed))
                elif self._table_held():
                    computed, count = self._apply(self._tables.rebuild(program))
                else:
                    computed, count = self._build_in_stages(program)
            except BaseException:
                # Whatever the kernel holds now, the next program starts from nothing.
                self._tables.forget()
                self._overlay_revision = None
                raise
        applied = time.perf_counter()
        if overlay.revision != self._overlay_revision:
            self._converge_overlay(overlay)
            self._overlay_revision = overlay.revision
        done = time.perf_counter()
        self.last = ProgramTiming(
            compute_ms=(computed - started) * 1000,
            nft_ms=(applied - computed) * 1000,
            overlay_ms=(done - applied) * 1000,
            commands=count,
        )

    def _context(self) -> nftables.Nftables:
        # Made on the namespace's thread: its netlink socket is the namespace's, whichever
        # thread uses it later.
        if self._nft is None:
            self._nft = nftables.Nftables()
            self._nft.set_json_output(True)
            self._nft.set_handle_output(False)
        return self._nft

    def _table_held(self) -> bool:
        # Asked of netlink directly: libnftables lists any table only after reading the
        # whole ruleset, a second with 60,000 elements in knm's.
        with NFTables(nfgen_family=NFPROTO_IPV4) as nft:
            return any(table.get_attr("NFTA_TABLE_NAME") == TABLE for table in nft.get_tables())

    def _apply(self, commands: list[dict[str, Any]]) -> tuple[float, int]:
        """The commands in one transaction (the kernel applies all of it or none); when
        they were worked out, and how many."""
        computed = time.perf_counter()
        if commands:
            rc, _, error = self._context().cmd(_document(commands))
            if rc != 0:
                self._refused(error)
        return computed, len(commands)

    def _build_in_stages(self, program: NodeProgram) -> tuple[float, int]:
        """The table built from nothing in stages, each applied by a second thread while
        this one works out the next (libnftables lets go of the interpreter while it and
        the kernel work: the two run on two cores). The time the last stage was worked
        out, and the commands in all."""
        nft = self._context()
        documents: queue.Queue[bytes | None] = queue.Queue()
        refused: list[bytes] = []

        def apply_in_turn() -> None:
            while (document := documents.get()) is not None:
                if refused:  # after a refused stage, the next ones would fail on it
                    continue
                try:
                    rc, _, error = nft.cmd(document)
                except Exception as failure:  # reported by the building thread
                    rc, error = 1, repr(failure).encode()
                if rc != 0:
                    refused.append(error)

        applier = threading.Thread(target=apply_in_turn, name=f"nft-{self.node}", daemon=True)
        applier.start()
        count = 0
        try:
            for commands in self._tables.stages(program):
                if refused:
                    break
                count += len(commands)
                documents.put(_document(commands))
            computed = time.perf_counter()
        finally:
            documents.put(None)
            applier.join()
        if refused:
            # Not hooked: the half-made table sees no packet, and the next build, finding
            # it, replaces it at once.
            self._refused(refused[0])
        return computed, count

    @staticmethod
    def _refused(error: bytes) -> NoReturn:
        raise NftablesError(
            f"nftables refused the vrouter program: {error.decode(errors='replace').strip()}"
        )

    def ruleset(self) -> dict[str, Any]:
        """knm's table as the kernel holds it (nftables JSON)."""

        def listed() -> dict[str, Any]:
            nft = nftables.Nftables()
            nft.set_json_output(True)
            rc, output, error = nft.cmd("list table ip knm")
            if rc != 0:
                raise NftablesError(error.strip())
            result: dict[str, Any] = json.loads(output)
            return result

        return self._thread.run(listed)

    # ---- the overlay --------------------------------------------------------------------

    def _converge_overlay(self, overlay: OverlayConfigured) -> None:
        own = next((n.address for n in overlay.nodes if n.name == self.node), None)
        routes = overlay_routes(overlay, node=self.node)
        with IPRoute() as ipr:
            index = self._vxlan(ipr, own)
            if index is None:
                return
            remotes = {route.via: vtep_mac(route.via) for route in routes.values()}
            for node in overlay.nodes:
                if node.name != self.node and node.address is not None:
                    remotes.setdefault(node.address, vtep_mac(node.address))
            self._converge_remotes(ipr, index, remotes)
            self._converge_routes(ipr, index, {block: r.via for block, r in routes.items()})

    def _vxlan(self, ipr: IPRoute, own: str | None) -> int | None:
        found = ipr.link_lookup(ifname=VXLAN_IFNAME)
        if own is None:
            if found:
                ipr.link("del", index=found[0])
                self._remotes = None
            return None
        if found:
            (link,) = ipr.get_links(found[0])
            info = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            if info.get_attr("IFLA_VXLAN_LOCAL") == own:
                return int(found[0])
            ipr.link("del", index=found[0])
        ipr.link(
            "add",
            ifname=VXLAN_IFNAME,
            kind="vxlan",
            vxlan_id=VNI,
            vxlan_local=own,
            vxlan_port=VXLAN_PORT,
            vxlan_learning=0,
            address=vtep_mac(own),
            mtu=self._vxlan_mtu,
        )
        (index,) = ipr.link_lookup(ifname=VXLAN_IFNAME)
        ipr.link("set", index=index, state="up")
        self._remotes = {}
        log.info("overlay device created", extra={"node": self.node, "local": own})
        return int(index)  # netlink answers are untyped

    def _converge_remotes(self, ipr: IPRoute, index: int, remotes: Mapping[str, str]) -> None:
        if self._remotes is None:
            # After a start: learn what the device already forwards to.
            self._remotes = {
                neigh.get_attr("NDA_DST"): neigh.get_attr("NDA_LLADDR")
                for neigh in ipr.get_neighbours(family=AF_INET, ifindex=index)
                if neigh["state"] == NUD_PERMANENT
            }
        for address, mac in self._remotes.items():
            if remotes.get(address) != mac:
                ipr.neigh("del", dst=address, lladdr=mac, ifindex=index)
                ipr.fdb("del", ifindex=index, lladdr=mac, dst=address, flags=NTF_SELF)
        for address, mac in remotes.items():
            if self._remotes.get(address) != mac:
                ipr.fdb("replace", ifindex=index, lladdr=mac, dst=address, flags=NTF_SELF)
                ipr.neigh("replace", dst=address, lladdr=mac, ifindex=index, state="permanent")
        self._remotes = dict(remotes)

    def _converge_routes(self, ipr: IPRoute, index: int, wanted: Mapping[str, str]) -> None:
        present: dict[str, str] = {}
        for route in ipr.get_routes(family=AF_INET, oif=index, proto=RTPROT_KNM):
            dst = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
            present[dst] = route.get_attr("RTA_GATEWAY")
        for block, via in present.items():
            if wanted.get(block) != via:
                ipr.route("del", dst=block, oif=index, proto=RTPROT_KNM)
        for block, via in wanted.items():
            if present.get(block) != via:
                ipr.route(
                    "replace",
                    dst=block,
                    gateway=via,
                    oif=index,
                    flags=RTNH_F_ONLINK,
                    proto=RTPROT_KNM,
                )

    def close(self) -> None:
        self._thread.close()
