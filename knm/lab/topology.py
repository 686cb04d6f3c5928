"""The lab's machines: nodes as network namespaces on one underlay bridge, pods as
namespaces of their own. Every name starts with the lab's name, and the lab records
what it made, so that taking it down removes exactly that."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network

from pyroute2 import IPRoute, netns

from services.agent.linux.namespaces import inside

log = logging.getLogger("knm.lab")

UNDERLAY_BRIDGE = "br0"
UNDERLAY_IFNAME = "underlay"
# Room for the overlay's 50 bytes of encapsulation under pods' 1500-byte packets.
UNDERLAY_MTU = 1600


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a lab named `name` keeps things."""

    name: str

    @property
    def underlay(self) -> str:
        return f"{self.name}-underlay"

    def node(self, node: str) -> str:
        return f"{self.name}-{node}"

    def pod(self, namespace: str, name: str) -> str:
        digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:10]
        return f"{self.name}-pod-{digest}"

    def owns(self, namespace: str) -> bool:
        return namespace.startswith(f"{self.name}-")


def existing() -> set[str]:
    return set(netns.listnetns())


def make_namespace(name: str) -> None:
    if name not in existing():
        netns.create(name)

    def loopback_up() -> None:
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    inside(name, loopback_up)


def remove_namespaces(names: Iterable[str]) -> None:
    present = existing()
    for name in names:
        if name in present:
            netns.remove(name)


def build_underlay(layout: Layout, *, nodes: dict[str, str], underlay: IPv4Network) -> None:
    """The underlay bridge in its own namespace, and each node on it at its address."""
    make_namespace(layout.underlay)

    def bridge() -> None:
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=UNDERLAY_BRIDGE):
                ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge", mtu=UNDERLAY_MTU)
            ipr.link("set", index=ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0], state="up")

    inside(layout.underlay, bridge)
    for index, (node, address) in enumerate(sorted(nodes.items()), start=1):
        make_namespace(layout.node(node))
        port = f"port{index}"

        def plug(port: str = port, node_ns: str = layout.node(node)) -> None:
            with IPRoute() as ipr:
                if ipr.link_lookup(ifname=port):
                    return
                ipr.link(
                    "add",
                    ifname=port,
                    kind="veth",
                    mtu=UNDERLAY_MTU,
                    peer={"ifname": UNDERLAY_IFNAME, "net_ns_fd": node_ns, "mtu": UNDERLAY_MTU},
                )
                (bridge_index,) = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)
                (port_index,) = ipr.link_lookup(ifname=port)
                ipr.link("set", index=port_index, master=bridge_index, state="up")

        inside(layout.underlay, plug)

        def address_node(address: str = address) -> None:
            with IPRoute() as ipr:
                (index_,) = ipr.link_lookup(ifname=UNDERLAY_IFNAME)
                present = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index_)}
                if address not in present:
                    ipr.addr("add", index=index_, address=address, prefixlen=underlay.prefixlen)
                ipr.link("set", index=index_, state="up")

        inside(layout.node(node), address_node)
        log.info("node up", extra={"node": node, "address": address})
