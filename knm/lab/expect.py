"""Which connections the policy allows, for `knm lab matrix`. Pure.

DESIGN.md's rule: pods of one collection reach each other, directly and through the
VIPs of services whose backends are in their own collection; a `uses` policy lets a
collection reach a service's VIP on that service's ports; everything else between
collections is denied. The lab probes every pod's ports from every other pod, and every
service port of every VIP from every pod.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LabPod:
    key: str  # <namespace>/<name>
    network: str
    ip: str
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LabService:
    key: str  # <namespace>/<name>
    vip: str
    network: str
    ports: tuple[int, ...]  # TCP service ports
    backends: tuple[str, ...]  # pod keys


@dataclass(frozen=True, slots=True)
class LabPolicy:
    from_network: str
    to_network: str
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Probe:
    source: str  # pod key
    ip: str
    port: int
    target: str  # a pod key, or <namespace>/service/<name>
    expected: bool


def service_target(key: str) -> str:
    namespace, name = key.split("/", 1)
    return f"{namespace}/service/{name}"


def probes(
    *, pods: Sequence[LabPod], services: Sequence[LabService], policies: Sequence[LabPolicy]
) -> list[Probe]:
    networks = {pod.key: pod.network for pod in pods}
    allowed = {(p.from_network, p.to_network, port) for p in policies for port in p.ports}
    result: list[Probe] = []
    for source in sorted(pods, key=lambda p: p.key):
        for target in sorted(pods, key=lambda p: p.key):
            if target.key == source.key:
                continue
            for port in target.ports:
                result.append(
                    Probe(
                        source=source.key,
                        ip=target.ip,
                        port=port,
                        target=target.key,
                        expected=source.network == target.network,
                    )
                )
        for service in sorted(services, key=lambda s: s.key):
            backend_networks = {networks[b] for b in service.backends if b in networks}
            for port in service.ports:
                expected = bool(backend_networks) and (
                    source.network in backend_networks
                    or (source.network, service.network, port) in allowed
                )
                result.append(
                    Probe(
                        source=source.key,
                        ip=service.vip,
                        port=port,
                        target=service_target(service.key),
                        expected=expected,
                    )
                )
    return result
