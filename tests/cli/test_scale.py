"""`knm plan` over 10,000 pods and 500 services completes, and its answer is right."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from bench.synthetic import tiers, write
from tests.cli.test_commands import knm


@pytest.mark.slow
def test_plan_over_ten_thousand_pods_and_five_hundred_services(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "cluster.yaml", tiers(namespaces=10, tiers_per_namespace=50, replicas=20)
    )
    result = knm("plan", "-f", str(manifest), "--nodes", "50", "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    pods, services = document["pods"], document["services"]
    assert len(pods) == 10_000
    assert len(services) == 500
    ips = [ipaddress.IPv4Address(p["ip"]) for p in pods]
    assert len(set(ips)) == 10_000
    assert all(ip in ipaddress.IPv4Network("10.0.0.0/16") for ip in ips)
    assert all(len(s["backends"]) == 20 for s in services)
    assert all(len(p["floating_ips"]) == 1 for p in pods)
    # Tier i uses tier i+1 in each namespace: 49 relations in each of 10 namespaces.
    assert len(document["policies"]) == 490
    per_node: dict[str, int] = {}
    for pod in pods:
        per_node[pod["node"]] = per_node.get(pod["node"], 0) + 1
    assert sorted(per_node.values()) == [200] * 50
