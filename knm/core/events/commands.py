"""Node commands from the allocator to one node's agent. Topic `node-commands`, keyed by node."""

from __future__ import annotations

from typing import ClassVar

from knm.core.events.base import Event


class AttachRequested(Event):
    """Wire this pod's interface into the node's vrouter (or answer the CNI plugin with it)."""

    TYPE: ClassVar[str] = "AttachRequested"
    node: str
    pod_uid: str
    namespace: str
    name: str
    network: str
    ip: str
    mac: str
    gateway: str
    ifname: str


class DetachRequested(Event):
    TYPE: ClassVar[str] = "DetachRequested"
    node: str
    pod_uid: str
    namespace: str
    name: str
    ifname: str


COMMANDS: tuple[type[Event], ...] = (AttachRequested, DetachRequested)
