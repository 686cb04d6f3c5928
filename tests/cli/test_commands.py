"""The `knm` command as users run it: exit codes, one-line errors, the JSON contract."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from knm.runtime.embedded import run_embedded


def knm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "knm", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        check=False,
    )


def plan(*paths: Path, nodes: int = 2) -> dict[str, Any]:
    args = [arg for path in paths for arg in ("-f", str(path))]
    result = knm("plan", *args, "--nodes", str(nodes), "--format", "json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_demo_prints_the_tables_and_exits_0() -> None:
    result = knm("demo")
    assert result.returncode == 0, result.stderr
    for title in ("Networks", "Address blocks", "Pods", "Services", "Policies", "Vrouters"):
        assert title in result.stdout
    for name in ("redis-master", "redis-slave", "frontend", "loadgen"):
        assert f"default/{name}" in result.stdout
    assert "default/frontend->default/service-redis-master" not in result.stdout  # a table
    assert result.stderr == ""


def test_demo_json_follows_the_seed(tmp_path: Path) -> None:
    result = knm("demo", "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    pods = {
        p["name"].rsplit("-", 1)[0] if p["name"] != "redis-master" else p["name"]: p
        for p in document["pods"]
    }
    assert len(document["pods"]) == 8
    assert {p["node"] for p in document["pods"]} == {"node-1", "node-2"}
    assert {b["node"] for b in document["blocks"]} == {"node-1", "node-2"}
    assert {(p["from_network"], p["to_network"]) for p in document["policies"]} == {
        ("default/loadgen", "default/service-frontend"),
        ("default/frontend", "default/service-redis-master"),
        ("default/redis-slave", "default/service-redis-master"),
    }
    master = next(s for s in document["services"] if s["name"] == "redis-master")
    assert master["backends"] == ["default/redis-master"]
    assert pods["redis-master"]["floating_ips"] == [master["vip"]]


def test_plan_json_is_sorted_and_identical_across_runs(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "knm" / "examples" / "k8petstore"
    first, second = plan(example, nodes=3), plan(example, nodes=3)
    assert first == second
    orders = {
        "networks": lambda n: (n["name"], n["kind"]),
        "blocks": lambda b: ipaddress.IPv4Network(b["cidr"]),
        "pods": lambda p: (p["namespace"], p["name"]),
        "services": lambda s: (s["namespace"], s["name"]),
        "policies": lambda p: p["name"],
    }
    for key, order in orders.items():
        assert first[key] == sorted(first[key], key=order), key
    for pod in first["pods"]:
        assert pod["floating_ips"] == sorted(pod["floating_ips"], key=ipaddress.IPv4Address)
    for service in first["services"]:
        assert service["backends"] == sorted(service["backends"])
    assert set(first) == {"networks", "blocks", "pods", "services", "policies"}
    assert set(first["pods"][0]) == {
        "namespace",
        "name",
        "uid",
        "node",
        "network",
        "ip",
        "floating_ips",
    }
    assert set(first["services"][0]) == {
        "namespace",
        "name",
        "vip",
        "public_ip",
        "network",
        "ports",
        "backends",
    }
    assert set(first["services"][0]["ports"][0]) == {"port", "protocol", "target_port"}
    assert set(first["policies"][0]) == {"name", "from_network", "to_network", "ports"}


BAD = [
    ("missing.yaml", None, "missing.yaml"),
    ("broken.yaml", "kind: Pod\nmetadata: {name: [\n", "broken.yaml"),
    ("broken.json", '{"kind": "Pod",', "broken.json"),
    (
        "noname.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: []}\n",
        "metadata.name",
    ),
    (
        "label.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {name: 'bad value'}}\n"
        "spec: {containers: []}\n",
        "bad value",
    ),
    (
        "selector.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
        "spec: {selector: [a, b], ports: [{port: 80}]}\n",
        "selector",
    ),
]


@pytest.mark.parametrize(("name", "content", "expected"), BAD)
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(
    tmp_path: Path, name: str, content: str | None, expected: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = knm("plan", "-f", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_an_exhausted_pool_is_bad_input_naming_the_pod(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "knm" / "examples" / "k8petstore"
    result = knm(
        "plan",
        "-f",
        str(example),
        "--nodes",
        "1",
        env={"KNM_POD_POOLS": "10.0.0.0/29", "KNM_BLOCK_PREFIX": "29"},
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert "no free address" in line
    assert "pod default/" in line


def test_an_invalid_setting_is_bad_input() -> None:
    result = knm("demo", env={"KNM_POD_POOLS": "10.0.0.0/33"})
    assert result.returncode == 2
    assert "pod_pools" in result.stderr


def test_a_runtime_failure_exits_1_without_a_traceback(tmp_path: Path) -> None:
    # A database path inside a file cannot be created: knm's failure, not the input's.
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = knm("demo", "--db", str(blocker / "knm.db"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_nothing_is_half_persisted_on_bad_input(tmp_path: Path) -> None:
    from knm.core.settings import Settings
    from services.watcher.errors import BadManifestError

    good = tmp_path / "good.yaml"
    good.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n")
    bad = tmp_path / "z-bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {}\n")
    database = tmp_path / "knm.db"
    with pytest.raises(BadManifestError):
        run_embedded(
            paths=[tmp_path],
            nodes=2,
            settings=Settings(),
            database_url=f"sqlite:///{database}",
        )
    # Validation comes before anything is published, so the database holds no pod.
    from knm.core.store.database import create_engine
    from services.allocator.report import plan_document

    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        assert plan_document(connection)["pods"] == []
    engine.dispose()


def test_state_prints_the_allocators_state_in_the_contract_of_plan(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    demo = knm("demo", "--db", str(database), "--format", "json")
    assert demo.returncode == 0, demo.stderr
    state = knm("state", "--format", "json", env={"KNM_DATABASE_URL": f"sqlite:///{database}"})
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout) == json.loads(demo.stdout)


def test_a_service_refuses_a_database_without_the_schema_saying_what_to_run(
    tmp_path: Path,
) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    for command in (["state"], ["allocator"]):
        result = knm(
            *command, env={"KNM_DATABASE_URL": empty, "KNM_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "knm db upgrade" in result.stderr.strip().splitlines()[-1]


def test_a_service_without_kafka_configured_says_so() -> None:
    result = knm("applier", env={"KNM_KAFKA_BOOTSTRAP": ""})
    assert result.returncode == 2
    assert "KNM_KAFKA_BOOTSTRAP" in result.stderr


LOAD_BALANCED = """
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: default}
spec:
  type: LoadBalancer
  selector: {name: shop}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: inside, namespace: default}
spec:
  selector: {name: shop}
  ports: [{port: 81}]
---
apiVersion: v1
kind: Pod
metadata: {name: shop, namespace: default, labels: {name: shop}}
spec: {containers: [{name: shop, image: shop}]}
"""


def test_plan_gives_load_balancers_a_public_address_from_the_public_pool(tmp_path: Path) -> None:
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(LOAD_BALANCED)
    services = {s["name"]: s for s in plan(manifest)["services"]}
    assert services["shop"]["public_ip"] == "10.1.0.1"
    assert services["inside"]["public_ip"] is None
    assert services["shop"]["backends"] == ["default/shop"]

    tables = knm(
        "plan", "-f", str(manifest), env={"KNM_PUBLIC_POOLS": "203.0.113.0/29", "COLUMNS": "250"}
    )
    assert tables.returncode == 0, tables.stderr
    rows = [line for line in tables.stdout.splitlines() if "203.0.113." in line]
    assert len(rows) == 1
    assert "default/shop" in rows[0]
    assert "203.0.113.1" in rows[0]
