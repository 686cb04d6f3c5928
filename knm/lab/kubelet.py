"""The lab's kubelet: for each pod the allocator placed on a lab node, a namespace wired
through the real CNI plugin and the node's agent, and responders on the pod's ports."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knm.lab.responder import Responders
from knm.lab.topology import Layout, make_namespace, remove_namespaces

log = logging.getLogger("knm.lab")

CNI_VERSION = "1.0.0"
DEFAULT_PORT = 80


class CniError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WiredPod:
    key: str
    uid: str
    node: str
    netns: str
    ip: str
    ports: tuple[int, ...]


def plugin_path() -> str:
    beside = Path(sys.executable).parent / "knm-cni"
    if beside.exists():
        return str(beside)
    found = shutil.which("knm-cni")
    if found is None:
        raise CniError("knm-cni is not installed (it comes with knm: pip install -e .)")
    return found


def cni(
    command: str, *, uid: str, key: str, netns: str, socket_path: Path, timeout: float = 30.0
) -> dict[str, Any]:
    """Run the CNI plugin as a runtime does: environment, config on stdin, JSON out."""
    namespace, name = key.split("/", 1)
    plugin = plugin_path()
    env = {
        **os.environ,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": uid,
        "CNI_NETNS": f"/var/run/netns/{netns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(Path(plugin).parent),
        "CNI_ARGS": f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID={uid}",
    }
    config = {
        "cniVersion": CNI_VERSION,
        "name": "knm",
        "type": "knm-cni",
        "agentSocket": str(socket_path),
    }
    result = subprocess.run(
        [plugin],
        input=json.dumps(config),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise CniError(f"CNI {command} of {key} failed: {result.stdout.strip() or result.stderr}")
    output: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return output


def pod_ports(pod: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(sorted(set(pod.get("ports") or ()) or {DEFAULT_PORT}))


class Kubelet:
    def __init__(
        self, *, layout: Layout, sockets: Mapping[str, Path], responders: Responders
    ) -> None:
        self._layout = layout
        self._sockets = sockets
        self._responders = responders
        self.pods: dict[str, WiredPod] = {}
        self.failures: dict[str, str] = {}

    def reconcile(self, wanted: Sequence[Mapping[str, Any]]) -> bool:
        """Converge on `wanted` (pods with key, uid, node, ip, ports); True when every
        wanted pod is wired and served."""
        by_uid = {p["uid"]: p for p in wanted if p.get("node") in self._sockets and p.get("ip")}
        for uid in [uid for uid in self._by_uid() if uid not in by_uid]:
            self._remove(self._by_uid()[uid])
        for uid, pod in sorted(by_uid.items(), key=lambda item: item[1]["key"]):
            current = self._by_uid().get(uid)
            if current is not None and current.ip == pod["ip"]:
                ports = pod_ports(pod)
                if ports != current.ports:
                    self._serve(current, ports)
                continue
            if current is not None:
                self._remove(current)
            try:
                self._add(pod)
                self.failures.pop(pod["key"], None)
            except (CniError, OSError, subprocess.TimeoutExpired) as error:
                # The agent may not know the pod yet: the next pass tries again.
                self.failures[pod["key"]] = str(error)
        return all(uid in self._by_uid() for uid in by_uid)

    def _by_uid(self) -> dict[str, WiredPod]:
        return {pod.uid: pod for pod in self.pods.values()}

    def _add(self, pod: Mapping[str, Any]) -> None:
        key, uid, node = pod["key"], pod["uid"], pod["node"]
        netns = self._layout.pod(*key.split("/", 1))
        make_namespace(netns)
        result = cni("ADD", uid=uid, key=key, netns=netns, socket_path=self._sockets[node])
        addresses = [ip["address"].split("/")[0] for ip in result.get("ips", [])]
        if pod["ip"] not in addresses:
            raise CniError(f"CNI ADD of {key} gave {addresses}, the allocator says {pod['ip']}")
        wired = WiredPod(key=key, uid=uid, node=node, netns=netns, ip=pod["ip"], ports=())
        self._serve(wired, pod_ports(pod))
        log.info("pod wired", extra={"key": key, "ip": pod["ip"], "node": node})

    def _serve(self, pod: WiredPod, ports: tuple[int, ...]) -> None:
        self._responders.serve(pod.key, netns=pod.netns, ports=ports)
        self.pods[pod.key] = WiredPod(
            key=pod.key, uid=pod.uid, node=pod.node, netns=pod.netns, ip=pod.ip, ports=ports
        )

    def _remove(self, pod: WiredPod) -> None:
        self._responders.stop(pod.key)
        try:
            cni(
                "DEL",
                uid=pod.uid,
                key=pod.key,
                netns=pod.netns,
                socket_path=self._sockets[pod.node],
            )
        except (CniError, OSError, subprocess.TimeoutExpired) as error:
            log.warning("CNI DEL failed; removing the namespace anyway: %s", error)
        remove_namespaces([pod.netns])
        self.pods.pop(pod.key, None)
        log.info("pod removed", extra={"key": pod.key})

    def remove_all(self) -> None:
        for pod in list(self.pods.values()):
            self._remove(pod)
