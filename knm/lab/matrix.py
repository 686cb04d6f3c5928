"""`knm lab matrix`: every expected probe, made for real, side by side."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from knm.lab.expect import LabPod, LabPolicy, LabService, probes
from knm.lab.probe import probe
from knm.lab.record import LabRecord

# Denied probes wait out their timeout: run many at once.
PARALLEL = 32
TIMEOUT = 1.0


def run_matrix(lab: LabRecord, *, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    planned = probes(
        pods=[
            LabPod(key=p.key, network=p.network, ip=p.ip, ports=tuple(p.ports)) for p in lab.pods
        ],
        services=[
            LabService(
                key=s.key,
                vip=s.vip,
                network=s.network,
                ports=tuple(s.ports),
                backends=tuple(s.backends),
            )
            for s in lab.services
        ],
        policies=[
            LabPolicy(from_network=p.from_network, to_network=p.to_network, ports=tuple(p.ports))
            for p in lab.policies
        ],
    )
    netns = {pod.key: pod.netns for pod in lab.pods}
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        outcomes = list(
            pool.map(
                lambda p: probe(netns=netns[p.source], ip=p.ip, port=p.port, timeout=timeout),
                planned,
            )
        )
    return [
        {
            "from": planned_probe.source,
            "to": f"{planned_probe.ip}:{planned_probe.port}",
            "target": planned_probe.target,
            "expected": planned_probe.expected,
            "observed": outcome.connected,
            "answered_by": outcome.answered_by,
        }
        for planned_probe, outcome in zip(planned, outcomes, strict=True)
    ]
