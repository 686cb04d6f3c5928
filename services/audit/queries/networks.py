"""The current model: networks, their members and the policies between them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import Connection, func, or_, select

from knm.core.domain.model import NetworkKind
from knm.core.store.schema import (
    FloatingIpRow,
    NetworkRow,
    PodRow,
    PolicyRow,
    ServiceRow,
    table,
)
from services.audit.models import (
    Member,
    MemberKind,
    NetworkDetail,
    NetworkSummary,
    Policy,
    PolicyPort,
)

networks = table(NetworkRow)
pods = table(PodRow)
services = table(ServiceRow)
floating = table(FloatingIpRow)
policies = table(PolicyRow)


def list_networks(
    connection: Connection, *, namespace: str | None, kind: NetworkKind | None
) -> list[NetworkSummary]:
    """Every network (one per collection and per service with a VIP), by name."""
    statement = select(networks)
    if namespace is not None:
        statement = statement.where(networks.c.namespace == namespace)
    if kind is not None:
        statement = statement.where(networks.c.kind == kind.value)
    found = connection.execute(statement.order_by(networks.c.name, networks.c.kind)).all()
    if not found:
        return []
    pod_members = _pods_per_network(connection, namespace=namespace)
    service_members = _service_members(connection, namespace=namespace)
    outbound, inbound = _policy_counts(connection)
    return [
        NetworkSummary(
            name=row.name,
            namespace=row.namespace,
            kind=NetworkKind(row.kind),
            subject=row.subject,
            members=(
                pod_members[row.name] if row.kind == NetworkKind.POD else service_members[row.name]
            ),
            policies_from=outbound[row.name],
            policies_to=inbound[row.name],
        )
        for row in found
    ]


def _pods_per_network(connection: Connection, *, namespace: str | None) -> Counter[str]:
    statement = select(pods.c.network, func.count()).where(pods.c.network.is_not(None))
    if namespace is not None:
        statement = statement.where(pods.c.namespace == namespace)
    # .all(): a result has keys(), which dict() would take for a mapping's.
    return Counter(dict(connection.execute(statement.group_by(pods.c.network)).all()))


def _service_members(connection: Connection, *, namespace: str | None) -> Counter[str]:
    """A service network's members: the service itself and its backends."""
    statement = (
        select(services.c.network, func.count(floating.c.pod_uid))
        .select_from(services.outerjoin(floating, floating.c.service_uid == services.c.uid))
        .where(services.c.network.is_not(None))
    )
    if namespace is not None:
        statement = statement.where(services.c.namespace == namespace)
    return Counter(
        {
            network: 1 + backends
            for network, backends in connection.execute(statement.group_by(services.c.network))
        }
    )


def _policy_counts(connection: Connection) -> tuple[Counter[str], Counter[str]]:
    outbound: Counter[str] = Counter()
    inbound: Counter[str] = Counter()
    for source, target in connection.execute(
        select(policies.c.from_network, policies.c.to_network)
    ):
        outbound[source] += 1
        inbound[target] += 1
    return outbound, inbound


def network_detail(
    connection: Connection, *, namespace: str, name: str, kind: NetworkKind | None
) -> NetworkDetail | None:
    """The network `<namespace>/<name>` with its members and policies. Should a pod
    network and a service network share the name, the pod network unless `kind` says."""
    full = f"{namespace}/{name}"
    statement = select(networks).where(networks.c.name == full)
    if kind is not None:
        statement = statement.where(networks.c.kind == kind.value)
    found = connection.execute(statement.order_by(networks.c.kind)).first()
    if found is None:
        return None
    network_kind = NetworkKind(found.kind)
    members = (
        _pod_members(connection, namespace=namespace, network=full)
        if network_kind is NetworkKind.POD
        else _service_network_members(connection, namespace=namespace, network=full)
    )
    rows = connection.execute(
        select(policies).where(or_(policies.c.from_network == full, policies.c.to_network == full))
    ).all()
    named = _service_names(connection, {row.service_uid for row in rows})
    found_policies = [_policy(row, named) for row in sorted(rows, key=lambda row: row.name)]
    return NetworkDetail(
        name=found.name,
        namespace=found.namespace,
        kind=network_kind,
        subject=found.subject,
        members=members,
        policies_from=[p for p in found_policies if p.from_network == full],
        policies_to=[p for p in found_policies if p.to_network == full],
    )


def _pod_members(connection: Connection, *, namespace: str, network: str) -> list[Member]:
    statement = (
        select(pods)
        .where(pods.c.namespace == namespace, pods.c.network == network)
        .order_by(pods.c.name, pods.c.uid)
    )
    return [_member(MemberKind.POD, row, ip=row.ip) for row in connection.execute(statement)]


def _service_network_members(
    connection: Connection, *, namespace: str, network: str
) -> list[Member]:
    found: list[Member] = []
    statement = select(services).where(
        services.c.namespace == namespace, services.c.network == network
    )
    for service in connection.execute(statement.order_by(services.c.name)):
        found.append(
            Member(
                kind=MemberKind.SERVICE,
                namespace=service.namespace,
                name=service.name,
                uid=service.uid,
                ip=service.vip,
                node=None,
            )
        )
        backends = (
            select(pods)
            .join(floating, floating.c.pod_uid == pods.c.uid)
            .where(floating.c.service_uid == service.uid)
            .order_by(pods.c.namespace, pods.c.name, pods.c.uid)
        )
        found.extend(
            _member(MemberKind.BACKEND, row, ip=row.ip) for row in connection.execute(backends)
        )
    return found


def _member(kind: MemberKind, row: Any, *, ip: str | None) -> Member:
    return Member(
        kind=kind, namespace=row.namespace, name=row.name, uid=row.uid, ip=ip, node=row.node
    )


def _service_names(connection: Connection, uids: set[str]) -> dict[str, str]:
    if not uids:
        return {}
    statement = select(services.c.uid, services.c.namespace, services.c.name).where(
        services.c.uid.in_(sorted(uids))
    )
    return {uid: f"{ns}/{name}" for uid, ns, name in connection.execute(statement)}


def _policy(row: Any, named: dict[str, str]) -> Policy:
    return Policy(
        name=row.name,
        from_network=row.from_network,
        to_network=row.to_network,
        service=named.get(row.service_uid),
        ports=[PolicyPort(port=p["port"], protocol=p["protocol"]) for p in row.ports],
    )
