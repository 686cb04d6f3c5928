"""The desired state as the intents topic declares it, indexed for the native compiler.

`DesiredModel` keeps the newest intent of every key (a Withdrawn intent removes the
object) and answers, for each intent it applies, which nodes' vrouter programs may have
changed (`Dirty`).

What a node's program holds (the relevance rules; `native.compile_node` implements them):

- *Local interfaces* of node n: the interfaces whose `node` is n. *L* = their networks.
- *Relevant services* (those with a VIP): services with a backend in a network of L (a
  collection reaches its own services); services targeted by a policy whose
  `from_network` is in L (`uses`); services with a backend on n (the ingress side).
  A policy targets the services whose network is its `to_network`.
- *Allows*: for each policy from a network in L, and each policy into a service with a
  backend on n: `Allow(from_network, vip, "<ns>/<name>", policy ports, declared=True)`.
  For each relevant service and each network N of its backends where N is in L or the
  service has a backend on n: `Allow(N, vip, ..., service ports, declared=False)`.
- *Networks*: the cluster-wide member IPs of every network in L and of every
  `from_network` of an allow.
- *Overlay* (not per node): every declared node with its address, and every block with
  its node; a node that has blocks but no NodeDeclared has no address.

Which nodes an intent dirties follows from those rules, taking the union of the
object's reach before and after the change:

- interface: its node, and the nodes that see its network's members (nodes with pods in
  that network, backend nodes of services its network uses, backend nodes of services
  that have a backend in its network);
- service: its backend nodes, nodes with pods in its backends' networks, nodes with pods
  in the `from_network` of the policies that target it;
- policy: nodes with pods in its `from_network`, backend nodes of the services it targets;
- block, node: the overlay. Networks dirty nothing: no program depends on them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TypeVar

from knm.core.domain.labels import service_network_name
from knm.core.events.base import Event
from knm.core.events.intents import (
    BlockDeclared,
    BlockWithdrawn,
    InterfaceDeclared,
    InterfaceWithdrawn,
    NetworkDeclared,
    NetworkWithdrawn,
    NodeDeclared,
    NodeWithdrawn,
    PolicyDeclared,
    PolicyWithdrawn,
    ServiceDeclared,
    ServiceWithdrawn,
)

_T = TypeVar("_T")


@dataclass(slots=True)
class Dirty:
    """Nodes whose vrouter program may have changed, and whether the overlay may have."""

    nodes: set[str] = field(default_factory=set)
    overlay: bool = False

    def __bool__(self) -> bool:
        return bool(self.nodes) or self.overlay

    def __ior__(self, other: Dirty) -> Dirty:
        self.nodes |= other.nodes
        self.overlay = self.overlay or other.overlay
        return self


def service_network(service: ServiceDeclared) -> str:
    """The service's network; the allocator always sets it, the name rule is a fallback."""
    return service.network or service_network_name(service.namespace, service.name)


class _Index:
    """A multimap kept alongside the tables: key -> set of ids, empty sets dropped."""

    def __init__(self) -> None:
        self._sets: dict[str, set[str]] = defaultdict(set)

    def add(self, key: str, value: str) -> None:
        self._sets[key].add(value)

    def discard(self, key: str, value: str) -> None:
        values = self._sets.get(key)
        if values is not None:
            values.discard(value)
            if not values:
                del self._sets[key]

    def get(self, key: str) -> AbstractSet[str]:
        """A live view: read it before the next change."""
        return self._sets.get(key, frozenset())


class DesiredModel:
    def __init__(self) -> None:
        self.interfaces: dict[str, InterfaceDeclared] = {}
        self.services: dict[str, ServiceDeclared] = {}
        self.policies: dict[str, PolicyDeclared] = {}
        self.blocks: dict[str, BlockDeclared] = {}
        self.nodes: dict[str, NodeDeclared] = {}
        # Kept for backends that configure networks as objects (Contrail); the native
        # program does not depend on them.
        self.networks: dict[tuple[str, str], NetworkDeclared] = {}
        self._interfaces_by_node = _Index()
        self._interfaces_by_network = _Index()
        self._services_by_network = _Index()
        self._services_by_backend_node = _Index()
        self._services_by_backend_network = _Index()
        self._policies_by_from = _Index()
        self._policies_by_to = _Index()

    # ---- applying intents ---------------------------------------------------------------

    def apply(self, event: Event) -> Dirty:
        """Make `event` the newest intent of its key; return what may have changed."""
        match event:
            case InterfaceDeclared():
                return self._put_interface(event.pod_uid, event)
            case InterfaceWithdrawn():
                dirty = self._put_interface(event.pod_uid, None)
                # After a restart on a compacted topic the Declared may be gone; the
                # node still needs its (now emptier) program.
                dirty.nodes.add(event.node)
                return dirty
            case ServiceDeclared():
                return self._put_service(event.uid, event)
            case ServiceWithdrawn():
                return self._put_service(event.uid, None)
            case PolicyDeclared():
                return self._put_policy(event.name, event)
            case PolicyWithdrawn():
                return self._put_policy(event.name, None)
            case BlockDeclared():
                self.blocks[event.cidr] = event
                return Dirty(overlay=True)
            case BlockWithdrawn():
                self.blocks.pop(event.cidr, None)
                return Dirty(overlay=True)
            case NodeDeclared():
                self.nodes[event.name] = event
                return Dirty(overlay=True)
            case NodeWithdrawn():
                self.nodes.pop(event.name, None)
                return Dirty(overlay=True)
            case NetworkDeclared():
                self.networks[(event.kind, event.name)] = event
                return Dirty()
            case NetworkWithdrawn():
                self.networks.pop((event.kind, event.name), None)
                return Dirty()
            case _:
                # AllocationFailed and anything else that is not desired configuration.
                return Dirty()

    def _put_interface(self, uid: str, new: InterfaceDeclared | None) -> Dirty:
        old = self.interfaces.get(uid)
        dirty = Dirty(nodes=self._interface_reach(old))
        if old is not None:
            del self.interfaces[uid]
            self._interfaces_by_node.discard(old.node, uid)
            self._interfaces_by_network.discard(old.network, uid)
        if new is not None:
            self.interfaces[uid] = new
            self._interfaces_by_node.add(new.node, uid)
            self._interfaces_by_network.add(new.network, uid)
        dirty.nodes |= self._interface_reach(new)
        return dirty

    def _put_service(self, uid: str, new: ServiceDeclared | None) -> Dirty:
        old = self.services.get(uid)
        dirty = Dirty(nodes=self._service_reach(old))
        if old is not None:
            del self.services[uid]
            self._services_by_network.discard(service_network(old), uid)
            for backend in old.backends:
                self._services_by_backend_node.discard(backend.node, uid)
                self._services_by_backend_network.discard(backend.network, uid)
        if new is not None:
            self.services[uid] = new
            self._services_by_network.add(service_network(new), uid)
            for backend in new.backends:
                self._services_by_backend_node.add(backend.node, uid)
                self._services_by_backend_network.add(backend.network, uid)
        dirty.nodes |= self._service_reach(new)
        return dirty

    def _put_policy(self, name: str, new: PolicyDeclared | None) -> Dirty:
        old = self.policies.get(name)
        dirty = Dirty(nodes=self._policy_reach(old))
        if old is not None:
            del self.policies[name]
            self._policies_by_from.discard(old.from_network, name)
            self._policies_by_to.discard(old.to_network, name)
        if new is not None:
            self.policies[name] = new
            self._policies_by_from.add(new.from_network, name)
            self._policies_by_to.add(new.to_network, name)
        dirty.nodes |= self._policy_reach(new)
        return dirty

    # ---- reach: the nodes whose program depends on an object ------------------------------

    def _interface_reach(self, interface: InterfaceDeclared | None) -> set[str]:
        if interface is None:
            return set()
        return {interface.node, *self._member_viewers(interface.network)}

    def _member_viewers(self, network: str) -> set[str]:
        """Nodes whose program carries the member list of `network`."""
        viewers = set(self.nodes_with_pods_in(network))
        for policy in self.policies_from(network):
            for service in self.services_targeted_by(policy):
                viewers |= backend_nodes(service)
        for service in self.services_with_backends_in(network):
            viewers |= backend_nodes(service)
        return viewers

    def _service_reach(self, service: ServiceDeclared | None) -> set[str]:
        if service is None:
            return set()
        reach = backend_nodes(service)
        for network in {backend.network for backend in service.backends}:
            reach |= self.nodes_with_pods_in(network)
        for policy in self.policies_into(service):
            reach |= self.nodes_with_pods_in(policy.from_network)
        return reach

    def _policy_reach(self, policy: PolicyDeclared | None) -> set[str]:
        if policy is None:
            return set()
        reach = set(self.nodes_with_pods_in(policy.from_network))
        for service in self.services_targeted_by(policy):
            reach |= backend_nodes(service)
        return reach

    # ---- queries ------------------------------------------------------------------------

    def interfaces_on(self, node: str) -> list[InterfaceDeclared]:
        return self._lookup(self.interfaces, self._interfaces_by_node.get(node))

    def interfaces_in(self, network: str) -> list[InterfaceDeclared]:
        return self._lookup(self.interfaces, self._interfaces_by_network.get(network))

    def nodes_with_pods_in(self, network: str) -> set[str]:
        return {interface.node for interface in self.interfaces_in(network)}

    def services_with_backends_in(self, network: str) -> list[ServiceDeclared]:
        return self._lookup(self.services, self._services_by_backend_network.get(network))

    def services_with_backends_on(self, node: str) -> list[ServiceDeclared]:
        return self._lookup(self.services, self._services_by_backend_node.get(node))

    def services_targeted_by(self, policy: PolicyDeclared) -> list[ServiceDeclared]:
        return self._lookup(self.services, self._services_by_network.get(policy.to_network))

    def policies_from(self, network: str) -> list[PolicyDeclared]:
        return self._lookup(self.policies, self._policies_by_from.get(network))

    def policies_into(self, service: ServiceDeclared) -> list[PolicyDeclared]:
        return self._lookup(self.policies, self._policies_by_to.get(service_network(service)))

    @staticmethod
    def _lookup(table: dict[str, _T], keys: Iterable[str]) -> list[_T]:
        # Sorted so that every walk over the model is deterministic.
        return [table[key] for key in sorted(keys)]


def backend_nodes(service: ServiceDeclared) -> set[str]:
    return {backend.node for backend in service.backends}
