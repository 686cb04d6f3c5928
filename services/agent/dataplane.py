"""What the agent drives on its node: pod interfaces and the vrouter program."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from knm.core.events.commands import AttachRequested
from knm.core.events.vrouter import OverlayConfigured
from services.agent.program import NodeProgram, Piece


@dataclass(frozen=True, slots=True)
class PodInterface:
    """A pod's veth pair as the node wires it: the host side is `ifname`."""

    pod_uid: str
    namespace: str
    name: str
    network: str
    ip: str
    mac: str
    gateway: str
    ifname: str

    @classmethod
    def of(cls, command: AttachRequested) -> PodInterface:
        return cls(
            pod_uid=command.pod_uid,
            namespace=command.namespace,
            name=command.name,
            network=command.network,
            ip=command.ip,
            mac=command.mac,
            gateway=command.gateway,
            ifname=command.ifname,
        )


@dataclass(frozen=True, slots=True)
class Sandbox:
    """Where the runtime wants a pod's interface, as a CNI ADD names it."""

    container_id: str
    # A path: /var/run/netns/<name> or /proc/<pid>/ns/net.
    netns: str
    # The interface's name inside the sandbox, usually eth0.
    ifname: str


class SandboxInUseError(Exception):
    """The sandbox already has an interface of the name asked for, and not the pod's."""


class Dataplane(Protocol):
    def attach(self, iface: PodInterface, sandbox: Sandbox | None) -> None:
        """Wire the interface into the sandbox; a pod already wired differently is
        rewired. Without a sandbox (the allocator's command came first, or the agent
        restarted) a dataplane that needs one keeps a matching wiring it finds and
        otherwise waits for the CNI ADD that brings the sandbox."""

    def detach(self, pod_uid: str) -> None:
        """Unwire the pod's interface; an unknown pod is not an error."""

    def check(self, iface: PodInterface, sandbox: Sandbox) -> list[str]:
        """What is wrong with the pod's wiring (CNI CHECK); empty when all is as wired."""

    def program(
        self, program: NodeProgram, changed: Collection[Piece] | None, overlay: OverlayConfigured
    ) -> None:
        """Converge the vrouter to this program. `changed` names the pieces that changed
        since the last call, so that the work is theirs; None on the first call after a
        start (or after a failure): the dataplane converges whatever it ran before."""

    def close(self) -> None: ...
