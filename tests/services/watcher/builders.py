"""Manifests for tests: Kubernetes objects as dicts, and files that hold them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]


def write_yaml(path: Path, *documents: Manifest | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def write_json(path: Path, document: Manifest) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    return path


def metadata(
    name: str,
    *,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    uid: str | None = None,
) -> Manifest:
    meta: Manifest = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = labels
    if uid is not None:
        meta["uid"] = uid
    return meta


def pod_spec(*, node_name: str | None = None, ports: list[int] | None = None) -> Manifest:
    container: Manifest = {"name": "main", "image": "busybox"}
    if ports:
        container["ports"] = [{"containerPort": port} for port in ports]
    spec: Manifest = {"containers": [container]}
    if node_name is not None:
        spec["nodeName"] = node_name
    return spec


def namespace(name: str, *, labels: dict[str, str] | None = None) -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(name, labels=labels)}


def pod(
    name: str,
    *,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    node_name: str | None = None,
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(name, namespace=namespace, labels=labels),
        "spec": pod_spec(node_name=node_name),
    }


def template(labels: dict[str, str], *, node_name: str | None = None) -> Manifest:
    return {"metadata": {"labels": labels}, "spec": pod_spec(node_name=node_name)}


def rc(
    name: str,
    *,
    replicas: int | None = 1,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    node_name: str | None = None,
) -> Manifest:
    spec: Manifest = {
        "template": template(labels if labels is not None else {"name": name}, node_name=node_name)
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": metadata(name, namespace=namespace),
        "spec": spec,
    }


def apps(
    kind: str,
    name: str,
    *,
    replicas: int | None = 1,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    node_name: str | None = None,
) -> Manifest:
    """A Deployment, ReplicaSet, StatefulSet or DaemonSet (which has no replicas)."""
    pod_labels = labels if labels is not None else {"app": name}
    spec: Manifest = {
        "selector": {"matchLabels": dict(pod_labels)},
        "template": template(pod_labels, node_name=node_name),
    }
    if replicas is not None and kind != "DaemonSet":
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": metadata(name, namespace=namespace),
        "spec": spec,
    }


def service(
    name: str,
    *,
    namespace: str | None = None,
    selector: dict[str, str] | None = None,
    ports: list[Manifest] | None = None,
    **spec: Any,
) -> Manifest:
    body: Manifest = {"ports": ports if ports is not None else [{"port": 80}], **spec}
    if selector is not None:
        body["selector"] = selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, namespace=namespace),
        "spec": body,
    }
