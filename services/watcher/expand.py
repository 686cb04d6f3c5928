"""Declared objects into a running cluster: controllers into pods, pods onto nodes.

The manifest source has no kubelet, scheduler or controller manager, so this does their
work, deterministically: the same manifests give the same names, uids and placement, so
a restarted watcher observes the very cluster it observed before.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Network

from knm.core.domain.labels import object_name_error
from knm.core.events.facts import OwnerReference
from services.watcher.errors import BadManifestError
from services.watcher.manifests import Declared, ManifestObject
from services.watcher.objects import (
    Controller,
    Metadata,
    Namespace,
    Node,
    Pod,
    Service,
)

# Fixed forever: every uid knm derives hangs off it, and uids must survive restarts.
NAMESPACE = uuid.UUID("0b6c5d1e-7a0f-5c43-9d2e-4b1f8a6e3c27")

# Kubernetes' alphabet for generated names: no vowels (no words), no 0/1/3 (look-alikes).
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Kubernetes cuts a generateName prefix to 58 characters so prefix + 5 fits a DNS label.
_MAX_PREFIX = 58

POD_TEMPLATE_HASH = "pod-template-hash"
STATEFULSET_POD_NAME = "statefulset.kubernetes.io/pod-name"
STATEFULSET_POD_INDEX = "apps.kubernetes.io/pod-index"
NAMESPACE_NAME = "kubernetes.io/metadata.name"
HOSTNAME = "kubernetes.io/hostname"

_SIMULATED_NAME = re.compile(r"^node-([1-9][0-9]*)$")


@dataclass(frozen=True, slots=True)
class Cluster:
    """Everything the manifests make exist, uids set, each group in document order."""

    namespaces: tuple[Namespace, ...]
    nodes: tuple[Node, ...]
    controllers: tuple[Controller, ...]
    services: tuple[Service, ...]
    pods: tuple[Pod, ...]


def derived_uid(kind: str, *, namespace: str, name: str) -> str:
    """The uid of an object that was given none: a function of what names it."""
    path = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
    return str(uuid.uuid5(NAMESPACE, path))


def simulated_nodes(count: int) -> list[str]:
    return [f"node-{index}" for index in range(1, count + 1)]


def generated(seed: str, *, length: int) -> str:
    """`length` characters of ALPHABET drawn from a hash of `seed`."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    characters: list[str] = []
    for _ in range(length):
        number, digit = divmod(number, len(ALPHABET))
        characters.append(ALPHABET[digit])
    return "".join(characters)


def pod_template_hash(controller: Controller) -> str:
    return generated(controller.template.canonical, length=10)


def check_simulation(*, nodes: int, underlay: IPv4Network) -> None:
    """Raise ValueError unless `nodes` simulated nodes fit in `underlay`."""
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, not {nodes}")
    if _host_address(underlay, nodes) is None:
        raise ValueError(f"the underlay {underlay} has no room for {nodes} nodes")


def expand(declared: Sequence[Declared], *, nodes: int, underlay: IPv4Network) -> Cluster:
    """The cluster the declared objects make. Raises BadManifestError for a name declared
    twice or a node the underlay has no address left for; ValueError when `nodes` is not
    positive or does not fit in `underlay`."""
    check_simulation(nodes=nodes, underlay=underlay)
    objects = [Declared(item.origin, _with_uid(item.object)) for item in declared]
    return _Expansion(objects, nodes=nodes, underlay=underlay).run()


class _Expansion:
    def __init__(self, declared: list[Declared], *, nodes: int, underlay: IPv4Network) -> None:
        self._declared = declared
        self._simulated = simulated_nodes(nodes)
        self._nodes = _nodes(self._simulated, _pinned_nodes(declared), underlay)
        # Pods per node so far; only the simulated nodes take pods that are not pinned.
        self._load = dict.fromkeys(self._simulated, 0)
        self._origins: dict[str, str] = {}
        # Declared pods' names are reserved from the start so that generated names, which
        # step around taken ones, never depend on where in the files a pod is declared.
        self._pod_names = {
            (item.object.meta.namespace, item.object.meta.name)
            for item in declared
            if isinstance(item.object, Pod)
        }
        self._namespaces: dict[str, Namespace] = {}
        self._controllers: list[Controller] = []
        self._services: list[Service] = []
        self._pods: list[Pod] = []

    def run(self) -> Cluster:
        for item in self._declared:
            self._add(item.origin, item.object)
        return Cluster(
            namespaces=tuple(self._namespaces.values()),
            nodes=tuple(self._nodes),
            controllers=tuple(self._controllers),
            services=tuple(self._services),
            pods=tuple(self._pods),
        )

    def _add(self, origin: str, obj: ManifestObject) -> None:
        self._claim(origin, obj.meta)
        match obj:
            case Namespace():
                # Replaces the implied namespace, if one came first, in its place.
                self._namespaces[obj.meta.name] = _namespace(obj)
            case Service():
                self._use_namespace(obj.meta.namespace)
                self._services.append(obj)
            case Pod():
                self._use_namespace(obj.meta.namespace)
                self._pods.append(self._running(obj, node=self._node_for(obj.spec.node_name)))
            case Controller():
                self._use_namespace(obj.meta.namespace)
                self._controllers.append(obj)
                self._expand(origin, obj)

    def _expand(self, origin: str, controller: Controller) -> None:
        replicas = controller.replicas or 0
        match controller.meta.kind:
            case "Deployment":
                replica_set = _replica_set_of(controller)
                self._claim(origin, replica_set.meta)
                self._controllers.append(replica_set)
                self._expand(origin, replica_set)
            case "ReplicationController" | "ReplicaSet":
                for index in range(replicas):
                    name = self._generate_name(controller, seed=str(index))
                    self._add_pod(origin, controller, name=name)
            case "StatefulSet":
                for index in range(replicas):
                    name = f"{controller.meta.name}-{index}"
                    labels = {STATEFULSET_POD_NAME: name, STATEFULSET_POD_INDEX: str(index)}
                    self._add_pod(origin, controller, name=name, labels=labels)
            case "DaemonSet":
                pinned = controller.template.spec.node_name
                for node in [pinned] if pinned else [node.meta.name for node in self._nodes]:
                    name = self._generate_name(controller, seed=node)
                    self._add_pod(origin, controller, name=name, node=node)

    def _add_pod(
        self,
        origin: str,
        controller: Controller,
        *,
        name: str,
        labels: dict[str, str] | None = None,
        node: str | None = None,
    ) -> None:
        template = controller.template
        namespace = controller.meta.namespace
        meta = Metadata(
            kind="Pod",
            name=name,
            namespace=namespace,
            uid=derived_uid("Pod", namespace=namespace, name=name),
            labels={**template.labels, **(labels or {})},
            annotations=dict(template.annotations),
            owners=(_reference(controller.meta), *controller.meta.owners),
            resource_version=None,
        )
        self._claim(origin, meta)
        self._pod_names.add((namespace, name))
        pod = Pod(meta, template.spec, phase="Pending", ready=False)
        self._pods.append(self._running(pod, node=self._node_for(node or template.spec.node_name)))

    def _generate_name(self, controller: Controller, *, seed: str) -> str:
        """`<controller>-<5 characters>`, as Kubernetes' generateName makes, but derived."""
        prefix = f"{controller.meta.name}-"[:_MAX_PREFIX]
        namespace = controller.meta.namespace
        attempt = 0
        while True:
            name = prefix + generated(f"{controller.meta.uid}/{seed}/{attempt}", length=5)
            if (namespace, name) not in self._pod_names:
                self._pod_names.add((namespace, name))
                return name
            attempt += 1

    def _claim(self, origin: str, meta: Metadata) -> None:
        if error := object_name_error(meta.name):
            raise BadManifestError(f"{origin}: {meta.ref}: {error}")
        key = f"{meta.kind}/{meta.namespace}/{meta.name}"
        if (first := self._origins.get(key)) is not None:
            raise BadManifestError(f"{origin}: {meta.ref}: already made by {first}")
        self._origins[key] = origin

    def _use_namespace(self, name: str) -> None:
        if name not in self._namespaces:
            meta = Metadata(
                kind="Namespace",
                name=name,
                namespace="",
                uid=derived_uid("Namespace", namespace="", name=name),
                labels={},
                annotations={},
                owners=(),
                resource_version=None,
            )
            self._namespaces[name] = _namespace(Namespace(meta))

    def _node_for(self, pinned: str | None) -> str:
        """The pinned node, else the simulated node with the fewest pods (lowest on ties)."""
        node = pinned or min(self._simulated, key=lambda name: self._load[name])
        if node in self._load:
            self._load[node] += 1
        return node

    @staticmethod
    def _running(pod: Pod, *, node: str) -> Pod:
        # What a kubelet would report once the pod runs; the manifest source has none.
        return replace(pod, spec=replace(pod.spec, node_name=node), phase="Running", ready=True)


def _with_uid(obj: ManifestObject) -> ManifestObject:
    meta = obj.meta
    if meta.uid is not None:
        return obj
    uid = derived_uid(meta.kind, namespace=meta.namespace, name=meta.name)
    return replace(obj, meta=replace(meta, uid=uid))


def _namespace(namespace: Namespace) -> Namespace:
    # Kubernetes labels every namespace with its name, so selectors can pick namespaces.
    labels = {**namespace.meta.labels, NAMESPACE_NAME: namespace.meta.name}
    return replace(namespace, meta=replace(namespace.meta, labels=labels))


def _reference(meta: Metadata) -> OwnerReference:
    assert meta.uid is not None, "uids are set before expansion"
    return OwnerReference(kind=meta.kind, name=meta.name, uid=meta.uid)


def _replica_set_of(deployment: Controller) -> Controller:
    """The ReplicaSet a Deployment runs its current template through, as Kubernetes names
    it: `<deployment>-<pod-template-hash>`, the hash also labelling it and its pods."""
    template_hash = pod_template_hash(deployment)
    namespace = deployment.meta.namespace
    name = f"{deployment.meta.name}-{template_hash}"
    labels = {**deployment.template.labels, POD_TEMPLATE_HASH: template_hash}
    meta = Metadata(
        kind="ReplicaSet",
        name=name,
        namespace=namespace,
        uid=derived_uid("ReplicaSet", namespace=namespace, name=name),
        labels=labels,
        annotations={},
        owners=(_reference(deployment.meta), *deployment.meta.owners),
        resource_version=None,
    )
    return Controller(
        meta,
        replicas=deployment.replicas,
        selector={**deployment.selector, POD_TEMPLATE_HASH: template_hash},
        template=replace(deployment.template, labels=labels),
    )


def _pinned_nodes(declared: Sequence[Declared]) -> list[str]:
    """Nodes named by pods and pod templates, in document order."""
    names: dict[str, None] = {}
    for item in declared:
        match item.object:
            case Pod(spec=spec) if spec.node_name:
                names.setdefault(spec.node_name)
            case Controller(template=template) if template.spec.node_name:
                names.setdefault(template.spec.node_name)
    return list(names)


def _nodes(simulated: list[str], pinned: list[str], underlay: IPv4Network) -> list[Node]:
    """The simulated nodes, then the others pods are pinned to, with underlay addresses.

    node-i has the i-th host address. A pinned node named `node-<i>` beyond the simulated
    ones has it too; other pinned nodes take the next free ones, in order of appearance.
    """
    extra = [name for name in pinned if name not in simulated]
    indices = {name: index for index, name in enumerate(simulated, start=1)}
    for name in extra:
        if match := _SIMULATED_NAME.match(name):
            indices[name] = int(match[1])
    taken = set(indices.values())
    next_index = len(simulated) + 1
    for name in extra:
        if name not in indices:
            while next_index in taken:
                next_index += 1
            indices[name] = next_index
            taken.add(next_index)
    nodes: list[Node] = []
    for name in [*simulated, *extra]:
        address = _host_address(underlay, indices[name])
        if address is None:
            raise BadManifestError(
                f"node {name}: the underlay {underlay} has no address left for it"
            )
        meta = Metadata(
            kind="Node",
            name=name,
            namespace="",
            uid=derived_uid("Node", namespace="", name=name),
            labels={HOSTNAME: name},
            annotations={},
            owners=(),
            resource_version=None,
        )
        nodes.append(Node(meta, address))
    return nodes


def _host_address(network: IPv4Network, index: int) -> str | None:
    """The network's `index`-th host address, from 1; None past the last one."""
    # /31 and /32 have no network or broadcast address to leave out (RFC 3021).
    first, count = (
        (0, network.num_addresses) if network.prefixlen >= 31 else (1, network.num_addresses - 2)
    )
    if not 1 <= index <= count:
        return None
    return str(network.network_address + first + index - 1)
