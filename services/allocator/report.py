"""The allocator's state as the JSON contract of `knm plan` and `knm state`.

Every list is sorted, so identical input gives identical output.
"""

from __future__ import annotations

from collections import defaultdict
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from sqlalchemy import Connection, select

from knm.core.domain.labels import selects
from knm.core.store.schema import (
    BlockRow,
    FloatingIpRow,
    NetworkRow,
    PodRow,
    PolicyRow,
    ServiceRow,
    table,
)

Document = dict[str, list[dict[str, Any]]]


def _ip_order(value: str | None) -> tuple[int, int]:
    return (0, 0) if value is None else (1, int(IPv4Address(value)))


# Isolation that reads one snapshot across statements, per dialect.
_SNAPSHOT = {"postgresql": "REPEATABLE READ", "sqlite": "SERIALIZABLE"}


def plan_document(connection: Connection) -> Document:
    if not connection.in_transaction():
        # Several tables are read: from one snapshot, or an allocator's commit between two
        # reads shows a floating IP of a pod not read (half of a transaction).
        connection.execution_options(
            isolation_level=_SNAPSHOT.get(connection.dialect.name, "SERIALIZABLE")
        )
    pods = connection.execute(select(table(PodRow))).all()
    services = connection.execute(select(table(ServiceRow))).all()
    floating = connection.execute(select(table(FloatingIpRow))).all()

    vips_of_pod: dict[str, set[str]] = defaultdict(set)
    backends_of: dict[str, set[str]] = defaultdict(set)
    pod_names = {row.uid: f"{row.namespace}/{row.name}" for row in pods}
    for row in floating:
        vips_of_pod[row.pod_uid].add(row.vip)
        backends_of[row.service_uid].add(pod_names[row.pod_uid])

    # A service without a VIP holds no floating IPs; its backends follow its selector.
    by_namespace: dict[str, list[Any]] = defaultdict(list)
    for row in pods:
        if row.ip is not None and row.ready:
            by_namespace[row.namespace].append(row)
    for service in services:
        if service.vip is None:
            backends_of[service.uid] = {
                f"{row.namespace}/{row.name}"
                for row in by_namespace[service.namespace]
                if selects(service.selector, row.labels)
            }

    return {
        "networks": sorted(
            (
                {"name": row.name, "namespace": row.namespace, "kind": row.kind}
                for row in connection.execute(select(table(NetworkRow)))
            ),
            key=lambda n: (n["name"], n["kind"]),
        ),
        "blocks": sorted(
            (
                {"cidr": row.cidr, "node": row.node}
                for row in connection.execute(select(table(BlockRow)))
            ),
            key=lambda b: IPv4Network(b["cidr"]),
        ),
        "pods": sorted(
            (
                {
                    "namespace": row.namespace,
                    "name": row.name,
                    "uid": row.uid,
                    "node": row.node,
                    "network": row.network,
                    "ip": row.ip,
                    "floating_ips": sorted(vips_of_pod[row.uid], key=_ip_order),
                }
                for row in pods
            ),
            key=lambda p: (p["namespace"], p["name"]),
        ),
        "services": sorted(
            (
                {
                    "namespace": row.namespace,
                    "name": row.name,
                    "vip": row.vip,
                    # A LoadBalancer service's ingress address (status.loadBalancer.ingress).
                    "public_ip": row.public_ip,
                    "network": row.network,
                    "ports": [
                        {
                            "port": p["port"],
                            "protocol": p["protocol"],
                            "target_port": p["port"]
                            if p["target_port"] is None
                            else p["target_port"],
                        }
                        for p in row.ports
                    ],
                    "backends": sorted(backends_of[row.uid]),
                }
                for row in services
            ),
            key=lambda s: (s["namespace"], s["name"]),
        ),
        "policies": sorted(
            (
                {
                    "name": row.name,
                    "from_network": row.from_network,
                    "to_network": row.to_network,
                    "ports": [{"port": p["port"], "protocol": p["protocol"]} for p in row.ports],
                }
                for row in connection.execute(select(table(PolicyRow)))
            ),
            key=lambda p: p["name"],
        ),
    }
