"""What the kernel holds for one link, one address and one route, read over rtnetlink.

pyroute2 answers with untyped netlink messages; these readers turn them into small typed
records so that the wiring compares plain values.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

# <linux/if.h>
IFF_UP = 0x1
# <linux/rtnetlink.h>
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    kind: str | None
    up: bool
    mac: str
    mtu: int
    alias: str
    # A veth's other end: its index in the namespace that `peer_nsid` names (as the
    # link's own namespace numbers it; None when both ends share one namespace).
    peer: int | None
    peer_nsid: int | None


@dataclass(frozen=True, slots=True)
class Route:
    dst: str
    dst_len: int
    oif: int | None
    gateway: str | None
    scope: int
    proto: int


def link_of(message: Any) -> Link:
    flags = int(message["flags"])
    peer = message.get("IFLA_LINK")
    nsid = message.get("IFLA_LINK_NETNSID")
    return Link(
        index=int(message["index"]),
        name=str(message.get("IFLA_IFNAME")),
        kind=_str_or_none(message.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")),
        up=bool(flags & IFF_UP),
        mac=str(message.get("IFLA_ADDRESS") or ""),
        mtu=int(message.get("IFLA_MTU") or 0),
        alias=str(message.get("IFLA_IFALIAS") or ""),
        peer=int(peer) if peer is not None else None,
        peer_nsid=int(nsid) if nsid is not None else None,
    )


def find_link(ipr: Any, name: str) -> Link | None:
    try:
        (message,) = ipr.link("get", ifname=name)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return None
        raise
    return link_of(message)


def all_links(ipr: Any) -> list[Link]:
    return [link_of(message) for message in ipr.get_links()]


def ipv4_addresses(ipr: Any, index: int) -> set[tuple[str, int]]:
    """The link's IPv4 addresses as (address, prefix length)."""
    return {
        (str(message.get("IFA_ADDRESS")), int(message["prefixlen"]))
        for message in ipr.get_addr(index=index, family=socket.AF_INET)
    }


def main_routes(ipr: Any) -> list[Route]:
    """The IPv4 routes of the main table."""
    routes = []
    for message in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        if int(message.get("RTA_TABLE") or message["table"]) != RT_TABLE_MAIN:
            continue
        oif = message.get("RTA_OIF")
        gateway = message.get("RTA_GATEWAY")
        routes.append(
            Route(
                dst=str(message.get("RTA_DST") or "0.0.0.0"),
                dst_len=int(message["dst_len"]),
                oif=int(oif) if oif is not None else None,
                gateway=str(gateway) if gateway is not None else None,
                scope=int(message["scope"]),
                proto=int(message["proto"]),
            )
        )
    return routes


def delete_link(ipr: Any, index: int) -> bool:
    """Delete the link (a veth takes its other end along); False if it was already gone."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return False
        raise
    return True


def netnsid(ipr: Any, descriptor: int) -> int | None:
    """How the namespace behind `ipr` numbers the namespace open at `descriptor`."""
    answer = ipr.get_netnsid(fd=descriptor)
    nsid = answer.get("nsid") if isinstance(answer, dict) else None
    return int(nsid) if nsid is not None and int(nsid) >= 0 else None


def _str_or_none(value: object) -> str | None:
    return str(value) if value is not None else None
