"""Kubernetes objects as knm reads them: validated, typed, then turned into facts.

Both sources share this module. Every function takes an object as the API serves it (a
dict decoded from JSON or YAML), does no I/O, and says what is wrong in one line.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from knm.core.domain.labels import (
    label_key_error,
    labels_errors,
    namespace_name_error,
    object_name_error,
    service_name_error,
)
from knm.core.events.facts import (
    ContainerPortSpec,
    ControllerObserved,
    EndpointPortSpec,
    EndpointSliceObserved,
    EndpointSpec,
    IpBlockSpec,
    LabelSelectorSpec,
    NamespaceObserved,
    NetworkPolicyObserved,
    NetworkPolicyPeerSpec,
    NetworkPolicyPortSpec,
    NetworkPolicyRuleSpec,
    NodeObserved,
    OwnerReference,
    PodObserved,
    SelectorRequirementSpec,
    ServiceObserved,
    ServicePortSpec,
)
from services.watcher.errors import InvalidObjectError

CORE = "v1"
APPS = "apps/v1"
DISCOVERY = "discovery.k8s.io/v1"
NETWORKING = "networking.k8s.io/v1"

# Kinds whose objects are scoped to the cluster rather than to a namespace.
CLUSTER_SCOPED = frozenset({"Namespace", "Node"})
CONTROLLER_KINDS = frozenset(
    {"ReplicationController", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet"}
)
# Kinds published as facts from a live cluster only: manifests do not declare endpoint
# slices (the control plane writes them), and nothing acts on network policies yet.
LIVE_ONLY = frozenset({"EndpointSlice", "NetworkPolicy"})
NAMESPACED = frozenset({"Pod", "Service"}) | CONTROLLER_KINDS | LIVE_ONLY
PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
SERVICE_TYPES = frozenset({"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"})

DEFAULT_NAMESPACE = "default"

# knm's own write-back on pods (services.watcher.writeback): not a fact about the pod, and
# reading it back would publish every pod twice.
INTERFACE_ANNOTATION = "knm.io/interface"
WRITTEN_BACK = frozenset({INTERFACE_ANNOTATION})


@dataclass(frozen=True, slots=True)
class Metadata:
    kind: str
    name: str
    # "" for cluster-scoped kinds, as in Kubernetes' own types.
    namespace: str
    # None until a source gives one: the API always does, manifests seldom do.
    uid: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    # Immediate owner first, the topmost controller last.
    owners: tuple[OwnerReference, ...]
    resource_version: str | None

    @property
    def ref(self) -> str:
        return describe(self.kind, namespace=self.namespace, name=self.name)


@dataclass(frozen=True, slots=True)
class Namespace:
    meta: Metadata


@dataclass(frozen=True, slots=True)
class Node:
    meta: Metadata
    address: str | None


@dataclass(frozen=True, slots=True)
class PodSpec:
    node_name: str | None
    host_network: bool
    ports: tuple[ContainerPortSpec, ...]


@dataclass(frozen=True, slots=True)
class Pod:
    meta: Metadata
    spec: PodSpec
    phase: str
    ready: bool


@dataclass(frozen=True, slots=True)
class PodTemplate:
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: PodSpec
    # The template as canonical JSON (sorted keys): what a pod-template-hash is taken of.
    canonical: str


@dataclass(frozen=True, slots=True)
class Controller:
    meta: Metadata
    # None for DaemonSets, which run one pod per node instead.
    replicas: int | None
    selector: dict[str, str]
    template: PodTemplate


@dataclass(frozen=True, slots=True)
class Service:
    meta: Metadata
    selector: dict[str, str] | None
    ports: tuple[ServicePortSpec, ...]
    cluster_ip: str | None
    headless: bool
    type: str


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    meta: Metadata
    address_type: str
    ports: tuple[EndpointPortSpec, ...]
    endpoints: tuple[EndpointSpec, ...]


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    meta: Metadata
    pod_selector: LabelSelectorSpec
    policy_types: tuple[str, ...]
    ingress: tuple[NetworkPolicyRuleSpec, ...]
    egress: tuple[NetworkPolicyRuleSpec, ...]


KubeObject = Namespace | Node | Pod | Controller | Service | EndpointSlice | NetworkPolicy
ObservedFact = (
    NamespaceObserved
    | NodeObserved
    | ControllerObserved
    | ServiceObserved
    | PodObserved
    | EndpointSliceObserved
    | NetworkPolicyObserved
)

# The label the endpoint-slice controller puts on a slice: the service it belongs to.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
POLICY_TYPES = frozenset({"Ingress", "Egress"})


@dataclass(frozen=True, slots=True)
class Parsed:
    object: KubeObject
    # Parts of the object knm read past, one line each, for the source to log.
    ignored: tuple[str, ...] = ()


class _ReasonError(Exception):
    """A reason, raised deep in a parser; `parse_object` adds which object it is about."""


def _fail(reason: str) -> NoReturn:
    raise _ReasonError(reason)


def describe(kind: str, *, namespace: str, name: str) -> str:
    """`Kind namespace/name`, or `Kind name` for cluster-scoped objects."""
    if not name:
        return kind
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def loose_ref(raw: Mapping[str, Any], *, kind: str) -> str:
    """`Kind namespace/name` as far as an object not (yet) validated lets it be read."""
    meta = raw.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str):
        return kind
    namespace = namespace if isinstance(namespace, str) else ""
    if kind in CLUSTER_SCOPED:
        namespace = ""
    elif kind in NAMESPACED:
        namespace = namespace or DEFAULT_NAMESPACE
    return describe(kind, namespace=namespace, name=name)


def type_of(raw: Mapping[str, Any]) -> tuple[str, str]:
    """The object's (apiVersion, kind); raises InvalidObjectError when either is missing."""
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidObjectError("kind is not set")
    if not isinstance(api_version, str) or not api_version:
        raise InvalidObjectError(f"{kind}: apiVersion is not set")
    return api_version, kind


def parse_object(raw: Mapping[str, Any]) -> Parsed | None:
    """The object, validated; None for a kind knm does not read.

    Raises InvalidObjectError naming the object (`Kind namespace/name`) and the reason.
    """
    api_version, kind = type_of(raw)
    parser = _PARSERS.get((api_version, kind))
    if parser is None:
        return None
    ref = loose_ref(raw, kind=kind)
    try:
        meta = _metadata(raw, kind=kind)
        ref = meta.ref
        ignored: list[str] = []
        parsed = parser(raw, meta, ignored)
    except _ReasonError as exc:
        raise InvalidObjectError(f"{ref}: {exc}") from None
    return Parsed(parsed, tuple(f"{ref}: {note}" for note in ignored))


def fact_of(obj: KubeObject) -> ObservedFact:
    """The fact that says the object exists as it is now."""
    meta = obj.meta
    if meta.uid is None:
        raise InvalidObjectError(f"{meta.ref}: metadata.uid is not set")
    match obj:
        case Namespace():
            return NamespaceObserved(name=meta.name, uid=meta.uid, labels=meta.labels)
        case Node(address=address):
            return NodeObserved(name=meta.name, uid=meta.uid, address=address, labels=meta.labels)
        case Pod(spec=spec):
            return PodObserved(
                uid=meta.uid,
                namespace=meta.namespace,
                name=meta.name,
                node=spec.node_name,
                labels=meta.labels,
                annotations={k: v for k, v in meta.annotations.items() if k not in WRITTEN_BACK},
                host_network=spec.host_network,
                phase=obj.phase,
                ready=obj.ready,
                owners=meta.owners,
                ports=spec.ports,
            )
        case Controller():
            return ControllerObserved(
                kind=meta.kind,
                uid=meta.uid,
                namespace=meta.namespace,
                name=meta.name,
                labels=meta.labels,
                replicas=obj.replicas,
                selector=obj.selector,
                owners=meta.owners,
            )
        case Service():
            return ServiceObserved(
                uid=meta.uid,
                namespace=meta.namespace,
                name=meta.name,
                selector=obj.selector,
                ports=obj.ports,
                cluster_ip=obj.cluster_ip,
                headless=obj.headless,
                type=obj.type,
            )
        case EndpointSlice():
            return EndpointSliceObserved(
                uid=meta.uid,
                namespace=meta.namespace,
                name=meta.name,
                service=meta.labels.get(SERVICE_NAME_LABEL),
                address_type=obj.address_type,
                labels=meta.labels,
                ports=obj.ports,
                endpoints=obj.endpoints,
            )
        case NetworkPolicy():
            return NetworkPolicyObserved(
                uid=meta.uid,
                namespace=meta.namespace,
                name=meta.name,
                labels=meta.labels,
                pod_selector=obj.pod_selector,
                policy_types=obj.policy_types,
                ingress=obj.ingress,
                egress=obj.egress,
            )


# ---- metadata ----------------------------------------------------------------------------


def _metadata(raw: Mapping[str, Any], *, kind: str) -> Metadata:
    meta = _mapping(raw.get("metadata"), "metadata")
    name = meta.get("name")
    if name is None:
        hint = " (generateName is not supported)" if "generateName" in meta else ""
        _fail(f"metadata.name is not set{hint}")
    if not isinstance(name, str):
        _fail(f"metadata.name must be a string, not {_type_name(name)}")
    namespace = ""
    if kind not in CLUSTER_SCOPED:
        given = _optional_string(meta.get("namespace"), "metadata.namespace")
        namespace = given or DEFAULT_NAMESPACE
        if error := namespace_name_error(namespace):
            _fail(error)
    if error := _name_error(kind, name):
        _fail(error)
    labels, annotations = _labels_and_annotations(meta, "metadata")
    return Metadata(
        kind=kind,
        name=name,
        namespace=namespace,
        uid=_optional_string(meta.get("uid"), "metadata.uid") or None,
        labels=labels,
        annotations=annotations,
        owners=_owners(meta.get("ownerReferences")),
        resource_version=_optional_string(meta.get("resourceVersion"), "metadata.resourceVersion"),
    )


def _labels_and_annotations(
    meta: Mapping[str, Any], field: str
) -> tuple[dict[str, str], dict[str, str]]:
    labels = _string_map(meta.get("labels"), f"{field}.labels")
    if errors := labels_errors(labels):
        _fail(f"{field}.labels: {'; '.join(errors)}")
    annotations = _string_map(meta.get("annotations"), f"{field}.annotations")
    for key in annotations:
        # Annotation keys follow the rules of label keys; their values are free.
        if error := label_key_error(key):
            _fail(f"{field}.annotations: {error.replace('label key', 'key', 1)}")
    return labels, annotations


def _name_error(kind: str, name: str) -> str | None:
    if kind == "Namespace":
        return namespace_name_error(name)
    if kind == "Service":
        return service_name_error(name)
    return object_name_error(name)


def _owners(value: Any) -> tuple[OwnerReference, ...]:
    """The immediate owner: the reference marked `controller`, else the first one.

    Other references are garbage-collection ties that say nothing about which controller
    runs the object. The chain above the immediate owner (a ReplicaSet's Deployment) needs
    the owners themselves: the manifest expansion builds it; the live source will resolve
    it from its caches (a later issue).
    """
    refs = _list(value, "metadata.ownerReferences")
    owners: list[OwnerReference] = []
    for index, item in enumerate(refs):
        field = f"metadata.ownerReferences[{index}]"
        ref = _mapping(item, field)
        parts = [ref.get("kind"), ref.get("name"), ref.get("uid")]
        if not all(isinstance(part, str) and part for part in parts):
            _fail(f"{field}: kind, name and uid must be non-empty strings")
        owner = OwnerReference(kind=ref["kind"], name=ref["name"], uid=ref["uid"])
        if ref.get("controller") is True:
            return (owner,)
        owners.append(owner)
    return tuple(owners[:1])


# ---- kinds -------------------------------------------------------------------------------


def _namespace(raw: Mapping[str, Any], meta: Metadata, ignored: list[str]) -> Namespace:
    return Namespace(meta)


def _node(raw: Mapping[str, Any], meta: Metadata, ignored: list[str]) -> Node:
    status = _mapping(raw.get("status"), "status")
    address: str | None = None
    for index, item in enumerate(_list(status.get("addresses"), "status.addresses")):
        entry = _mapping(item, f"status.addresses[{index}]")
        if entry.get("type") == "InternalIP" and isinstance(entry.get("address"), str):
            address = entry["address"]
            break
    return Node(meta, address)


def _pod(raw: Mapping[str, Any], meta: Metadata, ignored: list[str]) -> Pod:
    status = _mapping(raw.get("status"), "status")
    phase = _optional_string(status.get("phase"), "status.phase") or "Pending"
    ready = False
    for index, item in enumerate(_list(status.get("conditions"), "status.conditions")):
        condition = _mapping(item, f"status.conditions[{index}]")
        if condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    return Pod(meta, _pod_spec(raw.get("spec"), "spec"), phase, ready)


def _controller(raw: Mapping[str, Any], meta: Metadata, ignored: list[str]) -> Controller:
    spec = _mapping(raw.get("spec"), "spec")
    template = _template(spec.get("template"))
    replicas: int | None = None
    if meta.kind != "DaemonSet":
        replicas = _replicas(spec.get("replicas"))
    if meta.kind == "ReplicationController":
        selector = _selector(spec.get("selector"), "spec.selector")
        if selector is None:
            # As Kubernetes does: an RC without a selector selects its template's labels.
            selector = dict(template.labels)
        if not selector:
            _fail("spec.selector is empty and the template has no labels")
    else:
        selector = _label_selector(spec.get("selector"), ignored)
        if not selector:
            _fail("spec.selector.matchLabels is empty; knm selects pods by matchLabels")
    if any(template.labels.get(key) != value for key, value in selector.items()):
        _fail("spec.selector does not match the template's labels")
    return Controller(meta, replicas, selector, template)


def _service(raw: Mapping[str, Any], meta: Metadata, ignored: list[str]) -> Service:
    spec = _mapping(raw.get("spec"), "spec")
    kind = spec.get("type", "ClusterIP")
    if kind not in SERVICE_TYPES:
        _fail(f"spec.type {kind!r} is not one of {', '.join(sorted(SERVICE_TYPES))}")
    ports: list[ServicePortSpec] = []
    for index, item in enumerate(_list(spec.get("ports"), "spec.ports")):
        field = f"spec.ports[{index}]"
        port = _mapping(item, field)
        target = port.get("targetPort")
        if isinstance(target, str):
            if not target:
                _fail(f"{field}.targetPort must be a port number or a port name")
        elif target is not None:
            target = _port(target, f"{field}.targetPort")
        ports.append(
            ServicePortSpec(
                port=_port(port.get("port"), f"{field}.port"),
                protocol=_protocol(port.get("protocol"), f"{field}.protocol"),
                target_port=target,
                name=_optional_string(port.get("name"), f"{field}.name"),
            )
        )
    cluster_ip = _cluster_ip(spec.get("clusterIP"))
    headless = cluster_ip == "None" or kind == "ExternalName"
    return Service(
        meta,
        selector=_selector(spec.get("selector"), "spec.selector"),
        ports=tuple(ports),
        cluster_ip=None if headless or not cluster_ip else cluster_ip,
        headless=headless,
        type=kind,
    )


def _endpoint_slice(raw: Mapping[str, Any], meta: Metadata, ignored: list[str]) -> EndpointSlice:
    address_type = raw.get("addressType")
    if not isinstance(address_type, str) or not address_type:
        _fail("addressType is not set")
    ports: list[EndpointPortSpec] = []
    for index, item in enumerate(_list(raw.get("ports"), "ports")):
        field = f"ports[{index}]"
        port = _mapping(item, field)
        number = port.get("port")
        ports.append(
            EndpointPortSpec(
                port=None if number is None else _port(number, f"{field}.port"),
                protocol=_protocol(port.get("protocol"), f"{field}.protocol"),
                name=_optional_string(port.get("name"), f"{field}.name") or None,
            )
        )
    endpoints: list[EndpointSpec] = []
    for index, item in enumerate(_list(raw.get("endpoints"), "endpoints")):
        field = f"endpoints[{index}]"
        endpoint = _mapping(item, field)
        addresses = _list(endpoint.get("addresses"), f"{field}.addresses")
        if not addresses or not all(isinstance(a, str) and a for a in addresses):
            _fail(f"{field}.addresses must be a non-empty list of addresses")
        conditions = _mapping(endpoint.get("conditions"), f"{field}.conditions")
        ready = _optional_bool(conditions.get("ready"), f"{field}.conditions.ready")
        serving = _optional_bool(conditions.get("serving"), f"{field}.conditions.serving")
        terminating = _optional_bool(
            conditions.get("terminating"), f"{field}.conditions.terminating"
        )
        target = _mapping(endpoint.get("targetRef"), f"{field}.targetRef")
        pod_uid = _optional_string(target.get("uid"), f"{field}.targetRef.uid") or None
        pod_name = _optional_string(target.get("name"), f"{field}.targetRef.name") or None
        is_pod = target.get("kind") == "Pod"
        endpoints.append(
            EndpointSpec(
                addresses=tuple(addresses),
                ready=ready is not False,
                serving=serving is not False,
                terminating=terminating is True,
                node=_optional_string(endpoint.get("nodeName"), f"{field}.nodeName") or None,
                pod_uid=pod_uid if is_pod else None,
                pod_name=pod_name if is_pod else None,
            )
        )
    return EndpointSlice(meta, address_type, tuple(ports), tuple(endpoints))


def _network_policy(raw: Mapping[str, Any], meta: Metadata, ignored: list[str]) -> NetworkPolicy:
    spec = _mapping(raw.get("spec"), "spec")
    pod_selector = (
        _full_selector(spec.get("podSelector"), "spec.podSelector") or LabelSelectorSpec()
    )
    types = _list(spec.get("policyTypes"), "spec.policyTypes")
    for index, kind in enumerate(types):
        if kind not in POLICY_TYPES:
            _fail(f"spec.policyTypes[{index}] {kind!r} is not Ingress or Egress")
    ingress = _policy_rules(spec.get("ingress"), "spec.ingress", peers="from")
    egress = _policy_rules(spec.get("egress"), "spec.egress", peers="to")
    if not types:
        # The API server's default, for an object it did not default (a manifest).
        types = ["Ingress", "Egress"] if egress else ["Ingress"]
    return NetworkPolicy(meta, pod_selector, tuple(types), ingress, egress)


def _policy_rules(value: Any, field: str, *, peers: str) -> tuple[NetworkPolicyRuleSpec, ...]:
    rules: list[NetworkPolicyRuleSpec] = []
    for index, item in enumerate(_list(value, field)):
        where = f"{field}[{index}]"
        rule = _mapping(item, where)
        found: list[NetworkPolicyPeerSpec] = []
        for p, entry in enumerate(_list(rule.get(peers), f"{where}.{peers}")):
            at = f"{where}.{peers}[{p}]"
            peer = _mapping(entry, at)
            block = _mapping(peer.get("ipBlock"), f"{at}.ipBlock")
            ip_block = None
            if block:
                cidr = block.get("cidr")
                excepts = _list(block.get("except"), f"{at}.ipBlock.except")
                if not isinstance(cidr, str) or not all(isinstance(e, str) for e in excepts):
                    _fail(f"{at}.ipBlock: cidr and except must be CIDR strings")
                ip_block = IpBlockSpec(cidr=cidr, excepts=tuple(excepts))
            found.append(
                NetworkPolicyPeerSpec(
                    pod_selector=_full_selector(peer.get("podSelector"), f"{at}.podSelector"),
                    namespace_selector=_full_selector(
                        peer.get("namespaceSelector"), f"{at}.namespaceSelector"
                    ),
                    ip_block=ip_block,
                )
            )
        ports: list[NetworkPolicyPortSpec] = []
        for p, entry in enumerate(_list(rule.get("ports"), f"{where}.ports")):
            at = f"{where}.ports[{p}]"
            port = _mapping(entry, at)
            number = port.get("port")
            if isinstance(number, str):
                if not number:
                    _fail(f"{at}.port must be a port number or a port name")
            elif number is not None:
                number = _port(number, f"{at}.port")
            end = port.get("endPort")
            ports.append(
                NetworkPolicyPortSpec(
                    protocol=_protocol(port.get("protocol"), f"{at}.protocol"),
                    port=number,
                    end_port=None if end is None else _port(end, f"{at}.endPort"),
                )
            )
        rules.append(NetworkPolicyRuleSpec(peers=tuple(found), ports=tuple(ports)))
    return tuple(rules)


def _full_selector(value: Any, field: str) -> LabelSelectorSpec | None:
    """A LabelSelector with its expressions; None when the field is absent."""
    if value is None:
        return None
    selector = _mapping(value, field)
    labels = _selector(selector.get("matchLabels"), f"{field}.matchLabels") or {}
    expressions: list[SelectorRequirementSpec] = []
    for index, item in enumerate(
        _list(selector.get("matchExpressions"), f"{field}.matchExpressions")
    ):
        at = f"{field}.matchExpressions[{index}]"
        requirement = _mapping(item, at)
        key, operator = requirement.get("key"), requirement.get("operator")
        values = _list(requirement.get("values"), f"{at}.values")
        if not isinstance(key, str) or (error := label_key_error(key)):
            _fail(f"{at}.key: {error if isinstance(key, str) else 'must be a string'}")
        if operator not in SELECTOR_OPERATORS:
            _fail(
                f"{at}.operator {operator!r} is not one of {', '.join(sorted(SELECTOR_OPERATORS))}"
            )
        if not all(isinstance(v, str) for v in values):
            _fail(f"{at}.values must be strings")
        expressions.append(
            SelectorRequirementSpec(key=key, operator=str(operator), values=tuple(values))
        )
    return LabelSelectorSpec(match_labels=labels, match_expressions=tuple(expressions))


_Parser = Callable[[Mapping[str, Any], Metadata, list[str]], KubeObject]

_PARSERS: dict[tuple[str, str], _Parser] = {
    (CORE, "Namespace"): _namespace,
    (CORE, "Node"): _node,
    (CORE, "Pod"): _pod,
    (CORE, "ReplicationController"): _controller,
    (CORE, "Service"): _service,
    (APPS, "Deployment"): _controller,
    (APPS, "ReplicaSet"): _controller,
    (APPS, "StatefulSet"): _controller,
    (APPS, "DaemonSet"): _controller,
    (DISCOVERY, "EndpointSlice"): _endpoint_slice,
    (NETWORKING, "NetworkPolicy"): _network_policy,
}


# ---- parts of specs ----------------------------------------------------------------------


def _template(value: Any) -> PodTemplate:
    template = _mapping(value, "spec.template")
    if not template:
        _fail("spec.template is not set")
    meta = _mapping(template.get("metadata"), "spec.template.metadata")
    labels, annotations = _labels_and_annotations(meta, "spec.template.metadata")
    return PodTemplate(
        labels=labels,
        annotations=annotations,
        spec=_pod_spec(template.get("spec"), "spec.template.spec"),
        canonical=json.dumps(
            _canonical(template), sort_keys=True, separators=(",", ":"), default=str
        ),
    )


def _canonical(value: Any) -> Any:
    # YAML allows keys of any type; JSON (and sorting) wants them all strings.
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _pod_spec(value: Any, field: str) -> PodSpec:
    spec = _mapping(value, field)
    node_name = _optional_string(spec.get("nodeName"), f"{field}.nodeName") or None
    if node_name is not None and (error := object_name_error(node_name)):
        _fail(f"{field}.nodeName: node {error}")
    host_network = spec.get("hostNetwork", False)
    if not isinstance(host_network, bool):
        _fail(f"{field}.hostNetwork must be true or false, not {host_network!r}")
    ports: list[ContainerPortSpec] = []
    for c, item in enumerate(_list(spec.get("containers"), f"{field}.containers")):
        container = _mapping(item, f"{field}.containers[{c}]")
        for p, entry in enumerate(_list(container.get("ports"), f"{field}.containers[{c}].ports")):
            where = f"{field}.containers[{c}].ports[{p}]"
            port = _mapping(entry, where)
            ports.append(
                ContainerPortSpec(
                    port=_port(port.get("containerPort"), f"{where}.containerPort"),
                    protocol=_protocol(port.get("protocol"), f"{where}.protocol"),
                    name=_optional_string(port.get("name"), f"{where}.name"),
                )
            )
    return PodSpec(node_name=node_name, host_network=host_network, ports=tuple(ports))


def _label_selector(value: Any, ignored: list[str]) -> dict[str, str]:
    """An apps/v1 LabelSelector's matchLabels. knm selects by equality only."""
    if value is None:
        _fail("spec.selector is required")
    selector = _mapping(value, "spec.selector")
    if selector.get("matchExpressions"):
        ignored.append("spec.selector.matchExpressions is ignored (knm reads matchLabels only)")
    return _selector(selector.get("matchLabels"), "spec.selector.matchLabels") or {}


def _selector(value: Any, field: str) -> dict[str, str] | None:
    if value is None:
        return None
    selector = _string_map(value, field)
    if errors := labels_errors(selector):
        _fail(f"{field}: {'; '.join(errors)}")
    return selector


def _replicas(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(f"spec.replicas must be a non-negative integer, not {value!r}")
    return value


def _port(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        _fail(f"{field} must be an integer from 1 to 65535, not {value!r}")
    return value


def _protocol(value: Any, field: str) -> str:
    if value is None:
        return "TCP"
    if value not in PROTOCOLS:
        _fail(f"{field} {value!r} is not one of {', '.join(sorted(PROTOCOLS))}")
    return str(value)


def _cluster_ip(value: Any) -> str | None:
    if value is None or value in ("", "None"):
        return value or None
    if isinstance(value, str):
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            pass
    _fail(f'spec.clusterIP must be an IPv4 address, "" or "None", not {value!r}')


# ---- shapes ------------------------------------------------------------------------------


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        _fail(f"{field} must be a map, not {_type_name(value)}")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(f"{field} must be a list, not {_type_name(value)}")
    return value


def _string_map(value: Any, field: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, item in _mapping(value, field).items():
        if not isinstance(key, str) or not isinstance(item, str):
            _fail(f"{field} must map strings to strings; {key!r}: {item!r} does not")
        result[key] = item
    return result


def _optional_bool(value: Any, field: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        _fail(f"{field} must be true or false, not {value!r}")
    return value


def _optional_string(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        _fail(f"{field} must be a string, not {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    names = {
        dict: "a map",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
