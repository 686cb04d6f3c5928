"""The Linux dataplane: pod veths wired by `PodWiring`, the vrouter by `Vrouter`."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Protocol

from knm.core.events.vrouter import OverlayConfigured
from services.agent.dataplane import PodInterface, Sandbox
from services.agent.linux.vrouter import Vrouter
from services.agent.program import NodeProgram, Piece

log = logging.getLogger("knm.agent.dataplane")


class Wiring(Protocol):
    def attach(self, iface: PodInterface, sandbox: Sandbox | None) -> None: ...

    def detach(self, pod_uid: str) -> None: ...

    def check(self, iface: PodInterface, sandbox: Sandbox) -> list[str]: ...

    def owned(self) -> set[str]: ...

    def remove_unwanted(self, wanted: set[str]) -> set[str]: ...

    def close(self) -> None: ...


class LinuxDataplane:
    def __init__(self, *, wiring: Wiring, vrouter: Vrouter) -> None:
        self._wiring = wiring
        self.vrouter = vrouter
        # Host-side names of the interfaces attached since this process started.
        self._attached: dict[str, str] = {}
        self._collected = False

    def attach(self, iface: PodInterface, sandbox: Sandbox | None) -> None:
        self._wiring.attach(iface, sandbox)
        self._attached[iface.pod_uid] = iface.ifname

    def detach(self, pod_uid: str) -> None:
        self._wiring.detach(pod_uid)
        self._attached.pop(pod_uid, None)

    def check(self, iface: PodInterface, sandbox: Sandbox) -> list[str]:
        return self._wiring.check(iface, sandbox)

    def program(
        self, program: NodeProgram, changed: Collection[Piece] | None, overlay: OverlayConfigured
    ) -> None:
        self.vrouter.program(program, changed, overlay)
        if not self._collected:
            # The first program after a start is the first full view of what this node
            # should hold: interfaces knm left behind and nobody wants go now.
            wanted = {i.ifname for i in program.interfaces} | set(self._attached.values())
            removed = self._wiring.remove_unwanted(wanted)
            if removed:
                log.info("removed stale interfaces", extra={"interfaces": sorted(removed)})
            self._collected = True

    def close(self) -> None:
        self.vrouter.close()
        self._wiring.close()
