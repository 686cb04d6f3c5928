"""Readable tables of the network model, for people (the JSON form is for tools)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from services.agent.recording import NodeSummary


def _ports(ports: Sequence[dict[str, Any]], *, target: bool) -> str:
    parts = []
    for port in ports:
        text = f"{port['port']}/{port['protocol']}"
        if target and port.get("target_port") not in (None, port["port"]):
            text += f"→{port['target_port']}"
        parts.append(text)
    return ", ".join(parts)


def model_tables(document: dict[str, list[dict[str, Any]]]) -> list[Table]:
    networks = Table(title="Networks", title_justify="left")
    for column in ("network", "namespace", "kind"):
        networks.add_column(column)
    for network in document["networks"]:
        networks.add_row(network["name"], network["namespace"], network["kind"])

    blocks = Table(title="Address blocks", title_justify="left")
    blocks.add_column("block")
    blocks.add_column("node")
    for block in document["blocks"]:
        blocks.add_row(block["cidr"], block["node"])

    pods = Table(title="Pods", title_justify="left")
    for column in ("pod", "ip", "node", "network", "floating IPs"):
        pods.add_column(column)
    for pod in document["pods"]:
        pods.add_row(
            f"{pod['namespace']}/{pod['name']}",
            pod["ip"] or "-",
            pod["node"] or "-",
            pod["network"] or "-",
            ", ".join(pod["floating_ips"]) or "-",
        )

    services = Table(title="Services", title_justify="left")
    for column in ("service", "VIP", "public", "ports", "network", "backends"):
        services.add_column(column)
    for service in document["services"]:
        services.add_row(
            f"{service['namespace']}/{service['name']}",
            service["vip"] or "None (headless)",
            service.get("public_ip") or "-",
            _ports(service["ports"], target=True),
            service["network"] or "-",
            "\n".join(service["backends"]) or "-",
        )

    policies = Table(title="Policies (`uses`)", title_justify="left")
    for column in ("from network", "may reach", "ports"):
        policies.add_column(column)
    for policy in document["policies"]:
        policies.add_row(
            policy["from_network"], policy["to_network"], _ports(policy["ports"], target=False)
        )
    if not document["policies"]:
        policies.caption = "none: every collection reaches only itself"
    return [networks, blocks, pods, services, policies]


def print_tables(console: Console, tables: Sequence[Table]) -> None:
    for table in tables:
        console.print(table)
        console.print()


def node_table(nodes: Mapping[str, NodeSummary]) -> Table:
    table = Table(title="Vrouters (recording dataplane)", title_justify="left")
    for column in ("node", "pod interfaces", "overlay routes", "VIP maps", "allow rules"):
        table.add_column(column)
    for name in sorted(nodes):
        summary = nodes[name]
        table.add_row(
            name,
            str(summary.interface_count),
            str(summary.overlay_route_count),
            str(summary.vip_count),
            str(summary.allow_count),
        )
    return table
