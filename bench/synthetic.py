"""Synthetic clusters for benchmarks and scale tests: tiers of ReplicationControllers, a
Service in front of each, each tier using the next one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def tiers(
    *, namespaces: int, tiers_per_namespace: int, replicas: int, prefix: str = "team"
) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for n in range(namespaces):
        namespace = f"{prefix}-{n}"
        documents.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for t in range(tiers_per_namespace):
            tier = f"tier-{t}"
            labels = {"name": tier}
            if t + 1 < tiers_per_namespace:
                labels["uses"] = f"tier-{t + 1}"
            documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "ReplicationController",
                    "metadata": {"name": tier, "namespace": namespace},
                    "spec": {
                        "replicas": replicas,
                        "selector": {"name": tier},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {
                                "containers": [
                                    {
                                        "name": "app",
                                        "image": "app:1",
                                        "ports": [{"name": "http", "containerPort": 8080}],
                                    }
                                ]
                            },
                        },
                    },
                }
            )
            documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": tier, "namespace": namespace},
                    "spec": {
                        "selector": {"name": tier},
                        "ports": [{"port": 80, "targetPort": "http"}],
                    },
                }
            )
    return documents


def write(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path
