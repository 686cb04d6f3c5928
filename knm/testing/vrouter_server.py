"""A vrouter agent port API test server: what a node's contrail-vrouter-agent serves on
port 9091 for registering interfaces, with the field checks of its request parser.

It is a test server: no vrouter can run on these machines. `restart()` stops it, forgets
every port and serves again on the same port, as a restarted vrouter agent does.

Served: `POST /port` (one port or a list), `GET /port/<uuid>`, `DELETE /port/<uuid>`,
`POST /syncports`, and `GET /ports` (this test server's own listing, for tests).
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
import uuid as uuidlib
from collections import Counter
from http.server import ThreadingHTTPServer
from typing import Any

from knm.testing.http import JsonHandler, ServedOnAThread

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# Port types: 0 a VM's interface, 1 a namespace's, 2 an ESXi port.
PORT_TYPES = (0, 1, 2)
FIELDS = (
    "type",
    "id",
    "instance-id",
    "display-name",
    "ip-address",
    "ip6-address",
    "rx-vlan-id",
    "tx-vlan-id",
    "vn-id",
    "vm-project-id",
    "mac-address",
    "system-name",
)


class PortError(ValueError):
    pass


def _uuid(port: dict[str, Any], key: str, *, empty: bool = False) -> None:
    value = port.get(key)
    if empty and value in ("", None):
        return
    try:
        uuidlib.UUID(str(value))
    except ValueError:
        raise PortError(f"{key} must be a uuid, not {value!r}") from None


def check_port(port: object) -> dict[str, Any]:
    """The port as the agent would take it, or PortError saying why not."""
    if not isinstance(port, dict):
        raise PortError("a port is a JSON object")
    missing = [k for k in FIELDS if k not in port]
    if missing:
        raise PortError(f"missing fields {missing}")
    unknown = sorted(set(port) - set(FIELDS))
    if unknown:
        raise PortError(f"unknown fields {unknown}")
    if port["type"] not in PORT_TYPES or isinstance(port["type"], bool):
        raise PortError(f"type must be one of {PORT_TYPES}")
    _uuid(port, "id")
    _uuid(port, "instance-id")
    _uuid(port, "vn-id")
    _uuid(port, "vm-project-id", empty=True)
    try:
        ipaddress.IPv4Address(port["ip-address"])
    except ValueError:
        raise PortError(f"ip-address must be IPv4, not {port['ip-address']!r}") from None
    if port["ip6-address"] not in ("", None):
        try:
            ipaddress.IPv6Address(port["ip6-address"])
        except ValueError:
            raise PortError("ip6-address must be IPv6 or empty") from None
    for key in ("rx-vlan-id", "tx-vlan-id"):
        if not isinstance(port[key], int) or isinstance(port[key], bool) or port[key] < -1:
            raise PortError(f"{key} must be an integer, -1 for none")
    if not isinstance(port["mac-address"], str) or not _MAC.match(port["mac-address"]):
        raise PortError(f"mac-address must be a MAC, not {port['mac-address']!r}")
    name = port["system-name"]
    if not isinstance(name, str) or not name or len(name) > 15:
        raise PortError("system-name must be an interface name (1 to 15 characters)")
    if not isinstance(port["display-name"], str):
        raise PortError("display-name must be a string")
    return dict(port)


class VrouterTestServer(ServedOnAThread):
    thread_name = "vrouter-test-server"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ports: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.restarts = 0
        self._lock = threading.Lock()
        self._host = host
        self._server = self._bind(host, port)

    def _bind(self, host: str, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer((host, port), _handler(self))
        server.daemon_threads = True
        return server

    def restart(self, *, downtime: float = 0.2) -> None:
        """Stop, forget every port, serve again on the same port after `downtime`."""
        port = int(self._server.server_address[1])
        self.close()
        with self._lock:
            self.ports.clear()
            self.restarts += 1
        time.sleep(downtime)
        self._server = self._bind(self._host, port)
        self.start()

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        with self._lock:
            if method == "POST" and parts == ["port"]:
                ports = body if isinstance(body, list) else [body]
                try:
                    checked = [check_port(p) for p in ports]
                except PortError as error:
                    return 400, str(error)
                for port in checked:
                    self.ports[port["id"]] = port
                self.calls["add"] += len(checked)
                return 200, {}
            if method == "POST" and parts == ["syncports"]:
                self.calls["sync"] += 1
                return 200, {}
            if method == "GET" and parts == ["ports"]:
                return 200, sorted(self.ports.values(), key=lambda p: str(p["id"]))
            if len(parts) == 2 and parts[0] == "port":
                found = self.ports.get(parts[1])
                if method == "GET":
                    self.calls["get"] += 1
                    return (200, found) if found is not None else (404, "no such port")
                if method == "DELETE":
                    self.calls["delete"] += 1
                    if found is None:
                        return 404, "no such port"
                    del self.ports[parts[1]]
                    return 200, {}
        return 404, f"{method} {path}: not served"


def _handler(server: VrouterTestServer) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def serve(self, method: str) -> None:
            raw = self.body()
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                self.answer(400, "body is not JSON")
                return
            self.answer(*server.handle(method, self.path, body))

    return Handler
