"""Pods wired for real, the vrouter's program only recorded: the Linux dataplane's pod
half on its own, for as long as the vrouter half is not there to compose with it."""

from __future__ import annotations

from knm.core.events.vrouter import OverlayConfigured, VrouterConfigured
from services.agent.dataplane import PodInterface, Sandbox
from services.agent.linux.wiring import PodWiring
from services.agent.recording import RecordingDataplane


class WiredPodsDataplane:
    def __init__(self, *, wiring: PodWiring) -> None:
        self.wiring = wiring
        self.programs = RecordingDataplane()

    def attach(self, iface: PodInterface, sandbox: Sandbox | None) -> None:
        self.wiring.attach(iface, sandbox)

    def detach(self, pod_uid: str) -> None:
        self.wiring.detach(pod_uid)

    def check(self, iface: PodInterface, sandbox: Sandbox) -> list[str]:
        return self.wiring.check(iface, sandbox)

    def program(self, config: VrouterConfigured, overlay: OverlayConfigured) -> None:
        self.programs.program(config, overlay)

    def close(self) -> None:
        self.wiring.close()
