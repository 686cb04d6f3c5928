"""What a batch's changes mean for the others: intents for the applier, commands for agents."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from knm.core.bus.protocol import OutgoingMessage
from knm.core.domain.addresses import host_ifname, mac_for
from knm.core.domain.model import (
    ContainerPort,
    NetworkSettings,
    PodRecord,
    ServicePort,
    ServiceRecord,
)
from knm.core.domain.state import ChangeSet, ClusterState
from knm.core.events.base import Envelope, Event, envelope
from knm.core.events.codec import encode
from knm.core.events.commands import AttachRequested, DetachRequested
from knm.core.events.facts import ContainerPortSpec, ServicePortSpec
from knm.core.events.intents import (
    AllocationFailed,
    Backend,
    BackendPort,
    BlockDeclared,
    BlockWithdrawn,
    InterfaceDeclared,
    InterfaceWithdrawn,
    NetworkDeclared,
    NetworkWithdrawn,
    NodeDeclared,
    NodeWithdrawn,
    PolicyDeclared,
    PolicyPortSpec,
    PolicyWithdrawn,
    PublicAddressDeclared,
    PublicAddressWithdrawn,
    ServiceDeclared,
    ServiceWithdrawn,
)
from knm.core.topics import Topics


def resolve_target_ports(
    service_ports: Iterable[ServicePort], pod_ports: Iterable[ContainerPort]
) -> tuple[BackendPort, ...]:
    """Each service port's port on this pod; a named target the pod lacks is left out."""
    named = {p.name: p.port for p in pod_ports if p.name}
    resolved = []
    for port in service_ports:
        target = port.target
        number = target if isinstance(target, int) else named.get(target)
        if number is not None:
            resolved.append(BackendPort(port=port.port, protocol=port.protocol, target_port=number))
    return tuple(resolved)


class _Messages:
    """Envelopes of one batch, all stamped with the batch's time and cause."""

    def __init__(self, *, at: datetime, causation_id: uuid.UUID | None) -> None:
        self.at = at
        self.causation_id = causation_id
        self.out: list[OutgoingMessage] = []

    def emit(self, topic: str, key: str, event: Event, *, route: str | None = None) -> None:
        """Queue `event` about `key`; `route` overrides the partition key (node commands)."""
        message: Envelope = envelope(
            event, key=key, occurred_at=self.at, causation_id=self.causation_id
        )
        self.out.append(OutgoingMessage(topic=topic, key=route or key, value=encode(message)))


class IntentWriter:
    """Turns a ChangeSet into the messages the allocator's outbox will publish."""

    def __init__(self, *, state: ClusterState, settings: NetworkSettings, topics: Topics) -> None:
        self._state = state
        self._settings = settings
        self._topics = topics

    def messages(
        self, changes: ChangeSet, *, at: datetime, causation_id: uuid.UUID | None
    ) -> list[OutgoingMessage]:
        batch = _Messages(at=at, causation_id=causation_id)
        emit = batch.emit
        intents = self._topics.intents
        state = self._state

        for change in changes.nodes:
            key = f"node/{change.key}"
            if change.after is not None:
                emit(intents, key, NodeDeclared(name=change.key, address=change.after.address))
            else:
                emit(intents, key, NodeWithdrawn(name=change.key))

        for block in changes.blocks:
            key = f"block/{block.key}"
            if block.after is not None:
                emit(intents, key, BlockDeclared(cidr=block.key, node=block.after.node))
            elif block.before is not None:
                emit(intents, key, BlockWithdrawn(cidr=block.key, node=block.before.node))

        for net in changes.networks:
            kind, name = net.key
            key = f"network/{kind}/{name}"
            if net.after is not None:
                emit(
                    intents,
                    key,
                    NetworkDeclared(
                        kind=kind,
                        name=name,
                        namespace=net.after.namespace,
                        subject=net.after.subject,
                    ),
                )
            elif net.before is not None:
                emit(
                    intents,
                    key,
                    NetworkWithdrawn(kind=kind, name=name, namespace=net.before.namespace),
                )

        # Interfaces: pods whose own record changed, or whose floating IPs did.
        pods: dict[str, PodRecord | None] = {}
        for pod_change in changes.pods:
            pods[pod_change.key] = pod_change.before
        for fip in changes.floating:
            pods.setdefault(fip.key[1], state.pods.get(fip.key[1]))
        for uid, before in pods.items():
            after = state.pods.get(uid)
            self._interface(batch, uid, before, after)

        # Services: their own changes, their floating IPs, and backends that moved.
        services: set[str] = {c.key for c in changes.services}
        services.update(f.key[0] for f in changes.floating)
        for pod_change in changes.pods:
            services.update(state.backend_of.get(pod_change.key, ()))
        for uid in sorted(services):
            record = state.services.get(uid)
            key = f"service/{uid}"
            if record is not None and record.vip is not None:
                emit(intents, key, self._service(record))
            else:
                gone = record or next((c.before for c in changes.services if c.key == uid), None)
                if gone is not None:
                    emit(
                        intents,
                        key,
                        ServiceWithdrawn(
                            uid=uid, namespace=gone.spec.namespace, name=gone.spec.name
                        ),
                    )

        # Public addresses, announced whenever their service's record changed: the
        # write-back converges on the newest, whatever it missed.
        for service_change in changes.services:
            key = f"public/{service_change.key}"
            was, now = service_change.before, service_change.after
            if now is not None and now.public_ip is not None:
                emit(
                    intents,
                    key,
                    PublicAddressDeclared(
                        uid=now.uid,
                        namespace=now.spec.namespace,
                        name=now.spec.name,
                        ip=str(now.public_ip),
                    ),
                )
            elif was is not None and was.public_ip is not None:
                emit(
                    intents,
                    key,
                    PublicAddressWithdrawn(
                        uid=was.uid,
                        namespace=was.spec.namespace,
                        name=was.spec.name,
                        ip=str(was.public_ip),
                    ),
                )

        for policy in changes.policies:
            key = f"policy/{policy.key}"
            if policy.after is not None:
                emit(
                    intents,
                    key,
                    PolicyDeclared(
                        name=policy.after.name,
                        from_network=policy.after.from_network,
                        to_network=policy.after.to_network,
                        service_uid=policy.after.service_uid,
                        ports=tuple(
                            PolicyPortSpec(port=p.port, protocol=p.protocol)
                            for p in policy.after.ports
                        ),
                    ),
                )
            else:
                emit(intents, key, PolicyWithdrawn(name=policy.key))

        for problem in changes.problems:
            emit(
                self._topics.errors,
                problem.subject,
                AllocationFailed(
                    code=problem.code, subject=problem.subject, message=problem.message
                ),
            )
        return batch.out

    def _interface(
        self, batch: _Messages, uid: str, before: PodRecord | None, after: PodRecord | None
    ) -> None:
        emit = batch.emit
        gateway = str(self._settings.gateway)
        key = f"interface/{uid}"
        had = before is not None and before.ip is not None
        has = after is not None and after.ip is not None
        moved = (
            had
            and has
            and before is not None
            and after is not None
            and (before.ip, before.spec.node, before.network)
            != (after.ip, after.spec.node, after.network)
        )
        if had and (not has or moved):
            assert before is not None
            assert before.spec.node is not None
            emit(
                self._topics.node_commands,
                key,
                DetachRequested(
                    node=before.spec.node,
                    pod_uid=uid,
                    namespace=before.spec.namespace,
                    name=before.spec.name,
                    ifname=host_ifname(uid),
                ),
                route=before.spec.node,
            )
        if not has:
            if had and before is not None and before.spec.node is not None:
                emit(
                    self._topics.intents,
                    key,
                    InterfaceWithdrawn(
                        pod_uid=uid,
                        namespace=before.spec.namespace,
                        name=before.spec.name,
                        node=before.spec.node,
                    ),
                )
            return
        assert after is not None
        assert after.ip is not None
        assert after.spec.node is not None
        assert after.network is not None
        floating = sorted(
            {
                str(fip.vip)
                for service_uid in self._state.backend_of.get(uid, ())
                if (fip := self._state.floating.get((service_uid, uid))) is not None
            }
        )
        emit(
            self._topics.intents,
            key,
            InterfaceDeclared(
                pod_uid=uid,
                namespace=after.spec.namespace,
                name=after.spec.name,
                node=after.spec.node,
                network=after.network,
                ip=str(after.ip),
                mac=mac_for(after.ip),
                gateway=gateway,
                ifname=host_ifname(uid),
                floating_ips=tuple(floating),
                ports=tuple(
                    ContainerPortSpec(port=p.port, protocol=p.protocol, name=p.name)
                    for p in after.spec.ports
                ),
            ),
        )
        if not had or moved:
            emit(
                self._topics.node_commands,
                key,
                AttachRequested(
                    node=after.spec.node,
                    pod_uid=uid,
                    namespace=after.spec.namespace,
                    name=after.spec.name,
                    network=after.network,
                    ip=str(after.ip),
                    mac=mac_for(after.ip),
                    gateway=gateway,
                    ifname=host_ifname(uid),
                ),
                route=after.spec.node,
            )

    def _service(self, record: ServiceRecord) -> ServiceDeclared:
        state = self._state
        backends = []
        for pod_uid in sorted(state.backends.get(record.uid, ())):
            pod = state.pods.get(pod_uid)
            if pod is None or pod.ip is None or pod.spec.node is None or pod.network is None:
                continue
            backends.append(
                Backend(
                    pod_uid=pod_uid,
                    namespace=pod.spec.namespace,
                    name=pod.spec.name,
                    ip=str(pod.ip),
                    node=pod.spec.node,
                    network=pod.network,
                    ports=resolve_target_ports(record.spec.ports, pod.spec.ports),
                )
            )
        return ServiceDeclared(
            uid=record.uid,
            namespace=record.spec.namespace,
            name=record.spec.name,
            vip=str(record.vip) if record.vip else None,
            network=record.network,
            ports=tuple(
                ServicePortSpec(
                    port=p.port, protocol=p.protocol, target_port=p.target_port, name=p.name
                )
                for p in record.spec.ports
            ),
            backends=tuple(backends),
            public_ip=str(record.public_ip) if record.public_ip else None,
        )
