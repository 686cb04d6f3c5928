"""Each lab pod's listeners: on every port the pod should serve, answer one line with
the pod's `<namespace>/<name>` and close. One thread serves every pod: a socket stays in
the namespace it was made in, so only making it needs to happen inside the pod."""

from __future__ import annotations

import contextlib
import functools
import logging
import selectors
import socket
import threading
from collections.abc import Iterable

from services.agent.linux.namespaces import NamespaceThread

log = logging.getLogger("knm.lab")


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(128)
    listener.setblocking(False)
    return listener


class Responders:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        # pod key -> (namespace, its listeners)
        self._pods: dict[str, tuple[str, list[socket.socket]]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    def serve(self, pod: str, *, netns: str, ports: Iterable[int]) -> None:
        """Listen for `pod` (its key, `<ns>/<name>`) inside `netns` on `ports`."""
        self.stop(pod)
        thread = NamespaceThread(netns, name="responder")
        try:
            listeners = [
                thread.run(functools.partial(_listen, port)) for port in sorted(set(ports))
            ]
        finally:
            thread.close()
        with self._lock:
            self._pods[pod] = (netns, listeners)
            for listener in listeners:
                self._selector.register(listener, selectors.EVENT_READ, pod)
        self._wake_w.send(b"x")

    def stop(self, pod: str) -> None:
        with self._lock:
            _, listeners = self._pods.pop(pod, ("", []))
            for listener in listeners:
                self._selector.unregister(listener)
                listener.close()

    def serving(self) -> dict[str, list[int]]:
        with self._lock:
            return {
                pod: sorted(s.getsockname()[1] for s in listeners)
                for pod, (_, listeners) in self._pods.items()
            }

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                if key.data is None:
                    self._wake_r.recv(4096)
                    continue
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                try:
                    connection, _ = listener.accept()
                except (BlockingIOError, OSError):
                    continue
                with connection:
                    connection.setblocking(True)
                    connection.settimeout(1.0)
                    with contextlib.suppress(OSError):
                        connection.sendall(f"{key.data}\n".encode())

    def close(self) -> None:
        for pod in list(self._pods):
            self.stop(pod)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
