"""A real lab for the tests: namespaces, the pipeline on the dev Kafka and PostgreSQL,
pods wired by the agents through knm-cni. Brought up and down with the CLI, as users do."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from knm.lab import record as lab_record
from tests.conftest import required


def knm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "knm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def example() -> Path:
    return Path(str(files("knm") / "examples" / "k8petstore"))


class Lab:
    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def record(self) -> lab_record.LabRecord:
        found = lab_record.load(self.name)
        assert found is not None, f"lab {self.name} has no record"
        return found

    def pod(self, prefix: str, *, node: str | None = None) -> lab_record.PodRecord:
        for pod in self.record.pods:
            if pod.key.startswith(prefix) and (node is None or pod.node == node):
                return pod
        raise AssertionError(f"no pod {prefix}* (on {node})")

    def service(self, key: str) -> lab_record.ServiceRecord:
        return next(s for s in self.record.services if s.key == key)

    def node(self, name: str) -> lab_record.NodeRecord:
        return next(n for n in self.record.nodes if n.name == name)

    def matrix(self) -> list[dict[str, Any]]:
        result = knm("lab", "matrix", "--name", self.name, "--format", "json")
        assert result.returncode in (0, 1), result.stderr
        probes: list[dict[str, Any]] = json.loads(result.stdout)["probes"]
        return probes


def bring_up(name: str, manifests: Path, *, nodes: int) -> Lab:
    # The lab's servers: the ones `make test` started (no fallback to starting them).
    required("KNM_DATABASE_URL")
    required("KNM_KAFKA_BOOTSTRAP")
    result = knm("lab", "up", "--name", name, "-f", str(manifests), "--nodes", str(nodes))
    if result.returncode != 0:
        log = lab_record.lab_dir(name) / "daemon.log"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        knm("lab", "down", "--name", name)
        pytest.fail(f"knm lab up failed: {result.stdout}{result.stderr}\n{tail}")
    return Lab(name)


def take_down(lab: Lab) -> None:
    result = knm("lab", "down", "--name", lab.name)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundled example the tests may edit."""
    folder = tmp_path_factory.mktemp("k8petstore")
    for source in example().iterdir():
        if source.suffix in (".yaml", ".yml", ".json"):
            shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture(scope="session")
def lab(manifests: Path) -> Iterator[Lab]:
    """The bundled example on three nodes."""
    running = bring_up(f"knmt-{secrets.token_hex(2)}", manifests, nodes=3)
    try:
        yield running
    finally:
        take_down(running)
