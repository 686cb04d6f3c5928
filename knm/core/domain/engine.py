"""The seed's network rules, applied one observation at a time.

`NetworkModel.apply` is deterministic: the same observations in the same order give the
same state, whatever the batching around them, because every decision reads only the
state and the observation's own time. It does no I/O and reads no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network

from knm.core.domain.addresses import (
    PoolExhaustedError,
    block_at,
    block_count,
    first_free,
    pool_of,
)
from knm.core.domain.labels import (
    collection_of,
    pod_network_name,
    policy_name,
    selects,
    service_network_name,
    uses_of,
)
from knm.core.domain.model import (
    TERMINAL_PHASES,
    AddressAction,
    AddressEvent,
    AddressKind,
    BlockRecord,
    Cause,
    CollectionRef,
    FloatingIpRecord,
    Foreign,
    Namespace,
    NetworkKind,
    NetworkRecord,
    NetworkSettings,
    Node,
    Pod,
    PodRecord,
    PolicyPort,
    PolicyRecord,
    Problem,
    QuarantineRecord,
    Service,
    ServiceRecord,
    TombstoneRecord,
)
from knm.core.domain.state import ClusterState, is_backend

# ---- observations: what the allocator is told -----------------------------------------


@dataclass(frozen=True, slots=True)
class PodSeen:
    pod: Pod
    version: int | None = None


@dataclass(frozen=True, slots=True)
class PodGone:
    uid: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class ServiceSeen:
    service: Service
    version: int | None = None


@dataclass(frozen=True, slots=True)
class ServiceGone:
    uid: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class NamespaceSeen:
    namespace: Namespace


@dataclass(frozen=True, slots=True)
class NamespaceGone:
    name: str


@dataclass(frozen=True, slots=True)
class NodeSeen:
    node: Node


@dataclass(frozen=True, slots=True)
class NodeGone:
    name: str


Observation = (
    PodSeen
    | PodGone
    | ServiceSeen
    | ServiceGone
    | NamespaceSeen
    | NamespaceGone
    | NodeSeen
    | NodeGone
)


def wants_network(pod: Pod) -> bool:
    return not pod.host_network and pod.phase not in TERMINAL_PHASES


def wants_address(pod: Pod) -> bool:
    return wants_network(pod) and pod.node is not None


def wants_vip(service: Service) -> bool:
    return not service.headless and service.type != "ExternalName"


def wants_public(service: Service) -> bool:
    """A LoadBalancer service gets an address from the public pools, its ingress."""
    return service.type == "LoadBalancer" and wants_vip(service)


def _stale(current: int | None, incoming: int | None) -> bool:
    return current is not None and incoming is not None and incoming < current


class NetworkModel:
    """Applies observations to a ClusterState under a NetworkSettings."""

    def __init__(
        self,
        state: ClusterState,
        settings: NetworkSettings,
        *,
        owns: Callable[[str], bool] = lambda namespace: True,
    ) -> None:
        if state.collection_label != settings.collection_label:
            raise ValueError("state and settings disagree on the collection label")
        self.state = state
        self.settings = settings
        # Which namespaces this model decides for; the others' decisions it only absorbs.
        self.owns = owns
        self._dirty_collections: set[CollectionRef] = set()
        self._freed = False
        self._pod_pools = {str(pool): pool for pool in settings.pod_pools}

    def after_load(self) -> None:
        """After a load: everything of ours that wants an address and has none waits for
        one, and every policy of ours is checked against what the others did meanwhile."""
        state = self.state
        for record in sorted(state.services.values(), key=lambda r: r.uid):
            if not self.owns(record.spec.namespace):
                continue
            if wants_vip(record.spec) and record.vip is None:
                state.pending[("service", record.uid)] = None
            if wants_public(record.spec) and record.public_ip is None:
                state.pending[("public", record.uid)] = None
        for pod in sorted(state.pods.values(), key=lambda r: r.uid):
            if self.owns(pod.namespace) and wants_address(pod.spec) and pod.ip is None:
                state.pending[("pod", pod.uid)] = None
        self._dirty_collections |= set(state.members)
        self._settle_policies()

    def absorb(self, foreign: Foreign) -> None:
        """Take in what another allocator decided, keeping every index true, so that the
        next decisions here see its addresses, blocks, quarantine and services."""
        state = self.state
        for name, namespace in foreign.namespaces.items():
            state.namespaces.set(name, namespace, journal=False)
        for name, node in foreign.nodes.items():
            state.nodes.set(name, node, journal=False)
        for cidr, block in foreign.blocks.items():
            if block is None:
                state.delete_block(cidr, journal=False)
            else:
                state.put_block(block, journal=False)
        for key, network in foreign.networks.items():
            state.networks.set(key, network, journal=False)
        for key, fip in foreign.floating.items():
            state.floating.set(key, fip, journal=False)
        for name, policy in foreign.policies.items():
            if policy is None:
                state.delete_policy(name, journal=False)
            else:
                state.put_policy(policy, journal=False)
        for ip, held in foreign.quarantine.items():
            if held is None:
                if ip in state.quarantine:
                    self._freed = True
                    self._lower_address_hint(ip)
                    self._lower_vip_hint(ip)
                    self._lower_public_hint(ip)
                state.quarantine.unload(ip)
            else:
                state.quarantine.load(ip, held)
                state.quarantine_queue.append((held.until, ip))
        for uid, stone in foreign.tombstones.items():
            state.tombstones.set(uid, stone, journal=False)
            if stone is not None:
                state.tombstone_queue.append((stone.deleted_at, uid))
        self._touch_users(self._absorb_pods(foreign) | self._absorb_services(foreign))
        self._settle_policies()

    def _absorb_pods(self, foreign: Foreign) -> set[CollectionRef]:
        state = self.state
        touched: set[CollectionRef] = set()
        for uid, pod in foreign.pods.items():
            old = state.pods.get(uid)
            if old is not None and old.ip is not None and (pod is None or pod.ip != old.ip):
                self._freed = True
                self._lower_address_hint(old.ip)
            if pod is None:
                state.delete_pod(uid, journal=False)
            else:
                state.put_pod(pod, journal=False)
            self._touch_collection(old)
            self._touch_collection(pod)
            touched |= self._rebind(old, pod)
        return touched

    def _absorb_services(self, foreign: Foreign) -> set[CollectionRef]:
        state = self.state
        touched: set[CollectionRef] = set()
        for uid, service in foreign.services.items():
            old_service = state.services.get(uid)
            if old_service is not None:
                touched |= state.service_collections(old_service)
                if old_service.vip is not None and (
                    service is None or service.vip != old_service.vip
                ):
                    self._freed = True
                    self._lower_vip_hint(old_service.vip)
                if old_service.public_ip is not None and (
                    service is None or service.public_ip != old_service.public_ip
                ):
                    self._freed = True
                    self._lower_public_hint(old_service.public_ip)
            if service is None:
                for pod_uid in sorted(state.backends.get(uid, ())):
                    pod_record = state.pods.get(pod_uid)
                    if pod_record is not None:
                        touched |= state.remove_backend(uid, pod_record)
                state.delete_service(uid, journal=False)
            else:
                state.put_service(service, journal=False)
                touched |= self._bind_service(service) | state.service_collections(service)
        return touched

    def apply(self, observation: Observation, cause: Cause) -> None:
        self._expire(cause.at)
        match observation:
            case PodSeen(pod=pod, version=version):
                self._pod_seen(pod, version, cause)
            case PodGone(uid=uid, namespace=namespace, name=name):
                self._pod_gone(uid, namespace, name, cause)
            case ServiceSeen(service=service, version=version):
                self._service_seen(service, version, cause)
            case ServiceGone(uid=uid, namespace=namespace, name=name):
                self._service_gone(uid, namespace, name, cause)
            case NamespaceSeen(namespace=namespace):
                self._namespace_seen(namespace, cause)
            case NamespaceGone(name=name):
                self._namespace_gone(name, cause)
            case NodeSeen(node=node):
                self.state.nodes.put(node.name, node)
            case NodeGone(name=name):
                self.state.nodes.delete(name)
                self._release_idle_blocks(name)
        if self._freed and self.state.pending:
            self._retry_pending(cause)
        self._freed = False
        self._settle_policies()

    # ---- pods --------------------------------------------------------------------------

    def _pod_seen(self, pod: Pod, version: int | None, cause: Cause) -> None:
        state = self.state
        if pod.uid in state.tombstones:
            return
        old = state.pods.get(pod.uid)
        if old is not None and _stale(old.version, version):
            return
        collection = collection_of(pod, label=self.settings.collection_label)
        uses, bad = uses_of(pod, self.settings)
        for entry in bad:
            self._problem(
                "invalid-uses",
                f"pod {pod.namespace}/{pod.name}",
                f"ignored `uses` entry {entry!r}: "
                "expected <collection> or <namespace>/<collection>",
            )
        network = pod_network_name(pod.namespace, collection) if wants_network(pod) else None
        ip = block = None
        if old is not None and old.ip is not None:
            if wants_address(pod) and old.spec.node == pod.node:
                ip, block = old.ip, old.block
            else:
                self._address_released(old, cause)
        record = PodRecord(
            spec=pod,
            version=version,
            collection=collection,
            uses=uses,
            network=network,
            ip=ip,
            block=block,
        )
        self._touch_collection(old)
        self._touch_collection(record)
        state.put_pod(record)
        if old is not None:
            self._sync_pod_network(old)
            if old.spec.node and old.spec.node != pod.node:
                self._release_idle_blocks(old.spec.node)
        self._sync_pod_network(record)
        if wants_address(pod) and ip is None:
            self._assign_pod_address(pod.uid, cause)
        else:
            state.pending.pop(("pod", pod.uid), None)
        self._refresh_backends(old, state.pods.get(pod.uid), cause)

    def _pod_gone(self, uid: str, namespace: str, name: str, cause: Cause) -> None:
        state = self.state
        record = state.pods.get(uid)
        self._tombstone(uid, "Pod", namespace, name, cause)
        if record is None:
            return
        self._refresh_backends(record, None, cause)
        if record.ip is not None:
            self._address_released(record, cause)
        self._touch_collection(record)
        state.delete_pod(uid)
        state.pending.pop(("pod", uid), None)
        self._sync_pod_network(record)
        if record.spec.node:
            self._release_idle_blocks(record.spec.node)

    def _assign_pod_address(self, uid: str, cause: Cause) -> bool:
        state = self.state
        record = state.pods.get(uid)
        if record is None or record.spec.node is None:
            return False
        try:
            ip, block = self._allocate_in_node_blocks(record.spec.node, cause.at)
        except PoolExhaustedError:
            if ("pod", uid) not in state.pending:
                state.pending[("pod", uid)] = None
                pools = ", ".join(str(p) for p in self.settings.pod_pools)
                self._problem(
                    "pool-exhausted",
                    f"pod {record.spec.namespace}/{record.spec.name}",
                    f"no free address for node {record.spec.node} in pod pools {pools}",
                )
            return False
        state.pending.pop(("pod", uid), None)
        assigned = replace(record, ip=ip, block=block)
        state.put_pod(assigned)
        self._history(AddressAction.ALLOCATED, ip, AddressKind.POD, assigned, cause)
        return True

    def _allocate_in_node_blocks(self, node: str, now: datetime) -> tuple[IPv4Address, str]:
        state = self.state
        for block in state.node_blocks.get(node, ()):
            cidr = str(block)
            if state.block_used[cidr] >= block.num_addresses:
                continue
            record = state.blocks.get(cidr)
            assert record is not None
            pool = self._pod_pools.get(record.pool) or IPv4Network(record.pool)
            ip = self._first_free_in_block(block, pool, now)
            if ip is not None:
                return ip, cidr
        while True:
            block, pool = self._claim_block(node)
            ip = self._first_free_in_block(block, pool, now)
            if ip is not None:
                return ip, str(block)

    def _first_free_in_block(
        self, block: IPv4Network, pool: IPv4Network, now: datetime
    ) -> IPv4Address | None:
        state = self.state
        cidr = str(block)
        ip = first_free(
            block,
            pool=pool,
            taken=state.holders,
            quarantine=state.quarantine,
            now=now,
            start=state.address_hint.get(cidr, 0),
        )
        if ip is None:
            state.address_hint[cidr] = block.num_addresses
            return None
        state.address_hint[cidr] = int(ip) - int(block.network_address) + 1
        state.quarantine.delete(ip)
        return ip

    def _lower_address_hint(self, ip: IPv4Address) -> None:
        """An address of a pod pool became free again: its block's scan must see it."""
        if pool_of(ip, self.settings.pod_pools) is None:
            return
        size = 1 << (32 - self.settings.block_prefix)
        start = int(ip) & ~(size - 1)
        cidr = f"{IPv4Address(start)}/{self.settings.block_prefix}"
        hint = self.state.address_hint
        if cidr in hint:
            hint[cidr] = min(hint[cidr], int(ip) - start)

    def _claim_block(self, node: str) -> tuple[IPv4Network, IPv4Network]:
        state = self.state
        prefix = self.settings.block_prefix
        for pool in self.settings.pod_pools:
            count = block_count(pool, prefix)
            index = state.block_hint.get(pool, 0)
            while index < count:
                block = block_at(pool, prefix, index)
                index += 1
                if str(block) not in state.blocks:
                    state.block_hint[pool] = index
                    state.put_block(BlockRecord(cidr=str(block), pool=str(pool), node=node))
                    return block, pool
            state.block_hint[pool] = count
        raise PoolExhaustedError(node)

    def _release_idle_blocks(self, node: str) -> None:
        """A node that is gone gives its blocks back as soon as they hold no address."""
        state = self.state
        if node in state.nodes:
            return
        for block in list(state.node_blocks.get(node, ())):
            if state.block_used[str(block)] == 0:
                state.delete_block(str(block))

    def _sync_pod_network(self, record: PodRecord) -> None:
        if record.network is None:
            return
        state = self.state
        key = (NetworkKind.POD.value, record.network)
        if record.collection_ref in state.members:
            if key not in state.networks:
                state.networks.put(
                    key,
                    NetworkRecord(
                        kind=NetworkKind.POD,
                        name=record.network,
                        namespace=record.namespace,
                        subject=record.collection,
                    ),
                )
        else:
            state.networks.delete(key)

    # ---- services ----------------------------------------------------------------------

    def _service_seen(self, service: Service, version: int | None, cause: Cause) -> None:
        state = self.state
        if service.uid in state.tombstones:
            return
        old = state.services.get(service.uid)
        if old is not None and _stale(old.version, version):
            return
        touched = state.service_collections(old) if old is not None else set()
        vip, source = self._desired_vip(service, old, cause)
        if old is not None and old.vip is not None and old.vip != vip:
            for pod_uid in sorted(state.backends.get(service.uid, ())):
                self._detach_floating(old, pod_uid, cause)
            self._vip_released(old, cause)
        public = self._desired_public(service, old, cause)
        if old is not None and old.public_ip is not None and old.public_ip != public:
            self._public_released(old, cause)
        network = service_network_name(service.namespace, service.name) if vip else None
        record = ServiceRecord(
            spec=service,
            version=version,
            vip=vip,
            vip_source=source,
            network=network,
            public_ip=public,
        )
        state.put_service(record)
        if vip is not None and (old is None or old.vip != vip):
            self._history(AddressAction.ALLOCATED, vip, AddressKind.SERVICE, record, cause)
        if public is not None and (old is None or old.public_ip != public):
            self._history(AddressAction.ALLOCATED, public, AddressKind.PUBLIC, record, cause)
        self._sync_service_network(old, record)
        touched |= self._refresh_service_backends(record, cause)
        touched |= state.service_collections(record)
        self._touch_users(touched)

    def _desired_vip(
        self, service: Service, old: ServiceRecord | None, cause: Cause
    ) -> tuple[IPv4Address | None, str | None]:
        state = self.state
        key = ("service", service.uid)
        subject = f"service {service.namespace}/{service.name}"
        if not wants_vip(service):
            state.pending.pop(key, None)
            return None, None
        if service.cluster_ip:
            try:
                wanted = IPv4Address(service.cluster_ip)
            except ValueError:
                state.pending.pop(key, None)
                self._problem(
                    "unsupported-cluster-ip",
                    subject,
                    f"clusterIP {service.cluster_ip!r} is not an IPv4 address; no VIP given",
                )
                return None, None
            holder = state.holders.get(wanted)
            if holder is not None and holder != ("service", service.uid):
                if key not in state.pending:
                    state.pending[key] = None
                    self._problem(
                        "vip-conflict",
                        subject,
                        f"clusterIP {wanted} is already held by {self._describe(holder)}",
                    )
                return None, None
            state.pending.pop(key, None)
            # The cluster chose this address; a quarantine of ours does not apply to it.
            state.quarantine.delete(wanted)
            return wanted, "cluster"
        if old is not None and old.vip is not None and old.vip_source == "allocated":
            return old.vip, "allocated"
        try:
            vip = self._allocate_vip(cause.at)
        except PoolExhaustedError:
            if key not in state.pending:
                state.pending[key] = None
                pools = ", ".join(str(p) for p in self.settings.service_pools)
                self._problem("pool-exhausted", subject, f"no free VIP in service pools {pools}")
            return None, None
        state.pending.pop(key, None)
        return vip, "allocated"

    def _allocate_vip(self, now: datetime) -> IPv4Address:
        return self._allocate_in_pools(self.settings.service_pools, self.state.vip_hint, now)

    def _allocate_in_pools(
        self, pools: tuple[IPv4Network, ...], hint: dict[IPv4Network, int], now: datetime
    ) -> IPv4Address:
        """The lowest free address of the first pool that has one; `hint` per pool says
        below which offset nothing is free, and moves past the address handed out."""
        state = self.state
        for pool in pools:
            ip = first_free(
                pool,
                pool=pool,
                taken=state.holders,
                quarantine=state.quarantine,
                now=now,
                start=hint.get(pool, 0),
            )
            if ip is not None:
                hint[pool] = int(ip) - int(pool.network_address) + 1
                state.quarantine.delete(ip)
                return ip
            hint[pool] = pool.num_addresses
        raise PoolExhaustedError(", ".join(str(pool) for pool in pools))

    def _desired_public(
        self, service: Service, old: ServiceRecord | None, cause: Cause
    ) -> IPv4Address | None:
        """A LoadBalancer service keeps the public address it has, or gets the first free
        one; any other service has none (a type change away releases it)."""
        state = self.state
        key = ("public", service.uid)
        if not wants_public(service):
            state.pending.pop(key, None)
            return None
        if old is not None and old.public_ip is not None:
            return old.public_ip
        try:
            ip = self._allocate_in_pools(self.settings.public_pools, state.public_hint, cause.at)
        except PoolExhaustedError:
            if key not in state.pending:
                state.pending[key] = None
                pools = ", ".join(str(p) for p in self.settings.public_pools)
                self._problem(
                    "pool-exhausted",
                    f"service {service.namespace}/{service.name}",
                    f"no free public address in public pools {pools}",
                )
            return None
        state.pending.pop(key, None)
        return ip

    def _service_gone(self, uid: str, namespace: str, name: str, cause: Cause) -> None:
        state = self.state
        record = state.services.get(uid)
        self._tombstone(uid, "Service", namespace, name, cause)
        if record is None:
            return
        touched = state.service_collections(record)
        for pod_uid in sorted(state.backends.get(uid, ())):
            self._detach_floating(record, pod_uid, cause)
            pod = state.pods.get(pod_uid)
            if pod is not None:
                touched |= state.remove_backend(uid, pod)
        if record.vip is not None:
            self._vip_released(record, cause)
        if record.public_ip is not None:
            self._public_released(record, cause)
        state.delete_service(uid)
        state.pending.pop(("service", uid), None)
        state.pending.pop(("public", uid), None)
        self._sync_service_network(record, None)
        self._touch_users(touched)

    def _vip_released(self, record: ServiceRecord, cause: Cause) -> None:
        assert record.vip is not None
        self._history(AddressAction.RELEASED, record.vip, AddressKind.SERVICE, record, cause)
        if record.vip_source == "allocated":
            self._quarantine(record.vip, self.settings.service_pools, cause)
            self._lower_vip_hint(record.vip)
        self._freed = True

    def _public_released(self, record: ServiceRecord, cause: Cause) -> None:
        assert record.public_ip is not None
        self._history(AddressAction.RELEASED, record.public_ip, AddressKind.PUBLIC, record, cause)
        self._quarantine(record.public_ip, self.settings.public_pools, cause)
        self._lower_public_hint(record.public_ip)
        self._freed = True

    def _lower_vip_hint(self, ip: IPv4Address) -> None:
        """Keep the hint's promise: every service address below it is unavailable."""
        _lower_hint(self.state.vip_hint, ip, self.settings.service_pools)

    def _lower_public_hint(self, ip: IPv4Address) -> None:
        _lower_hint(self.state.public_hint, ip, self.settings.public_pools)

    def _sync_service_network(self, old: ServiceRecord | None, new: ServiceRecord | None) -> None:
        state = self.state
        if old is not None and old.network is not None and (new is None or new.network is None):
            state.networks.delete((NetworkKind.SERVICE.value, old.network))
        if new is not None and new.network is not None:
            key = (NetworkKind.SERVICE.value, new.network)
            if key not in state.networks:
                state.networks.put(
                    key,
                    NetworkRecord(
                        kind=NetworkKind.SERVICE,
                        name=new.network,
                        namespace=new.spec.namespace,
                        subject=new.spec.name,
                    ),
                )

    # ---- backends and floating IPs -----------------------------------------------------

    def _refresh_service_backends(self, record: ServiceRecord, cause: Cause) -> set[CollectionRef]:
        """Make the service's backends and floating IPs match its selector; all of them."""
        state = self.state
        before = set(state.backends.get(record.uid, ()))
        touched = self._bind_service(record)
        for pod_uid in sorted(before - state.backends.get(record.uid, set())):
            self._detach_floating(record, pod_uid, cause)
        for pod_uid in sorted(state.backends.get(record.uid, ())):
            pod = state.pods.get(pod_uid)
            assert pod is not None
            self._attach_floating(record, pod, cause)
        return touched

    def _bind_service(self, record: ServiceRecord) -> set[CollectionRef]:
        """Index the service's backends as its selector finds them (no floating IPs)."""
        state = self.state
        touched: set[CollectionRef] = set()
        wanted = set()
        for pod_uid in state.select_pods(record):
            pod = state.pods.get(pod_uid)
            if pod is not None and is_backend(pod):
                wanted.add(pod_uid)
        current = set(state.backends.get(record.uid, ()))
        for pod_uid in sorted(current - wanted):
            pod = state.pods.get(pod_uid)
            assert pod is not None
            touched |= state.remove_backend(record.uid, pod)
        for pod_uid in sorted(wanted - current):
            pod = state.pods.get(pod_uid)
            assert pod is not None
            touched |= state.add_backend(record.uid, pod)
        return touched

    def _refresh_backends(self, old: PodRecord | None, new: PodRecord | None, cause: Cause) -> None:
        """Re-decide, for one pod, which services it stands behind, and its floating IPs."""
        state = self.state
        pod = new or old
        assert pod is not None
        before = set(state.backend_of.get(pod.uid, ()))
        self._touch_users(self._rebind(old, new))
        after = state.backend_of.get(pod.uid, set())
        for service_uid in sorted(before | after):
            service = state.services.get(service_uid)
            if service is None:
                continue
            if service_uid in after:
                assert new is not None
                self._attach_floating(service, new, cause)
            else:
                self._detach_floating(service, pod.uid, cause)

    def _rebind(self, old: PodRecord | None, new: PodRecord | None) -> set[CollectionRef]:
        """Index which services one pod stands behind (no floating IPs)."""
        state = self.state
        pod = new or old
        if pod is None:
            return set()
        namespace = pod.namespace
        candidates: set[str] = set(state.backend_of.get(pod.uid, ()))
        for record in (old, new):
            if record is not None:
                for key, value in record.spec.labels.items():
                    candidates |= state.services_by_item.get((namespace, key, value), set())
        touched: set[CollectionRef] = set()
        for service_uid in sorted(candidates):
            service = state.services.get(service_uid)
            if service is None:
                continue
            was = pod.uid in state.backends.get(service_uid, ())
            now = (
                new is not None
                and is_backend(new)
                and selects(service.spec.selector, new.spec.labels)
            )
            if was:
                assert old is not None
                touched |= state.remove_backend(service_uid, old)
            if now:
                assert new is not None
                touched |= state.add_backend(service_uid, new)
        return touched

    def _attach_floating(self, service: ServiceRecord, pod: PodRecord, cause: Cause) -> None:
        if service.vip is None:
            return
        state = self.state
        key = (service.uid, pod.uid)
        current = state.floating.get(key)
        if current is not None and current.vip == service.vip:
            return
        if current is not None:
            self._detach_floating(service, pod.uid, cause)
        state.floating.put(
            key, FloatingIpRecord(vip=service.vip, service_uid=service.uid, pod_uid=pod.uid)
        )
        self._floating_history(AddressAction.ALLOCATED, service.vip, service, pod, cause)

    def _detach_floating(self, service: ServiceRecord, pod_uid: str, cause: Cause) -> None:
        state = self.state
        key = (service.uid, pod_uid)
        current = state.floating.get(key)
        if current is None:
            return
        state.floating.delete(key)
        pod = state.pods.get(pod_uid)
        if pod is not None:
            self._floating_history(AddressAction.RELEASED, current.vip, service, pod, cause)

    # ---- namespaces --------------------------------------------------------------------

    def _namespace_seen(self, namespace: Namespace, cause: Cause) -> None:
        current = self.state.namespaces.get(namespace.name)
        if current is not None and current.uid != namespace.uid:
            # Deleted and recreated while we were not looking: the old one's objects are gone.
            self._namespace_gone(namespace.name, cause)
        self.state.namespaces.put(namespace.name, namespace)

    def _namespace_gone(self, name: str, cause: Cause) -> None:
        state = self.state
        services = [state.services.get(uid) for uid in state.services_by_namespace.get(name, ())]
        for service in sorted((s for s in services if s), key=lambda s: s.spec.name):
            self._service_gone(service.uid, name, service.spec.name, cause)
        pods = [state.pods.get(uid) for uid in state.pods_by_namespace.get(name, ())]
        for pod in sorted((p for p in pods if p), key=lambda p: p.spec.name):
            self._pod_gone(pod.uid, name, pod.spec.name, cause)
        state.namespaces.delete(name)

    # ---- policies ----------------------------------------------------------------------

    def _touch_collection(self, record: PodRecord | None) -> None:
        if record is not None:
            self._dirty_collections.add(record.collection_ref)

    def _touch_users(self, refs: set[CollectionRef]) -> None:
        for ref in refs:
            self._dirty_collections |= self.state.users.get(ref, set())

    def _settle_policies(self) -> None:
        state = self.state
        dirty, self._dirty_collections = self._dirty_collections, set()
        for ref in sorted(dirty):
            if not self.owns(ref[0]):
                continue
            network = pod_network_name(*ref)
            desired = self._desired_policies(ref)
            for name in sorted(state.policies_from.get(network, set()) - desired.keys()):
                state.delete_policy(name)
            for name, record in sorted(desired.items()):
                if state.policies.get(name) != record:
                    state.put_policy(record)

    def _desired_policies(self, ref: CollectionRef) -> dict[str, PolicyRecord]:
        state = self.state
        if ref not in state.members:
            return {}
        from_network = pod_network_name(*ref)
        desired: dict[str, PolicyRecord] = {}
        for target in sorted(state.uses_counts.get(ref, ())):
            if target == ref:
                continue
            for service_uid in sorted(state.collection_services.get(target, ())):
                service = state.services.get(service_uid)
                if service is None or service.network is None:
                    continue
                name = policy_name(from_network, service.network)
                ports = sorted(
                    {PolicyPort(port=p.port, protocol=p.protocol) for p in service.spec.ports},
                    key=lambda p: (p.port, p.protocol),
                )
                desired[name] = PolicyRecord(
                    name=name,
                    from_network=from_network,
                    to_network=service.network,
                    service_uid=service_uid,
                    ports=tuple(ports),
                )
        return desired

    # ---- pending, quarantine, tombstones -----------------------------------------------

    def _retry_pending(self, cause: Cause) -> None:
        state = self.state
        for kind, uid in list(state.pending):
            if kind == "pod":
                before = state.pods.get(uid)
                if before is None or not wants_address(before.spec):
                    state.pending.pop((kind, uid), None)
                elif self._assign_pod_address(uid, cause):
                    self._refresh_backends(before, state.pods.get(uid), cause)
            else:
                service = state.services.get(uid)
                if service is None:
                    state.pending.pop((kind, uid), None)
                else:
                    self._service_seen(service.spec, service.version, cause)

    def _address_released(self, record: PodRecord, cause: Cause) -> None:
        assert record.ip is not None
        self._history(AddressAction.RELEASED, record.ip, AddressKind.POD, record, cause)
        self._quarantine(record.ip, self.settings.pod_pools, cause)
        self._lower_address_hint(record.ip)
        self._freed = True

    def _quarantine(self, ip: IPv4Address, pools: tuple[IPv4Network, ...], cause: Cause) -> None:
        if not self.settings.quarantine:
            return
        pool = pool_of(ip, pools)
        until = cause.at + self.settings.quarantine
        self.state.quarantine.put(
            ip,
            QuarantineRecord(ip=ip, pool=str(pool), released_at=cause.at, until=until),
        )
        self.state.quarantine_queue.append((until, ip))

    def _tombstone(self, uid: str, kind: str, namespace: str, name: str, cause: Cause) -> None:
        state = self.state
        if uid in state.tombstones:
            return
        state.tombstones.put(
            uid,
            TombstoneRecord(
                uid=uid, kind=kind, namespace=namespace, name=name, deleted_at=cause.at
            ),
        )
        state.tombstone_queue.append((cause.at, uid))

    def _expire(self, now: datetime) -> None:
        state = self.state
        queue = state.quarantine_queue
        while queue and queue[0][0] <= now:
            _, ip = queue.popleft()
            held = state.quarantine.get(ip)
            if held is not None and held.until <= now:
                state.quarantine.delete(ip)
                self._freed = True
                self._lower_vip_hint(ip)
                self._lower_public_hint(ip)
                self._lower_address_hint(ip)
        horizon = now - self.settings.tombstone_retention
        stones = state.tombstone_queue
        while stones and stones[0][0] <= horizon:
            _, uid = stones.popleft()
            stone = state.tombstones.get(uid)
            if stone is not None and stone.deleted_at <= horizon:
                state.tombstones.delete(uid)

    # ---- history and problems ----------------------------------------------------------

    def _history(
        self,
        action: AddressAction,
        ip: IPv4Address,
        kind: AddressKind,
        holder: PodRecord | ServiceRecord,
        cause: Cause,
    ) -> None:
        pools = {
            AddressKind.POD: self.settings.pod_pools,
            AddressKind.PUBLIC: self.settings.public_pools,
        }.get(kind, self.settings.service_pools)
        pool = pool_of(ip, pools)
        node = holder.spec.node if isinstance(holder, PodRecord) else None
        self.state.history.append(
            AddressEvent(
                action=action,
                ip=ip,
                kind=kind,
                pool=str(pool) if pool else None,
                namespace=holder.spec.namespace,
                name=holder.spec.name,
                uid=holder.spec.uid,
                network=holder.network,
                node=node,
                service=None,
                at=cause.at,
                fact_id=cause.fact_id,
            )
        )

    def _floating_history(
        self,
        action: AddressAction,
        vip: IPv4Address,
        service: ServiceRecord,
        pod: PodRecord,
        cause: Cause,
    ) -> None:
        self.state.history.append(
            AddressEvent(
                action=action,
                ip=vip,
                kind=AddressKind.FLOATING,
                pool=str(pool) if (pool := pool_of(vip, self.settings.service_pools)) else None,
                namespace=pod.spec.namespace,
                name=pod.spec.name,
                uid=pod.spec.uid,
                network=pod.network,
                node=pod.spec.node,
                service=f"{service.spec.namespace}/{service.spec.name}",
                at=cause.at,
                fact_id=cause.fact_id,
            )
        )

    def _problem(self, code: str, subject: str, message: str) -> None:
        self.state.problems.append(Problem(code=code, subject=subject, message=message))

    def _describe(self, holder: tuple[str, str]) -> str:
        kind, uid = holder
        record = (self.state.pods if kind == "pod" else self.state.services).get(uid)
        if record is None:
            return f"{kind} {uid}"
        return f"{kind} {record.spec.namespace}/{record.spec.name}"


def _lower_hint(
    hint: dict[IPv4Network, int], ip: IPv4Address, pools: tuple[IPv4Network, ...]
) -> None:
    pool = pool_of(ip, pools)
    if pool is not None:
        index = int(ip) - int(pool.network_address)
        hint[pool] = min(hint.get(pool, 0), index)
