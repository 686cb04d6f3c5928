"""What `knm-cni` and the agent say over the agent's unix socket.

One request per connection: the plugin writes one JSON object and a newline, the agent
answers with one JSON object and a newline, and closes. Standard library only.

    request: {"command": "ADD"|"CHECK"|"DEL", "container_id", "netns", "ifname",
              "pod": {"uid", "namespace", "name"}}
    reply:   {"ok": true, "interface": {"host_ifname", "ip", "mac", "gateway"} | null}
             {"ok": false, "code", "msg", "details"}     (codes as CNI's, see spec.py)
"""

from __future__ import annotations

import json
import socket
from typing import Any, NamedTuple

from services.agent.cni.spec import (
    ADD,
    AGENT_FAILED,
    CHECK,
    DEL,
    TRY_AGAIN_LATER,
    CniError,
    PodRef,
)

# A request or a reply is a few hundred bytes; anything far larger is not one.
MAX_MESSAGE = 64 * 1024
COMMANDS = (ADD, CHECK, DEL)


class ProtocolError(Exception):
    """A message that is not this protocol's."""


class Request(NamedTuple):
    command: str
    container_id: str
    netns: str
    ifname: str
    pod: PodRef

    @property
    def pod_key(self) -> str:
        """The pod as logs name it."""
        if self.pod.namespace and self.pod.name:
            return f"{self.pod.namespace}/{self.pod.name}"
        return self.pod.uid or f"container {self.container_id}"


class Attachment(NamedTuple):
    """The pod's interface as the agent wired it."""

    host_ifname: str
    ip: str
    mac: str
    gateway: str


def encode_request(request: Request) -> bytes:
    document = {
        "command": request.command,
        "container_id": request.container_id,
        "netns": request.netns,
        "ifname": request.ifname,
        "pod": {
            "uid": request.pod.uid,
            "namespace": request.pod.namespace,
            "name": request.pod.name,
        },
    }
    return json.dumps(document).encode() + b"\n"


def decode_request(line: bytes) -> Request:
    document = _object(line)
    pod = document.get("pod")
    if not isinstance(pod, dict):
        raise ProtocolError("the request names no pod")
    command = document.get("command")
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command!r}")
    return Request(
        command=str(command),
        container_id=_text(document, "container_id"),
        netns=_text(document, "netns"),
        ifname=_text(document, "ifname"),
        pod=PodRef(
            uid=_optional(pod, "uid"),
            namespace=_optional(pod, "namespace"),
            name=_optional(pod, "name"),
        ),
    )


def encode_reply(outcome: Attachment | CniError | None) -> bytes:
    if isinstance(outcome, CniError):
        document: dict[str, Any] = {
            "ok": False,
            "code": outcome.code,
            "msg": outcome.msg,
            "details": outcome.details,
        }
    else:
        document = {"ok": True, "interface": None}
        if outcome is not None:
            document["interface"] = {
                "host_ifname": outcome.host_ifname,
                "ip": outcome.ip,
                "mac": outcome.mac,
                "gateway": outcome.gateway,
            }
    return json.dumps(document).encode() + b"\n"


def decode_reply(line: bytes) -> Attachment | None:
    """The agent's answer; its error is raised as the `CniError` it carries."""
    document = _object(line)
    if document.get("ok") is not True:
        code = document.get("code")
        raise CniError(
            code if isinstance(code, int) else AGENT_FAILED,
            str(document.get("msg") or "the agent failed"),
            str(document.get("details") or ""),
        )
    interface = document.get("interface")
    if interface is None:
        return None
    if not isinstance(interface, dict):
        raise ProtocolError("the reply's interface is not an object")
    return Attachment(
        host_ifname=_text(interface, "host_ifname"),
        ip=_text(interface, "ip"),
        mac=_text(interface, "mac"),
        gateway=_text(interface, "gateway"),
    )


def read_line(connection: socket.socket) -> bytes:
    """One newline-terminated message (the newline dropped)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = connection.recv(4096)
        if not chunk:
            raise ProtocolError("the connection closed before a whole message")
        end = chunk.find(b"\n")
        if end >= 0:
            chunks.append(chunk[:end])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise ProtocolError("the message is too long")


def ask(path: str, request: Request, *, timeout: float) -> Attachment | None:
    """Send one request to the agent at `path` and return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(path)
            connection.sendall(encode_request(request))
            line = read_line(connection)
    except (FileNotFoundError, ConnectionRefusedError) as error:
        raise CniError(
            TRY_AGAIN_LATER,
            "the knm agent is not running on this node",
            f"{path}: {error.strerror}",
        ) from None
    except TimeoutError:
        raise CniError(
            TRY_AGAIN_LATER, "the knm agent did not answer in time", f"{path}: {timeout} s"
        ) from None
    except (OSError, ProtocolError) as error:
        raise CniError(
            AGENT_FAILED, "talking to the knm agent failed", f"{path}: {error}"
        ) from None
    try:
        return decode_reply(line)
    except ProtocolError as error:
        raise CniError(AGENT_FAILED, "the knm agent's answer is unreadable", str(error)) from None


def _object(line: bytes) -> dict[str, Any]:
    try:
        document = json.loads(line)
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ProtocolError("not a JSON object")
    return document


def _text(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{key} is missing or not a string")
    return value


def _optional(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{key} is not a string")
    return value or None
