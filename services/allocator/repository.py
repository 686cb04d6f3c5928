"""The allocator's model in the database: load it whole, save what a batch changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, select

from knm.core.domain.model import (
    AddressEvent,
    BlockRecord,
    ContainerPort,
    FloatingIpRecord,
    Namespace,
    NetworkKind,
    NetworkRecord,
    Node,
    OwnerRef,
    Pod,
    PodRecord,
    PolicyPort,
    PolicyRecord,
    QuarantineRecord,
    Service,
    ServicePort,
    ServiceRecord,
    TombstoneRecord,
)
from knm.core.domain.state import Change, ChangeSet, ClusterState
from knm.core.store.rows import delete_keys, insert_rows
from knm.core.store.schema import (
    AddressHistoryRow,
    Base,
    BlockRow,
    FloatingIpRow,
    NamespaceRow,
    NetworkRow,
    NodeRow,
    PodRow,
    PolicyRow,
    QuarantineRow,
    ServiceRow,
    TombstoneRow,
    table,
)

Row = dict[str, Any]
K = TypeVar("K")
V = TypeVar("V")


def _ip(value: str | None) -> IPv4Address | None:
    return IPv4Address(value) if value is not None else None


def _str(value: object | None) -> str | None:
    return str(value) if value is not None else None


# ---- records <-> rows --------------------------------------------------------------------


def namespace_row(record: Namespace) -> Row:
    return {"name": record.name, "uid": record.uid, "labels": dict(record.labels)}


def node_row(record: Node) -> Row:
    return {
        "name": record.name,
        "uid": record.uid,
        "address": record.address,
        "labels": dict(record.labels),
    }


def pod_row(record: PodRecord) -> Row:
    spec = record.spec
    return {
        "uid": spec.uid,
        "namespace": spec.namespace,
        "name": spec.name,
        "node": spec.node,
        "labels": dict(spec.labels),
        "annotations": dict(spec.annotations),
        "host_network": spec.host_network,
        "phase": spec.phase,
        "ready": spec.ready,
        "owners": [{"kind": o.kind, "name": o.name, "uid": o.uid} for o in spec.owners],
        "ports": [{"port": p.port, "protocol": p.protocol, "name": p.name} for p in spec.ports],
        "version": record.version,
        "collection": record.collection,
        "uses": [list(ref) for ref in record.uses],
        "network": record.network,
        "ip": _str(record.ip),
        "block": record.block,
    }


def pod_record(row: Any) -> PodRecord:
    return PodRecord(
        spec=Pod(
            uid=row.uid,
            namespace=row.namespace,
            name=row.name,
            node=row.node,
            labels=row.labels,
            annotations=row.annotations,
            host_network=row.host_network,
            phase=row.phase,
            ready=row.ready,
            owners=tuple(OwnerRef(o["kind"], o["name"], o["uid"]) for o in row.owners),
            ports=tuple(ContainerPort(p["port"], p["protocol"], p["name"]) for p in row.ports),
        ),
        version=row.version,
        collection=row.collection,
        uses=tuple((ns, name) for ns, name in row.uses),
        network=row.network,
        ip=_ip(row.ip),
        block=row.block,
    )


def service_row(record: ServiceRecord) -> Row:
    spec = record.spec
    return {
        "uid": spec.uid,
        "namespace": spec.namespace,
        "name": spec.name,
        "selector": dict(spec.selector) if spec.selector is not None else None,
        "ports": [
            {"port": p.port, "protocol": p.protocol, "target_port": p.target_port, "name": p.name}
            for p in spec.ports
        ],
        "cluster_ip": spec.cluster_ip,
        "headless": spec.headless,
        "type": spec.type,
        "version": record.version,
        "vip": _str(record.vip),
        "vip_source": record.vip_source,
        "network": record.network,
        "public_ip": _str(record.public_ip),
    }


def service_record(row: Any) -> ServiceRecord:
    return ServiceRecord(
        spec=Service(
            uid=row.uid,
            namespace=row.namespace,
            name=row.name,
            selector=row.selector,
            ports=tuple(
                ServicePort(p["port"], p["protocol"], p["target_port"], p["name"])
                for p in row.ports
            ),
            cluster_ip=row.cluster_ip,
            headless=row.headless,
            type=row.type,
        ),
        version=row.version,
        vip=_ip(row.vip),
        vip_source=row.vip_source,
        network=row.network,
        public_ip=_ip(row.public_ip),
    )


def block_row(record: BlockRecord) -> Row:
    return {"cidr": record.cidr, "pool": record.pool, "node": record.node}


def network_row(record: NetworkRecord) -> Row:
    return {
        "kind": record.kind.value,
        "name": record.name,
        "namespace": record.namespace,
        "subject": record.subject,
    }


def floating_row(record: FloatingIpRecord) -> Row:
    return {"service_uid": record.service_uid, "pod_uid": record.pod_uid, "vip": str(record.vip)}


def policy_row(record: PolicyRecord) -> Row:
    return {
        "name": record.name,
        "from_network": record.from_network,
        "to_network": record.to_network,
        "service_uid": record.service_uid,
        "ports": [{"port": p.port, "protocol": p.protocol} for p in record.ports],
    }


def quarantine_row(record: QuarantineRecord) -> Row:
    return {
        "ip": str(record.ip),
        "pool": record.pool,
        "released_at": record.released_at,
        "until": record.until,
    }


def tombstone_row(record: TombstoneRecord) -> Row:
    return {
        "uid": record.uid,
        "kind": record.kind,
        "namespace": record.namespace,
        "name": record.name,
        "deleted_at": record.deleted_at,
    }


def history_row(event: AddressEvent) -> Row:
    return {
        "ip": str(event.ip),
        "action": event.action.value,
        "kind": event.kind.value,
        "pool": event.pool,
        "namespace": event.namespace,
        "name": event.name,
        "uid": event.uid,
        "network": event.network,
        "node": event.node,
        "service": event.service,
        "at": event.at,
        "fact_id": event.fact_id,
    }


# ---- load and save -------------------------------------------------------------------------


def namespace_record(r: Any) -> Namespace:
    return Namespace(r.name, r.uid, r.labels)


def node_record(r: Any) -> Node:
    return Node(r.name, r.uid, r.address, r.labels)


def block_record(r: Any) -> BlockRecord:
    return BlockRecord(r.cidr, r.pool, r.node)


def network_record(r: Any) -> NetworkRecord:
    return NetworkRecord(NetworkKind(r.kind), r.name, r.namespace, r.subject)


def floating_record(r: Any) -> FloatingIpRecord:
    return FloatingIpRecord(IPv4Address(r.vip), r.service_uid, r.pod_uid)


def policy_record(r: Any) -> PolicyRecord:
    return PolicyRecord(
        r.name,
        r.from_network,
        r.to_network,
        r.service_uid,
        tuple(PolicyPort(p["port"], p["protocol"]) for p in r.ports),
    )


def quarantine_record(r: Any) -> QuarantineRecord:
    return QuarantineRecord(IPv4Address(r.ip), r.pool, r.released_at, r.until)


def tombstone_record(r: Any) -> TombstoneRecord:
    return TombstoneRecord(r.uid, r.kind, r.namespace, r.name, r.deleted_at)


def load_state(connection: Connection, *, collection_label: str) -> ClusterState:
    def rows(model: type[Base]) -> Sequence[Any]:
        return connection.execute(select(table(model))).all()

    state = ClusterState(collection_label=collection_label)
    state.load(
        namespaces=[namespace_record(r) for r in rows(NamespaceRow)],
        nodes=[node_record(r) for r in rows(NodeRow)],
        pods=[pod_record(r) for r in rows(PodRow)],
        services=[service_record(r) for r in rows(ServiceRow)],
        blocks=[block_record(r) for r in rows(BlockRow)],
        networks=[network_record(r) for r in rows(NetworkRow)],
        floating=[floating_record(r) for r in rows(FloatingIpRow)],
        policies=[policy_record(r) for r in rows(PolicyRow)],
        quarantine=[quarantine_record(r) for r in rows(QuarantineRow)],
        tombstones=[tombstone_record(r) for r in rows(TombstoneRow)],
    )
    return state


def _apply(
    connection: Connection,
    table: Table,
    changes: Sequence[Change[K, V]],
    *,
    to_row: Callable[[V], Row],
    key_of: Callable[[K], tuple[Any, ...]],
) -> None:
    """Write a batch's changes to one table: every changed key's old row goes, then the
    new rows arrive in one multi-row INSERT.

    Cheaper than an upsert per row (which drivers send one by one), and since all the
    deletions come first, a unique address moving from one row to another in the same
    batch never collides with itself.
    """
    delete_keys(connection, table, [key_of(c.key) for c in changes if c.before is not None])
    insert_rows(connection, table, [to_row(c.after) for c in changes if c.after is not None])


def save_changes(connection: Connection, changes: ChangeSet) -> None:
    def single(key: Any) -> tuple[Any, ...]:
        return (key,)

    def ip_key(key: IPv4Address) -> tuple[Any, ...]:
        return (str(key),)

    def pair(key: tuple[str, str]) -> tuple[Any, ...]:
        return key

    _apply(connection, table(NamespaceRow), changes.namespaces, to_row=namespace_row, key_of=single)
    _apply(connection, table(NodeRow), changes.nodes, to_row=node_row, key_of=single)
    _apply(connection, table(BlockRow), changes.blocks, to_row=block_row, key_of=single)
    _apply(connection, table(PodRow), changes.pods, to_row=pod_row, key_of=single)
    _apply(connection, table(ServiceRow), changes.services, to_row=service_row, key_of=single)
    _apply(connection, table(NetworkRow), changes.networks, to_row=network_row, key_of=pair)
    _apply(connection, table(FloatingIpRow), changes.floating, to_row=floating_row, key_of=pair)
    _apply(connection, table(PolicyRow), changes.policies, to_row=policy_row, key_of=single)
    _apply(
        connection,
        table(QuarantineRow),
        changes.quarantine,
        to_row=quarantine_row,
        key_of=ip_key,
    )
    _apply(connection, table(TombstoneRow), changes.tombstones, to_row=tombstone_row, key_of=single)
    insert_rows(connection, table(AddressHistoryRow), [history_row(e) for e in changes.history])
