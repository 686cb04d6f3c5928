"""A dataplane that records what it would do: the embedded mode's vrouter, and the
reference for what the Linux dataplane must execute."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from knm.core.events.vrouter import Allow, OverlayConfigured, VipMap, VrouterConfigured
from services.agent.dataplane import PodInterface, Sandbox
from services.agent.plan import (
    AttachInterface,
    DetachInterface,
    Op,
    OverlayRoute,
    overlay_routes,
    plan_program,
)
from services.agent.program import NodeProgram, Piece


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """What one node's vrouter currently holds, for the CLI's demo table."""

    node: str | None
    interfaces: tuple[PodInterface, ...]
    overlay_routes: tuple[OverlayRoute, ...]
    allows: tuple[Allow, ...]
    vips: tuple[VipMap, ...]

    @property
    def interface_count(self) -> int:
        return len(self.interfaces)

    @property
    def overlay_route_count(self) -> int:
        return len(self.overlay_routes)

    @property
    def allow_count(self) -> int:
        return len(self.allows)

    @property
    def vip_count(self) -> int:
        return len(self.vips)


class RecordingDataplane:
    def __init__(self) -> None:
        self.interfaces: dict[str, PodInterface] = {}
        self.config: VrouterConfigured | None = None
        self.overlay: OverlayConfigured | None = None
        self.operations: list[Op] = []

    def attach(self, iface: PodInterface, sandbox: Sandbox | None) -> None:
        # Nothing to plug into: the recording holds interfaces whatever their sandbox.
        del sandbox
        current = self.interfaces.get(iface.pod_uid)
        if current == iface:
            return
        if current is not None:
            self.operations.append(DetachInterface(pod_uid=current.pod_uid, ifname=current.ifname))
        self.interfaces[iface.pod_uid] = iface
        self.operations.append(AttachInterface(iface))

    def detach(self, pod_uid: str) -> None:
        current = self.interfaces.pop(pod_uid, None)
        if current is not None:
            self.operations.append(DetachInterface(pod_uid=pod_uid, ifname=current.ifname))

    def check(self, iface: PodInterface, sandbox: Sandbox) -> list[str]:
        del sandbox
        current = self.interfaces.get(iface.pod_uid)
        if current is None:
            return [f"pod {iface.namespace}/{iface.name} has no interface"]
        if current != iface:
            return [f"pod {iface.namespace}/{iface.name} is wired as {current.ip}, not {iface.ip}"]
        return []

    def program(
        self, program: NodeProgram, changed: Collection[Piece] | None, overlay: OverlayConfigured
    ) -> None:
        # The recording diffs whole programs: simple, and its programs are small.
        del changed
        config = program.assemble()
        self.operations += plan_program(
            self.config,
            config,
            overlay_before=self.overlay,
            overlay_after=overlay,
            node=config.node,
        )
        self.config = config
        self.overlay = overlay

    def close(self) -> None:
        # Nothing is held outside this object.
        return None

    def summary(self) -> NodeSummary:
        config = self.config
        routes = (
            overlay_routes(self.overlay, node=config.node)
            if self.overlay is not None and config is not None
            else {}
        )
        return NodeSummary(
            node=config.node if config is not None else None,
            interfaces=tuple(
                sorted(self.interfaces.values(), key=lambda i: (i.namespace, i.name, i.pod_uid))
            ),
            overlay_routes=tuple(sorted(routes.values())),
            allows=config.allows if config is not None else (),
            vips=config.services if config is not None else (),
        )
