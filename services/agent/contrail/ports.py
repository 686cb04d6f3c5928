"""The vrouter agent's port API (`POST /port`, `DELETE /port/<uuid>`, `GET /port/<uuid>`),
and the port body knm sends for a pod.

The body's uuids are the ones the contrail applier gives the pod's objects
(`knm.core.contrail`), so the agent needs no call to the controller to learn them.
"""

from __future__ import annotations

from typing import Any, Protocol

import requests

from knm.core import contrail as names
from services.agent.dataplane import PodInterface

# 1: the interface lives in a network namespace (a pod), not a VM's tap.
NAMESPACE_PORT = 1
NO_VLAN = -1


def port_of(iface: PodInterface) -> dict[str, Any]:
    return {
        "type": NAMESPACE_PORT,
        "id": names.interface_uuid(iface.namespace, iface.pod_uid),
        "instance-id": iface.pod_uid,
        "display-name": f"{iface.namespace}/{iface.name}",
        "ip-address": iface.ip,
        "ip6-address": "",
        "rx-vlan-id": NO_VLAN,
        "tx-vlan-id": NO_VLAN,
        "vn-id": names.network_uuid(iface.network),
        "vm-project-id": names.project_uuid(iface.namespace),
        "mac-address": iface.mac,
        "system-name": iface.ifname,
    }


class PortApiError(Exception):
    """The vrouter agent could not be reached or refused the call."""


class PortApi(Protocol):
    def add(self, ports: list[dict[str, Any]]) -> None: ...

    def delete(self, port_id: str) -> None:
        """Remove the port; one the agent does not know is not an error."""

    def exists(self, port_id: str) -> bool: ...

    def close(self) -> None: ...


class HttpPortApi:
    def __init__(self, *, url: str, timeout: float = 2.0) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()
        # The agent listens on the node itself: no proxy may stand in between.
        self._session.trust_env = False

    def _call(self, method: str, path: str, body: Any = None) -> requests.Response:
        try:
            return self._session.request(
                method, f"{self._url}{path}", json=body, timeout=self._timeout
            )
        except requests.RequestException as error:
            raise PortApiError(f"{method} {path}: {error}") from error

    def add(self, ports: list[dict[str, Any]]) -> None:
        answer = self._call("POST", "/port", ports[0] if len(ports) == 1 else ports)
        if answer.status_code != 200:
            raise PortApiError(f"POST /port: {answer.status_code} {answer.text}")

    def delete(self, port_id: str) -> None:
        answer = self._call("DELETE", f"/port/{port_id}")
        if answer.status_code not in (200, 404):
            raise PortApiError(f"DELETE /port/{port_id}: {answer.status_code} {answer.text}")

    def exists(self, port_id: str) -> bool:
        answer = self._call("GET", f"/port/{port_id}")
        if answer.status_code not in (200, 404):
            raise PortApiError(f"GET /port/{port_id}: {answer.status_code} {answer.text}")
        return answer.status_code == 200

    def close(self) -> None:
        self._session.close()
