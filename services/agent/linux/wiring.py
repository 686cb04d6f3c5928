"""Pods wired into the node with veth pairs, over rtnetlink (pyroute2).

Per pod, a veth pair: the pod's end is the sandbox's interface (eth0) with the pod's MAC
and its /32 address, a link-scope route to the gateway and the default route through
it; the node's end (`PodInterface.ifname`) holds the gateway address, and the node routes
the pod's /32 through it. Every host end holds the same gateway address, so each pod
sees its gateway on its own point-to-point link and the node routes between them.

The host end carries an alias naming the pod, which is how a restarted agent recognises
the links it owns (and whose pod each is) without any state of its own, and how it
leaves every other link alone.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from services.agent.dataplane import PodInterface, Sandbox, SandboxInUseError
from services.agent.linux.links import (
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    Link,
    Route,
    all_links,
    delete_link,
    find_link,
    ipv4_addresses,
    main_routes,
    netnsid,
)
from services.agent.linux.namespaces import netns_path, read_sysctl, routing, write_sysctl

log = logging.getLogger("knm.agent.wiring")

# The routing protocol number on the node's routes to its pods. Routes carry the number
# of whoever installed them; one of knm's own tells its routes apart from the kernel's,
# an administrator's or another daemon's. 107 is unassigned in <linux/rtnetlink.h> and
# iproute2's rt_protos (and not used by the common CNI plugins).
RTPROT_KNM = 107
# Host ends are named "knm" + 11 hex digits (knm.core.domain.addresses.host_ifname).
HOST_PREFIX = "knm"
ALIAS_PREFIX = "knm pod="
FORWARDING = "net.ipv4.ip_forward"
DEFAULT = "0.0.0.0"


class WiringError(Exception):
    """The pod cannot be wired as asked (not a netlink failure: those propagate)."""


@dataclass(frozen=True, slots=True)
class _Wired:
    iface: PodInterface
    # None when the wiring was adopted as found: the agent restarted and has not been
    # told the sandbox again.
    sandbox: Sandbox | None


def alias_for(iface: PodInterface, sandbox: Sandbox) -> str:
    return f"{ALIAS_PREFIX}{iface.pod_uid} container={sandbox.container_id}"


def pod_of(link: Link) -> str | None:
    """The pod uid of a host end knm wired; None for any other link."""
    if link.kind != "veth" or not link.name.startswith(HOST_PREFIX):
        return None
    if not link.alias.startswith(ALIAS_PREFIX):
        return None
    uid = link.alias[len(ALIAS_PREFIX) :].split(" ", 1)[0]
    return uid or None


class PodWiring:
    """The pod half of the dataplane: attach, detach, check, and garbage collection.

    `node_netns` is the node's namespace: None for the agent's own (a real node), or a
    name or path (the lab's nodes are namespaces while the agent runs outside them).
    `mtu`, when given, is set on both ends (the overlay's encapsulation needs room).
    Thread-safe: every operation holds one lock.
    """

    def __init__(self, *, node_netns: str | None = None, mtu: int | None = None) -> None:
        self.node_netns = netns_path(node_netns) if node_netns else None
        self._mtu = mtu
        self._lock = threading.RLock()
        # What this wiring holds, per pod uid: rebuilt from the node's links on first use.
        self._wired: dict[str, _Wired] = {}
        self._found: dict[str, str] = {}
        self._waiting: dict[str, PodInterface] = {}
        self._loaded = False
        self._forwarding = False

    # -- the dataplane's pod half -------------------------------------------------------

    def attach(self, iface: PodInterface, sandbox: Sandbox | None) -> None:
        with self._lock:
            self._load()
            if sandbox is None:
                self._adopt(iface)
                return
            current = self._wired.get(iface.pod_uid)
            with routing(self.node_netns) as node:
                # The host end first: a pod new to the node has none, and is wired at once.
                if not _host_problems(node, iface, mtu=self._mtu) and not self._pod_problems(
                    node, iface, sandbox
                ):
                    self._wired[iface.pod_uid] = _Wired(iface=iface, sandbox=sandbox)
                    self._waiting.pop(iface.pod_uid, None)
                    self._found.pop(iface.pod_uid, None)
                    return
                self._wire(node, iface, sandbox)
            self._ensure_forwarding()
            log.info(
                "pod rewired" if current is not None else "pod wired",
                extra={**_pod(iface), "sandbox": sandbox.netns, "container": sandbox.container_id},
            )

    def detach(self, pod_uid: str) -> None:
        with self._lock:
            self._load()
            if not self._names(pod_uid):
                self._waiting.pop(pod_uid, None)
                return
            with routing(self.node_netns) as node:
                removed = self._unwire(node, pod_uid=pod_uid)
            self._waiting.pop(pod_uid, None)
            entry = self._wired.pop(pod_uid, None)
            self._found.pop(pod_uid, None)
            if removed or entry is not None:
                extra = _pod(entry.iface) if entry is not None else {"pod_uid": pod_uid}
                log.info("pod unwired", extra={**extra, "links": sorted(removed)})

    def check(self, iface: PodInterface, sandbox: Sandbox) -> list[str]:
        with self._lock, routing(self.node_netns) as node:
            return _host_problems(node, iface, mtu=self._mtu) + self._pod_problems(
                node, iface, sandbox
            )

    def close(self) -> None:
        # Every operation opens and closes its own netlink connections.
        return None

    # -- what it holds ------------------------------------------------------------------

    def owned(self) -> set[str]:
        """The host ends knm wired that are present in the node's namespace."""
        with self._lock, routing(self.node_netns) as node:
            return {link.name for link in all_links(node) if pod_of(link) is not None}

    def remove_unwanted(self, wanted: set[str]) -> set[str]:
        """Delete the host ends knm owns that are not in `wanted` (and their pods' ends);
        returns their names."""
        with self._lock:
            self._load()
            removed: set[str] = set()
            with routing(self.node_netns) as node:
                for link in all_links(node):
                    uid = pod_of(link)
                    if uid is None or link.name in wanted:
                        continue
                    if delete_link(node, link.index):
                        removed.add(link.name)
                    self._forget(uid, link.name)
            if removed:
                log.info("unwanted pod links removed", extra={"links": sorted(removed)})
            return removed

    def interfaces(self) -> dict[str, PodInterface]:
        """The pods wired (or adopted) in this run, by uid."""
        with self._lock:
            return {uid: wired.iface for uid, wired in self._wired.items()}

    def waiting(self) -> dict[str, PodInterface]:
        """The pods known but not wired: their sandbox has not been given yet."""
        with self._lock:
            return dict(self._waiting)

    # -- internals ----------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        with routing(self.node_netns) as node:
            for link in all_links(node):
                uid = pod_of(link)
                if uid is not None:
                    self._found[uid] = link.name
        self._loaded = True
        log.info("pod links found", extra={"links": sorted(self._found.values())})

    def _forget(self, uid: str, name: str) -> None:
        wired = self._wired.get(uid)
        if wired is not None and wired.iface.ifname == name:
            del self._wired[uid]
        if self._found.get(uid) == name:
            del self._found[uid]

    def _adopt(self, iface: PodInterface) -> None:
        """Without a sandbox: keep a matching host end untouched, else wait for one."""
        with routing(self.node_netns) as node:
            problems = _host_problems(node, iface, mtu=self._mtu)
        current = self._wired.get(iface.pod_uid)
        if not problems:
            sandbox = current.sandbox if current is not None and current.iface == iface else None
            self._wired[iface.pod_uid] = _Wired(iface=iface, sandbox=sandbox)
            self._waiting.pop(iface.pod_uid, None)
            if self._found.pop(iface.pod_uid, None) is not None:
                log.info("pod wiring adopted", extra=_pod(iface))
            return
        self._wired.pop(iface.pod_uid, None)
        self._waiting[iface.pod_uid] = iface
        log.info("pod waits for its sandbox", extra={**_pod(iface), "problems": problems})

    def _pod_problems(self, node: Any, iface: PodInterface, sandbox: Sandbox) -> list[str]:
        if not os.path.exists(sandbox.netns):
            return [f"sandbox {sandbox.netns} does not exist"]
        with routing(sandbox.netns) as pod, _descriptor(sandbox.netns) as descriptor:
            return _pod_problems(
                pod,
                iface,
                sandbox,
                host=find_link(node, iface.ifname),
                sandbox_nsid=netnsid(node, descriptor),
                mtu=self._mtu,
            )

    def _wire(self, node: Any, iface: PodInterface, sandbox: Sandbox) -> None:
        with routing(sandbox.netns) as pod, _descriptor(sandbox.netns) as descriptor:
            occupant = find_link(pod, sandbox.ifname)
            if occupant is not None and not self._peer_of_pod(
                node, occupant, iface, sandbox_nsid=netnsid(node, descriptor)
            ):
                raise SandboxInUseError(
                    f"sandbox {sandbox.netns} already has an interface {sandbox.ifname}"
                )
            # The pod's earlier wiring goes, and its end in the sandbox with it.
            self._unwire(node, pod_uid=iface.pod_uid, name=iface.ifname)
            mtu = {"mtu": self._mtu} if self._mtu is not None else {}
            node.link(
                "add",
                ifname=iface.ifname,
                kind="veth",
                peer={
                    "ifname": sandbox.ifname,
                    "net_ns_fd": descriptor,
                    "address": iface.mac,
                    **mtu,
                },
                **mtu,
            )
            host = find_link(node, iface.ifname)
            if host is None:
                raise WiringError(f"{iface.ifname} vanished as it was created")
            try:
                _wire_host(node, host, iface, sandbox)
                _wire_pod(pod, iface, sandbox)
            except BaseException:
                delete_link(node, host.index)
                raise
        self._wired[iface.pod_uid] = _Wired(iface=iface, sandbox=sandbox)
        self._waiting.pop(iface.pod_uid, None)
        self._found.pop(iface.pod_uid, None)

    def _names(self, pod_uid: str, name: str | None = None) -> set[str]:
        """The host ends the pod may have: the one it is to take, and those this wiring
        made or found for it (the map is whole: it starts from every link of the node)."""
        names = {name} if name is not None else set()
        wired = self._wired.get(pod_uid)
        if wired is not None:
            names.add(wired.iface.ifname)
        found = self._found.get(pod_uid)
        if found is not None:
            names.add(found)
        return names

    def _unwire(self, node: Any, *, pod_uid: str, name: str | None = None) -> set[str]:
        """Delete the pod's host ends: those carrying its mark, and a knm host end holding
        the name the pod is to take. A link of that name that is not knm's is left alone
        (and the wiring fails)."""
        removed = set()
        for candidate in sorted(self._names(pod_uid, name)):
            link = find_link(node, candidate)
            if link is None:
                continue
            owner = pod_of(link)
            if owner is None:
                if candidate == name:
                    raise WiringError(f"{name} exists in the node and is not knm's")
                continue
            if (owner == pod_uid or candidate == name) and delete_link(node, link.index):
                removed.add(candidate)
        return removed

    def _peer_of_pod(
        self, node: Any, link: Link, iface: PodInterface, *, sandbox_nsid: int | None
    ) -> bool:
        """Whether `link` (in the sandbox) is the other end of one of the pod's host ends."""
        for name in self._names(iface.pod_uid, iface.ifname):
            host = find_link(node, name)
            if host is None or (name != iface.ifname and pod_of(host) != iface.pod_uid):
                continue
            if host.peer == link.index and host.peer_nsid == sandbox_nsid:
                return True
        return False

    def _ensure_forwarding(self) -> None:
        # Once per wiring (per agent run): the read costs a thread, and a node does not
        # turn forwarding off behind its agent's back.
        if self._forwarding:
            return
        if read_sysctl(self.node_netns, name=FORWARDING) != "1":
            write_sysctl(self.node_netns, name=FORWARDING, value="1")
            log.info("forwarding enabled", extra={"netns": self.node_netns or "(own)"})
        self._forwarding = True


def _wire_host(node: Any, host: Link, iface: PodInterface, sandbox: Sandbox) -> None:
    node.link("set", index=host.index, ifalias=alias_for(iface, sandbox), state="up")
    node.addr("add", index=host.index, address=iface.gateway, prefixlen=32)
    # replace: a route to this address left by an earlier wiring must not block this one.
    node.route(
        "replace",
        dst=iface.ip,
        dst_len=32,
        oif=host.index,
        scope=RT_SCOPE_LINK,
        proto=RTPROT_KNM,
    )


def _wire_pod(pod: Any, iface: PodInterface, sandbox: Sandbox) -> None:
    loopback = find_link(pod, "lo")
    if loopback is not None and not loopback.up:
        pod.link("set", index=loopback.index, state="up")
    eth = find_link(pod, sandbox.ifname)
    if eth is None:
        raise WiringError(f"{sandbox.ifname} did not appear in {sandbox.netns}")
    pod.addr("add", index=eth.index, address=iface.ip, prefixlen=32)
    pod.link("set", index=eth.index, state="up")
    pod.route("replace", dst=iface.gateway, dst_len=32, oif=eth.index, scope=RT_SCOPE_LINK)
    pod.route("replace", dst=DEFAULT, dst_len=0, gateway=iface.gateway, oif=eth.index)


def _host_problems(node: Any, iface: PodInterface, *, mtu: int | None) -> list[str]:
    host = find_link(node, iface.ifname)
    if host is None:
        return [f"host interface {iface.ifname} is missing"]
    problems = []
    if host.kind != "veth":
        problems.append(f"host interface {iface.ifname} is a {host.kind}, not a veth")
    owner = pod_of(host)
    if owner != iface.pod_uid:
        problems.append(f"host interface {iface.ifname} is not wired for pod {iface.pod_uid}")
    if not host.up:
        problems.append(f"host interface {iface.ifname} is down")
    if mtu is not None and host.mtu != mtu:
        problems.append(f"host interface {iface.ifname} has MTU {host.mtu}, not {mtu}")
    if (iface.gateway, 32) not in ipv4_addresses(node, host.index):
        problems.append(f"host interface {iface.ifname} lacks the gateway {iface.gateway}/32")
    route = _route(main_routes(node), dst=iface.ip, dst_len=32, oif=host.index)
    if route is None:
        problems.append(f"no route to {iface.ip}/32 through {iface.ifname}")
    elif route.proto != RTPROT_KNM or route.scope != RT_SCOPE_LINK:
        problems.append(f"the route to {iface.ip}/32 is not knm's link-scope route")
    return problems


def _pod_problems(
    pod: Any,
    iface: PodInterface,
    sandbox: Sandbox,
    *,
    host: Link | None,
    sandbox_nsid: int | None,
    mtu: int | None,
) -> list[str]:
    where = f"{sandbox.ifname} in {sandbox.netns}"
    eth = find_link(pod, sandbox.ifname)
    if eth is None:
        return [f"{where} is missing"]
    problems = []
    if host is not None and (host.peer != eth.index or host.peer_nsid != sandbox_nsid):
        problems.append(f"{where} is not the other end of {iface.ifname}")
    if eth.mac.lower() != iface.mac.lower():
        problems.append(f"{where} has MAC {eth.mac}, not {iface.mac}")
    if not eth.up:
        problems.append(f"{where} is down")
    if mtu is not None and eth.mtu != mtu:
        problems.append(f"{where} has MTU {eth.mtu}, not {mtu}")
    if (iface.ip, 32) not in ipv4_addresses(pod, eth.index):
        problems.append(f"{where} lacks the address {iface.ip}/32")
    routes = main_routes(pod)
    link_route = _route(routes, dst=iface.gateway, dst_len=32, oif=eth.index)
    if link_route is None or link_route.scope != RT_SCOPE_LINK:
        problems.append(f"{where} has no link-scope route to the gateway {iface.gateway}")
    default = _route(routes, dst=DEFAULT, dst_len=0, oif=eth.index)
    if default is None or default.gateway != iface.gateway or default.scope != RT_SCOPE_UNIVERSE:
        problems.append(f"{where} has no default route via {iface.gateway}")
    loopback = find_link(pod, "lo")
    if loopback is None or not loopback.up:
        problems.append(f"lo in {sandbox.netns} is down")
    return problems


def _route(routes: list[Route], *, dst: str, dst_len: int, oif: int) -> Route | None:
    for route in routes:
        if route.dst == dst and route.dst_len == dst_len and route.oif == oif:
            return route
    return None


@contextmanager
def _descriptor(path: str) -> Iterator[int]:
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def _pod(iface: PodInterface) -> dict[str, str]:
    return {"pod": f"{iface.namespace}/{iface.name}", "pod_uid": iface.pod_uid, "ip": iface.ip}
