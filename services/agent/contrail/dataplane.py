"""The contrail dataplane: a wiring (veth pairs) plus registration of every wired pod's
port with the node's vrouter agent, kept registered across that agent's restarts.

A restarted vrouter agent has forgotten the ports: a watcher thread asks the agent every
`probe_interval` for one registered port, and when it is unknown (or the agent was
unreachable and answers again) registers every port again in one call. Registrations
that failed (the agent down when a pod came) wait in the same set and go with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import Any, Protocol

from knm.core.events.vrouter import OverlayConfigured
from services.agent.contrail.ports import PortApi, PortApiError, port_of
from services.agent.dataplane import PodInterface, Sandbox
from services.agent.program import NodeProgram, Piece

log = logging.getLogger("knm.agent.contrail")


class Wiring(Protocol):
    def attach(self, iface: PodInterface, sandbox: Sandbox | None) -> None: ...

    def detach(self, pod_uid: str) -> None: ...

    def check(self, iface: PodInterface, sandbox: Sandbox) -> list[str]: ...

    def close(self) -> None: ...


class ContrailDataplane:
    def __init__(self, *, wiring: Wiring, ports: PortApi, probe_interval: float = 0.25) -> None:
        self._wiring = wiring
        self._ports = ports
        self._probe_interval = probe_interval
        self._lock = threading.Lock()
        # Port bodies by pod uid: what the vrouter agent should hold.
        self.registered: dict[str, dict[str, Any]] = {}
        # Pods whose registration has not been acknowledged yet.
        self._pending: set[str] = set()
        self._reachable = True
        self.resyncs = 0
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="vrouter-ports", daemon=True)
        self._watcher.start()

    def attach(self, iface: PodInterface, sandbox: Sandbox | None) -> None:
        self._wiring.attach(iface, sandbox)
        port = port_of(iface)
        with self._lock:
            if self.registered.get(iface.pod_uid) == port and iface.pod_uid not in self._pending:
                return
            self.registered[iface.pod_uid] = port
            self._pending.add(iface.pod_uid)
        self._register([iface.pod_uid])

    def detach(self, pod_uid: str) -> None:
        with self._lock:
            port = self.registered.pop(pod_uid, None)
            self._pending.discard(pod_uid)
        if port is not None:
            try:
                self._ports.delete(str(port["id"]))
            except PortApiError as error:
                # A vrouter agent that is down forgets the port when it restarts anyway.
                log.warning("port not deleted", extra={"pod_uid": pod_uid, "error": str(error)})
        self._wiring.detach(pod_uid)

    def check(self, iface: PodInterface, sandbox: Sandbox) -> list[str]:
        problems = self._wiring.check(iface, sandbox)
        with self._lock:
            if self.registered.get(iface.pod_uid) != port_of(iface):
                problems.append(f"pod {iface.namespace}/{iface.name}: port not registered")
        return problems

    def program(
        self, program: NodeProgram, changed: Collection[Piece] | None, overlay: OverlayConfigured
    ) -> None:
        # Contrail's vrouter takes its routes and policy from its controller, which the
        # contrail applier configures: there is no knm program to run here.
        del program, changed, overlay

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=5)
        self._ports.close()
        self._wiring.close()

    # ---- registration ---------------------------------------------------------------------

    def _register(self, uids: list[str]) -> None:
        with self._lock:
            ports = [self.registered[u] for u in uids if u in self.registered]
        if not ports:
            return
        try:
            self._ports.add(ports)
        except PortApiError as error:
            log.warning(
                "ports not registered yet", extra={"ports": len(ports), "error": str(error)}
            )
            return
        with self._lock:
            self._pending.difference_update(uids)

    def resync(self) -> None:
        """Register every port again (the vrouter agent restarted)."""
        with self._lock:
            uids = sorted(self.registered)
            self._pending.update(uids)
            self.resyncs += 1
        self._register(uids)
        log.info("ports registered again", extra={"ports": len(uids)})

    def _watch(self) -> None:
        while not self._stop.wait(self._probe_interval):
            with self._lock:
                probe = next(iter(self.registered.values()), None)
                pending = sorted(self._pending)
            if probe is None:
                continue
            try:
                known = self._ports.exists(str(probe["id"]))
            except PortApiError:
                self._reachable = False
                continue
            if not known or not self._reachable:
                self._reachable = True
                self.resync()
            elif pending:
                self._register(pending)
