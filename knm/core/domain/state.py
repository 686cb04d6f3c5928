"""The allocator's working state: journaled tables of records plus indexes derived from them.

Tables remember the value each key had before the first change since the last
`take_changes()`, so a batch's results (rows to write, intents to emit) are the
difference between two states, whatever happened in between. Indexes are never
persisted: `load` rebuilds them from the records.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Generic, TypeVar

from knm.core.domain.addresses import block_index
from knm.core.domain.model import (
    AddressEvent,
    BlockRecord,
    CollectionRef,
    FloatingIpRecord,
    Namespace,
    NetworkKey,
    NetworkRecord,
    Node,
    PodRecord,
    PolicyRecord,
    Problem,
    QuarantineRecord,
    ServiceRecord,
    TombstoneRecord,
)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Change(Generic[K, V]):
    key: K
    before: V | None
    after: V | None


class Table(Generic[K, V]):
    """A dict that journals the first prior value of every key it changes."""

    __slots__ = ("_journal", "_rows")

    def __init__(self) -> None:
        self._rows: dict[K, V] = {}
        self._journal: dict[K, V | None] = {}

    def get(self, key: K) -> V | None:
        return self._rows.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[K]:
        return iter(self._rows)

    def values(self) -> Iterator[V]:
        return iter(self._rows.values())

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(self._rows.items())

    def put(self, key: K, value: V) -> None:
        if key not in self._journal:
            self._journal[key] = self._rows.get(key)
        self._rows[key] = value

    def delete(self, key: K) -> None:
        if key not in self._rows:
            return
        if key not in self._journal:
            self._journal[key] = self._rows[key]
        del self._rows[key]

    def load(self, key: K, value: V) -> None:
        """Set without journaling: the value is already stored (loaded or absorbed)."""
        self._rows[key] = value

    def unload(self, key: K) -> None:
        """Remove without journaling: the row is already gone from the store."""
        self._rows.pop(key, None)

    def set(self, key: K, value: V | None, *, journal: bool) -> None:
        if value is None:
            (self.delete if journal else self.unload)(key)
        else:
            (self.put if journal else self.load)(key, value)

    def take_changes(self) -> list[Change[K, V]]:
        changes = [
            Change(key, before, after)
            for key, before in self._journal.items()
            if before != (after := self._rows.get(key))
        ]
        self._journal.clear()
        return changes

    @property
    def dirty(self) -> bool:
        return bool(self._journal)


def _add(index: dict[K, set[str]], key: K, member: str) -> None:
    index[key].add(member)


def _discard(index: dict[K, set[str]], key: K, member: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]


@dataclass
class ChangeSet:
    """Everything one batch changed: row differences, history lines, problems."""

    namespaces: list[Change[str, Namespace]] = field(default_factory=list)
    nodes: list[Change[str, Node]] = field(default_factory=list)
    pods: list[Change[str, PodRecord]] = field(default_factory=list)
    services: list[Change[str, ServiceRecord]] = field(default_factory=list)
    blocks: list[Change[str, BlockRecord]] = field(default_factory=list)
    networks: list[Change[NetworkKey, NetworkRecord]] = field(default_factory=list)
    floating: list[Change[tuple[str, str], FloatingIpRecord]] = field(default_factory=list)
    policies: list[Change[str, PolicyRecord]] = field(default_factory=list)
    quarantine: list[Change[IPv4Address, QuarantineRecord]] = field(default_factory=list)
    tombstones: list[Change[str, TombstoneRecord]] = field(default_factory=list)
    history: list[AddressEvent] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in self.__dataclass_fields__)


class ClusterState:
    """Records (the model) and the indexes that keep each decision proportional to its scope."""

    def __init__(self, *, collection_label: str) -> None:
        self.collection_label = collection_label
        self.namespaces: Table[str, Namespace] = Table()
        self.nodes: Table[str, Node] = Table()
        self.pods: Table[str, PodRecord] = Table()
        self.services: Table[str, ServiceRecord] = Table()
        self.blocks: Table[str, BlockRecord] = Table()
        self.networks: Table[NetworkKey, NetworkRecord] = Table()
        self.floating: Table[tuple[str, str], FloatingIpRecord] = Table()
        self.policies: Table[str, PolicyRecord] = Table()
        self.quarantine: Table[IPv4Address, QuarantineRecord] = Table()
        self.tombstones: Table[str, TombstoneRecord] = Table()
        self.history: list[AddressEvent] = []
        self.problems: list[Problem] = []

        # address -> ("pod" | "service", uid)
        self.holders: dict[IPv4Address, tuple[str, str]] = {}
        self.node_blocks: dict[str, list[IPv4Network]] = defaultdict(list)
        self.block_used: Counter[str] = Counter()
        self.pods_by_label: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.pods_by_namespace: dict[str, set[str]] = defaultdict(set)
        self.pods_by_node: dict[str, set[str]] = defaultdict(set)
        self.members: dict[CollectionRef, set[str]] = defaultdict(set)
        self.uses_counts: dict[CollectionRef, Counter[CollectionRef]] = defaultdict(Counter)
        self.users: dict[CollectionRef, set[CollectionRef]] = defaultdict(set)
        self.services_by_namespace: dict[str, set[str]] = defaultdict(set)
        self.services_by_item: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.backends: dict[str, set[str]] = defaultdict(set)
        self.backend_of: dict[str, set[str]] = defaultdict(set)
        self.backend_collections: dict[str, Counter[CollectionRef]] = defaultdict(Counter)
        self.collection_services: dict[CollectionRef, set[str]] = defaultdict(set)
        self.policies_from: dict[str, set[str]] = defaultdict(set)
        # Things waiting for an address, in the order they asked: ("pod" | "service", uid).
        self.pending: dict[tuple[str, str], None] = {}
        # Lowest index of each service pool that may be free; only ever an optimisation.
        self.vip_hint: dict[IPv4Network, int] = {}
        # The same for each public pool.
        self.public_hint: dict[IPv4Network, int] = {}
        self.block_hint: dict[IPv4Network, int] = {}
        # Per block: the offset below which no address is free (same promise as vip_hint).
        self.address_hint: dict[str, int] = {}
        # Expiry order of quarantined addresses and tombstones, oldest first.
        self.quarantine_queue: deque[tuple[datetime, IPv4Address]] = deque()
        self.tombstone_queue: deque[tuple[datetime, str]] = deque()

    # ---- pods --------------------------------------------------------------------------

    def put_pod(self, record: PodRecord, *, journal: bool = True) -> None:
        old = self.pods.get(record.uid)
        if old is not None:
            self._unindex_pod(old)
        self.pods.set(record.uid, record, journal=journal)
        self._index_pod(record)

    def delete_pod(self, uid: str, *, journal: bool = True) -> None:
        old = self.pods.get(uid)
        if old is not None:
            self._unindex_pod(old)
            self.pods.set(uid, None, journal=journal)

    def _index_pod(self, record: PodRecord) -> None:
        spec = record.spec
        for key, value in spec.labels.items():
            self.pods_by_label[(spec.namespace, key, value)].add(spec.uid)
        self.pods_by_namespace[spec.namespace].add(spec.uid)
        if spec.node:
            self.pods_by_node[spec.node].add(spec.uid)
        if record.ip is not None:
            self.holders[record.ip] = ("pod", spec.uid)
        if record.block is not None:
            self.block_used[record.block] += 1
        if record.network is not None:
            ref = record.collection_ref
            self.members[ref].add(spec.uid)
            for target in record.uses:
                self.uses_counts[ref][target] += 1
                self.users[target].add(ref)

    def _unindex_pod(self, record: PodRecord) -> None:
        spec = record.spec
        for key, value in spec.labels.items():
            _discard(self.pods_by_label, (spec.namespace, key, value), spec.uid)
        _discard(self.pods_by_namespace, spec.namespace, spec.uid)
        if spec.node:
            _discard(self.pods_by_node, spec.node, spec.uid)
        if record.ip is not None and self.holders.get(record.ip) == ("pod", spec.uid):
            del self.holders[record.ip]
        if record.block is not None:
            self.block_used[record.block] -= 1
            if self.block_used[record.block] <= 0:
                del self.block_used[record.block]
        if record.network is not None:
            ref = record.collection_ref
            _discard(self.members, ref, spec.uid)
            counts = self.uses_counts[ref]
            for target in record.uses:
                counts[target] -= 1
                if counts[target] <= 0:
                    del counts[target]
                    self.users[target].discard(ref)
                    if not self.users[target]:
                        del self.users[target]
            if not counts:
                del self.uses_counts[ref]

    # ---- services ----------------------------------------------------------------------

    def put_service(self, record: ServiceRecord, *, journal: bool = True) -> None:
        old = self.services.get(record.uid)
        if old is not None:
            self._unindex_service(old)
        self.services.set(record.uid, record, journal=journal)
        self._index_service(record)

    def delete_service(self, uid: str, *, journal: bool = True) -> None:
        old = self.services.get(uid)
        if old is not None:
            self._unindex_service(old)
            self.services.set(uid, None, journal=journal)

    def _index_service(self, record: ServiceRecord) -> None:
        spec = record.spec
        self.services_by_namespace[spec.namespace].add(spec.uid)
        for key, value in (spec.selector or {}).items():
            self.services_by_item[(spec.namespace, key, value)].add(spec.uid)
        if record.vip is not None:
            self.holders[record.vip] = ("service", spec.uid)
        if record.public_ip is not None:
            self.holders[record.public_ip] = ("service", spec.uid)
        for ref in self.service_collections(record):
            self.collection_services[ref].add(spec.uid)

    def _unindex_service(self, record: ServiceRecord) -> None:
        spec = record.spec
        for ref in self.service_collections(record):
            _discard(self.collection_services, ref, spec.uid)
        _discard(self.services_by_namespace, spec.namespace, spec.uid)
        for key, value in (spec.selector or {}).items():
            _discard(self.services_by_item, (spec.namespace, key, value), spec.uid)
        for ip in (record.vip, record.public_ip):
            if ip is not None and self.holders.get(ip) == ("service", spec.uid):
                del self.holders[ip]

    def service_collections(self, record: ServiceRecord) -> set[CollectionRef]:
        """The collections a service selects: the one its selector names, else its backends'."""
        selector = record.spec.selector or {}
        named = selector.get(self.collection_label)
        if named:
            return {(record.spec.namespace, named)}
        return set(self.backend_collections.get(record.uid, ()))

    # ---- backends ----------------------------------------------------------------------

    def add_backend(self, service_uid: str, pod: PodRecord) -> set[CollectionRef]:
        """Make `pod` a backend; returns the collections whose set of services changed."""
        service = self.services.get(service_uid)
        before = self.service_collections(service) if service else set()
        self.backends[service_uid].add(pod.uid)
        self.backend_of[pod.uid].add(service_uid)
        self.backend_collections[service_uid][pod.collection_ref] += 1
        return self._reindex_collections(service, before)

    def remove_backend(self, service_uid: str, pod: PodRecord) -> set[CollectionRef]:
        service = self.services.get(service_uid)
        before = self.service_collections(service) if service else set()
        _discard(self.backends, service_uid, pod.uid)
        _discard(self.backend_of, pod.uid, service_uid)
        counts = self.backend_collections[service_uid]
        counts[pod.collection_ref] -= 1
        if counts[pod.collection_ref] <= 0:
            del counts[pod.collection_ref]
        if not counts:
            del self.backend_collections[service_uid]
        return self._reindex_collections(service, before)

    def _reindex_collections(
        self, service: ServiceRecord | None, before: set[CollectionRef]
    ) -> set[CollectionRef]:
        if service is None:
            return set()
        after = self.service_collections(service)
        for ref in before - after:
            _discard(self.collection_services, ref, service.uid)
        for ref in after - before:
            self.collection_services[ref].add(service.uid)
        return before ^ after

    # ---- blocks ------------------------------------------------------------------------

    def put_block(self, record: BlockRecord, *, journal: bool = True) -> None:
        old = self.blocks.get(record.cidr)
        if old is not None:
            self.delete_block(record.cidr, journal=journal)
        self.blocks.set(record.cidr, record, journal=journal)
        blocks = self.node_blocks[record.node]
        blocks.append(IPv4Network(record.cidr))
        blocks.sort()

    def delete_block(self, cidr: str, *, journal: bool = True) -> None:
        record = self.blocks.get(cidr)
        if record is None:
            return
        self.blocks.set(cidr, None, journal=journal)
        blocks = self.node_blocks[record.node]
        blocks.remove(IPv4Network(cidr))
        if not blocks:
            del self.node_blocks[record.node]
        self.address_hint.pop(cidr, None)
        pool = IPv4Network(record.pool)
        index = block_index(pool, IPv4Network(cidr))
        self.block_hint[pool] = min(self.block_hint.get(pool, 0), index)

    # ---- policies ----------------------------------------------------------------------

    def put_policy(self, record: PolicyRecord, *, journal: bool = True) -> None:
        old = self.policies.get(record.name)
        if old is not None:
            _discard(self.policies_from, old.from_network, old.name)
        self.policies.set(record.name, record, journal=journal)
        self.policies_from[record.from_network].add(record.name)

    def delete_policy(self, name: str, *, journal: bool = True) -> None:
        record = self.policies.get(name)
        if record is not None:
            self.policies.set(name, None, journal=journal)
            _discard(self.policies_from, record.from_network, name)

    # ---- persistence -------------------------------------------------------------------

    def load(
        self,
        *,
        namespaces: list[Namespace],
        nodes: list[Node],
        pods: list[PodRecord],
        services: list[ServiceRecord],
        blocks: list[BlockRecord],
        networks: list[NetworkRecord],
        floating: list[FloatingIpRecord],
        policies: list[PolicyRecord],
        quarantine: list[QuarantineRecord],
        tombstones: list[TombstoneRecord],
    ) -> None:
        """Fill an empty state from stored records, rebuilding every index."""
        for namespace in namespaces:
            self.namespaces.load(namespace.name, namespace)
        for node in nodes:
            self.nodes.load(node.name, node)
        for block in sorted(blocks, key=lambda b: IPv4Network(b.cidr)):
            self.blocks.load(block.cidr, block)
            self.node_blocks[block.node].append(IPv4Network(block.cidr))
        for pod in pods:
            self.pods.load(pod.uid, pod)
            self._index_pod(pod)
        for network in networks:
            self.networks.load(network.key, network)
        for fip in floating:
            self.floating.load((fip.service_uid, fip.pod_uid), fip)
        for service in services:
            self.services.load(service.uid, service)
            for pod_uid in sorted(self.select_pods(service)):
                pod_record = self.pods.get(pod_uid)
                if pod_record is not None and is_backend(pod_record):
                    self.add_backend(service.uid, pod_record)
            self._index_service(service)
        for policy in policies:
            self.policies.load(policy.name, policy)
            self.policies_from[policy.from_network].add(policy.name)
        for held in sorted(quarantine, key=lambda q: (q.until, q.ip)):
            self.quarantine.load(held.ip, held)
            self.quarantine_queue.append((held.until, held.ip))
        for stone in sorted(tombstones, key=lambda t: (t.deleted_at, t.uid)):
            self.tombstones.load(stone.uid, stone)
            self.tombstone_queue.append((stone.deleted_at, stone.uid))

    def select_pods(self, service: ServiceRecord) -> set[str]:
        """Pods of the service's namespace whose labels match its selector."""
        selector = service.spec.selector
        if not selector:
            return set()
        namespace = service.spec.namespace
        sets = sorted(
            (self.pods_by_label.get((namespace, k, v), set()) for k, v in selector.items()),
            key=len,
        )
        found = set(sets[0])
        for other in sets[1:]:
            found &= other
        return found

    def take_changes(self) -> ChangeSet:
        changes = ChangeSet(
            namespaces=self.namespaces.take_changes(),
            nodes=self.nodes.take_changes(),
            pods=self.pods.take_changes(),
            services=self.services.take_changes(),
            blocks=self.blocks.take_changes(),
            networks=self.networks.take_changes(),
            floating=self.floating.take_changes(),
            policies=self.policies.take_changes(),
            quarantine=self.quarantine.take_changes(),
            tombstones=self.tombstones.take_changes(),
            history=self.history,
            problems=self.problems,
        )
        self.history = []
        self.problems = []
        return changes


def is_backend(pod: PodRecord) -> bool:
    """A pod can stand behind a VIP once it has an address and is ready."""
    return pod.ip is not None and pod.spec.ready
