"""knm's services as separate OS processes on the real Kafka and PostgreSQL, for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def knm(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "knm", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"knm {' '.join(args)} failed: {result.stderr}")
    return result


@dataclass
class Member:
    name: str
    args: list[str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def state(self) -> Any:
        url = f"http://127.0.0.1:{self.port}/state"
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


@dataclass
class Fleet:
    env: dict[str, str]
    logs: Path
    members: dict[str, Member] = field(default_factory=dict)

    def add(self, name: str, *args: str) -> Member:
        port = free_port()
        member = Member(
            name=name,
            args=[*args, "--health-port", str(port)],
            port=port,
            log=self.logs / f"{name}.log",
        )
        self.members[name] = member
        return member

    def start(self, name: str) -> None:
        member = self.members[name]
        member.starts += 1
        with member.log.open("ab") as log:
            log.write(f"\n==== start {member.starts}\n".encode())
            log.flush()
            member.process = subprocess.Popen(
                [sys.executable, "-m", "knm", *member.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, name: str) -> None:
        """SIGKILL: no chance to finish anything."""
        process = self.members[name].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)

    def stop(self, name: str) -> int:
        """SIGTERM, as an orchestrator stops a process; returns its exit code."""
        process = self.members[name].process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout=60)

    def alive(self, name: str) -> bool:
        process = self.members[name].process
        return process is not None and process.poll() is None

    def stop_all(self) -> dict[str, int]:
        return {name: self.stop(name) for name in self.members}

    def tail(self, lines: int = 15) -> str:
        out = []
        for member in self.members.values():
            text = (
                member.log.read_text(errors="replace").splitlines() if member.log.exists() else []
            )
            out.append(f"--- {member.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


def environment(*, database_url: str, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "KNM_DATABASE_URL": database_url,
            "KNM_TOPIC_PREFIX": prefix,
            "KNM_LOG_LEVEL": "INFO",
            # Small batches: more transactions, so a kill more often lands inside one.
            "KNM_BATCH_SIZE": "50",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def wait_for(condition: Any, *, timeout: float, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())
