"""Vrouter configuration from the applier's native backend to the agents. Topic `vrouter`.

`VrouterConfigured` is one node's whole program; `OverlayConfigured` is the cluster-wide
table of nodes and their blocks. Both are snapshots: the newest one is the truth.
"""

from __future__ import annotations

from typing import ClassVar

from knm.core.events.base import Event, Value
from knm.core.events.intents import PolicyPortSpec


class LocalInterface(Value):
    pod_uid: str
    namespace: str
    name: str
    ip: str
    mac: str
    ifname: str
    network: str


class NetworkMembers(Value):
    name: str
    members: tuple[str, ...]


class VipBackend(Value):
    ip: str
    node: str
    # Service port -> the port on this backend (named target ports already resolved).
    target_ports: tuple[tuple[int, str, int], ...]


class VipMap(Value):
    namespace: str
    name: str
    vip: str
    network: str
    ports: tuple[PolicyPortSpec, ...]
    backends: tuple[VipBackend, ...]


class Allow(Value):
    """Pods of `from_network` may open connections to `vip` on `ports`."""

    from_network: str
    vip: str
    service: str
    ports: tuple[PolicyPortSpec, ...]
    # True for a `uses` policy, False for a service of the collection's own.
    declared: bool


class VrouterConfigured(Event):
    TYPE: ClassVar[str] = "VrouterConfigured"
    node: str
    revision: str
    gateway: str
    interfaces: tuple[LocalInterface, ...] = ()
    networks: tuple[NetworkMembers, ...] = ()
    services: tuple[VipMap, ...] = ()
    allows: tuple[Allow, ...] = ()


class OverlayNode(Value):
    name: str
    address: str | None
    blocks: tuple[str, ...]


class OverlayConfigured(Event):
    TYPE: ClassVar[str] = "OverlayConfigured"
    revision: str
    nodes: tuple[OverlayNode, ...] = ()


VROUTER: tuple[type[Event], ...] = (VrouterConfigured, OverlayConfigured)
