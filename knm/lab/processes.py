"""The lab's pipeline as OS processes, restarted when they die, as a node's init would."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("knm.lab")

RESTART_DELAY = 0.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Child:
    name: str
    args: list[str]
    health_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    died_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.health_port}{path}"
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())

    def state(self) -> Any:
        return self.get("/state")

    def ready(self) -> bool:
        try:
            self.get("/readyz")
        except OSError:
            return False
        return True


@dataclass
class Supervisor:
    env: dict[str, str]
    logs: Path
    children: dict[str, Child] = field(default_factory=dict)

    def add(self, name: str, *args: str) -> Child:
        port = free_port()
        child = Child(
            name=name,
            args=[*args, "--health-port", str(port)],
            health_port=port,
            log=self.logs / f"{name}.log",
        )
        self.children[name] = child
        return child

    def start(self, child: Child) -> None:
        child.starts += 1
        with child.log.open("ab") as output:
            output.write(f"\n==== start {child.starts}\n".encode())
            output.flush()
            child.process = subprocess.Popen(
                [sys.executable, "-m", "knm", *child.args],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        child.died_at = None

    def start_all(self) -> None:
        for child in self.children.values():
            self.start(child)

    def supervise(self) -> None:
        """Restart what died, a moment after it died."""
        now = time.monotonic()
        for child in self.children.values():
            process = child.process
            if process is None or process.poll() is None:
                continue
            if child.died_at is None:
                child.died_at = now
                log.warning(
                    "process exited; restarting it",
                    extra={"child": child.name, "code": process.returncode},
                )
            elif now - child.died_at >= RESTART_DELAY:
                self.start(child)

    def stop_all(self, *, timeout: float = 30.0) -> None:
        for child in self.children.values():
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
