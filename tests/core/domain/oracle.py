"""The network rules computed from scratch, the slow obvious way, to check the engine by."""

from __future__ import annotations

from dataclasses import dataclass

from knm.core.domain.engine import (
    NamespaceGone,
    NamespaceSeen,
    NodeGone,
    NodeSeen,
    Observation,
    PodGone,
    PodSeen,
    ServiceGone,
    ServiceSeen,
    wants_network,
)
from knm.core.domain.labels import (
    collection_of,
    pod_network_name,
    selects,
    service_network_name,
    uses_of,
)
from knm.core.domain.model import NetworkSettings, Pod, Service
from knm.core.domain.state import ClusterState


@dataclass
class Live:
    """The objects that exist after a sequence of observations (with the engine's tombstones)."""

    pods: dict[str, Pod]
    services: dict[str, Service]

    @classmethod
    def replay(cls, observations: list[Observation]) -> Live:
        pods: dict[str, Pod] = {}
        services: dict[str, Service] = {}
        gone: set[str] = set()
        for observation in observations:
            match observation:
                case PodSeen(pod=pod) if pod.uid not in gone:
                    pods[pod.uid] = pod
                case PodGone(uid=uid):
                    gone.add(uid)
                    pods.pop(uid, None)
                case ServiceSeen(service=service) if service.uid not in gone:
                    services[service.uid] = service
                case ServiceGone(uid=uid):
                    gone.add(uid)
                    services.pop(uid, None)
                case NamespaceGone(name=name):
                    for uid in [u for u, p in pods.items() if p.namespace == name]:
                        gone.add(uid)
                        del pods[uid]
                    for uid in [u for u, s in services.items() if s.namespace == name]:
                        gone.add(uid)
                        del services[uid]
                case NodeSeen() | NodeGone() | NamespaceSeen():
                    pass
        return cls(pods=pods, services=services)


def expected_model(
    live: Live, state: ClusterState, settings: NetworkSettings
) -> dict[str, set[tuple[str, str]]]:
    """Networks, backends, floating IPs and policies the rules demand, given the addresses
    the engine chose (addresses depend on history; everything else must not)."""
    label = settings.collection_label
    collection = {uid: collection_of(pod, label=label) for uid, pod in live.pods.items()}
    members = {uid for uid, pod in live.pods.items() if wants_network(pod)}

    def has_ip(uid: str) -> bool:
        record = state.pods.get(uid)
        return record is not None and record.ip is not None

    networks = {("pod", pod_network_name(live.pods[u].namespace, collection[u])) for u in members}
    backends: dict[str, set[str]] = {}
    for sid, service in live.services.items():
        backends[sid] = {
            uid
            for uid, pod in live.pods.items()
            if pod.namespace == service.namespace
            and selects(service.selector, pod.labels)
            and has_ip(uid)
            and pod.ready
        }
    vip_services = {sid for sid in live.services if (r := state.services.get(sid)) and r.vip}
    for sid in vip_services:
        service = live.services[sid]
        networks.add(("service", service_network_name(service.namespace, service.name)))
    floating = {(sid, uid) for sid in vip_services for uid in backends[sid]}

    def collections_of(sid: str) -> set[tuple[str, str]]:
        service = live.services[sid]
        named = (service.selector or {}).get(label)
        if named:
            return {(service.namespace, named)}
        return {(service.namespace, collection[u]) for u in backends[sid]}

    policies = set()
    for uid in members:
        pod = live.pods[uid]
        source = (pod.namespace, collection[uid])
        targets, _ = uses_of(pod, settings)
        for target in targets:
            if target == source:
                continue
            for sid in vip_services:
                if target in collections_of(sid):
                    service = live.services[sid]
                    policies.add(
                        (
                            pod_network_name(*source),
                            service_network_name(service.namespace, service.name),
                        )
                    )
    return {
        "networks": networks,
        "floating": {(s, p) for s, p in floating},
        "backends": {(s, p) for s, ps in backends.items() for p in ps},
        "policies": policies,
    }
