"""One TCP connection from inside a pod's namespace: who answered, or why nobody did."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from services.agent.linux.namespaces import NamespaceThread

ANSWERED = "answered"
REFUSED = "refused"
TIMED_OUT = "timed out"
UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    outcome: str
    answered_by: str | None = None
    detail: str = ""

    @property
    def connected(self) -> bool:
        return self.outcome == ANSWERED


def _connect(ip: str, port: int, timeout: float, source_port: int | None) -> ProbeResult:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        if source_port is not None:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            connection.bind(("0.0.0.0", source_port))
        try:
            connection.connect((ip, port))
            answer = connection.recv(512).decode(errors="replace").strip()
        except TimeoutError:
            return ProbeResult(TIMED_OUT)
        except ConnectionRefusedError:
            return ProbeResult(REFUSED)
        except OSError as error:
            if error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return ProbeResult(UNREACHABLE, detail=str(error))
            return ProbeResult(REFUSED, detail=str(error))
    if not answer:
        # Connected, then closed without a word: not one of the lab's responders.
        return ProbeResult(REFUSED, detail="closed without an answer")
    return ProbeResult(ANSWERED, answered_by=answer)


def probe(
    *, netns: str, ip: str, port: int, timeout: float = 1.0, source_port: int | None = None
) -> ProbeResult:
    """`source_port` fixes the flow's source port (the kernel picks one otherwise)."""
    thread = NamespaceThread(netns, name="probe")
    try:
        return thread.run(lambda: _connect(ip, port, timeout, source_port))
    finally:
        thread.close()
