"""knm's services as separate OS processes on the real Kafka and PostgreSQL, for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from knm.lab.backing import delete_topics
from knm.lab.processes import Child, Supervisor, free_port

__all__ = ["Fleet", "environment", "free_port", "knm", "wait_for"]


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


class Fleet:
    """The lab's supervisor, driven by hand: tests start, kill and stop members by name
    (nothing restarts on its own)."""

    def __init__(self, *, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._supervisor = Supervisor(env=env, logs=logs)

    @property
    def members(self) -> dict[str, Child]:
        return self._supervisor.children

    def add(self, name: str, *args: str) -> Child:
        return self._supervisor.add(name, *args)

    def start(self, name: str) -> None:
        self._supervisor.start(self.members[name])

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

    def stop_all(self) -> dict[str, int]:
        """Stop every member, then delete the run's topics: a broker that keeps every
        test's topics spends a part of a core on them, which later tests measure."""
        codes = {name: self.stop(name) for name in self.members}
        prefix, bootstrap = self._env.get("KNM_TOPIC_PREFIX"), self._env.get("KNM_KAFKA_BOOTSTRAP")
        if prefix and bootstrap:
            # A broker that is away has nothing to show this test's result either.
            with contextlib.suppress(KafkaError, OSError):
                delete_topics(bootstrap=bootstrap, prefix=prefix)
        return codes

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
