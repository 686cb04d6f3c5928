"""The real control plane that `knm dev cluster up` (and `make test`) starts, for tests:
its kubeconfig, kubectl, and a TCP relay in front of the apiserver that a test can cut."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes import config as kube

from tests.conftest import required

EXAMPLE = Path(__file__).parents[3] / "knm" / "examples" / "k8petstore"


def kubeconfig() -> str:
    return required("KNM_KUBECONFIG")


def kubectl_binary() -> str:
    found = os.environ.get("KNM_KUBECTL") or shutil.which("kubectl")
    if not found:
        raise AssertionError("no kubectl: run `knm dev cluster up` (KNM_KUBECTL)")
    return found


def kubectl(*args: str, config: str | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(
        [kubectl_binary(), "--kubeconfig", config or kubeconfig(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def api_client(config: str | None = None) -> client.ApiClient:
    found: client.ApiClient = kube.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=config or kubeconfig()
    )
    return found


def fresh_namespace() -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


def delete_namespace(name: str) -> None:
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def pods(namespace: str) -> list[dict[str, Any]]:
    with api_client() as api:
        listed: Any = client.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(listed.data)["items"]
    return items


def running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return (
        status.get("phase") == "Running" and ready and not pod["metadata"].get("deletionTimestamp")
    )


def wait_running(namespace: str, count: int, *, timeout: float = 90.0) -> float:
    """Until exactly `count` pods exist in the namespace and all run; when that was seen."""
    deadline = time.monotonic() + timeout
    while True:
        found = pods(namespace)
        if len(found) == count and all(running(pod) for pod in found):
            return time.monotonic()
        if time.monotonic() > deadline:
            phases = [(p["metadata"]["name"], (p.get("status") or {}).get("phase")) for p in found]
            raise AssertionError(f"{namespace}: wanted {count} running pods, have {phases}")
        time.sleep(0.1)


def wait_for(condition: Callable[[], bool], *, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


class Relay:
    """A TCP relay to the apiserver. `cut()` drops every connection through it and refuses
    new ones until `restore()`: what a watcher sees when the network or apiserver fails."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                downstream.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {downstream, upstream}
                self.accepted += 1
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._drop(end)

    def _drop(self, end: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(end)
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            live = list(self._sockets)
        for end in live:
            self._drop(end)

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def kubeconfig(self, directory: Path) -> str:
        """A copy of the cluster's kubeconfig that goes through this relay."""
        text = Path(kubeconfig()).read_text()
        relayed = re.sub(
            r"server: https://127\.0\.0\.1:\d+", f"server: https://127.0.0.1:{self.port}", text
        )
        path = directory / "relayed.kubeconfig"
        path.write_text(relayed)
        return str(path)


@contextlib.contextmanager
def relay() -> Iterator[Relay]:
    server = yaml.safe_load(Path(kubeconfig()).read_text())["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    found = Relay((host, int(port)))
    try:
        yield found
    finally:
        found.close()
