"""The Linux dataplane on one node: programming 10,000 services, changing one, and VIP
traffic against direct traffic.

    .venv/bin/python bench/dataplane.py [--services 10000] [--backends 5] [--changes 200]

Builds a node namespace with three pods wired by `PodWiring`, then on that node:

- `full_sync_s`: `LinuxDataplane.program` of a program with N services x B backends (and
  an allow per service from the pods' network) from nothing: computing the table and
  the one nftables transaction that builds it. The median of F rounds (`--full-syncs`),
  each from nothing (no table, a vrouter that knows nothing); `full_sync_cpu_s` is the
  CPU the process spent on one (the kernel's share included, both of the vrouter's
  threads), less sensitive than the wall time to the machine's other work.
  `restart_sync_s`: the same program by a vrouter that knows nothing over the table the
  kernel holds (a restarted agent), which replaces it in one transaction rather than in
  stages; the median of F rounds.
- `change_p50_ms` / `change_p99_ms`: one backend of one service replaced, over C changes:
  the whole agent-side cost from the VIP's piece as it arrives on the vrouter topic
  (bytes) to the kernel holding it: decoding, folding into the node's program, working
  out the commands, the nftables transaction. `change_kernel_p50_ms` / `..._p99_ms` are
  the nftables transaction alone.
- `vip_over_direct`: iperf3 (Debian's) TCP throughput from a pod to a VIP whose backend
  is another pod, over the same to that pod's address directly; same node, same run;
  the median ratio of R interleaved rounds (`--iperf-rounds`).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nftables
from pyroute2 import IPRoute, netns

from knm.core.domain.addresses import host_ifname, mac_for
from knm.core.events.base import envelope
from knm.core.events.codec import decode, encode
from knm.core.events.intents import PolicyPortSpec
from knm.core.events.vrouter import (
    Allow,
    LocalInterface,
    NetworkMembers,
    OverlayConfigured,
    OverlayNode,
    VipBackend,
    VipConfigured,
    VipMap,
    VrouterConfigured,
)
from services.agent.dataplane import PodInterface, Sandbox
from services.agent.linux.dataplane import LinuxDataplane
from services.agent.linux.namespaces import NamespaceThread
from services.agent.linux.vrouter import Vrouter
from services.agent.linux.wiring import PodWiring
from services.agent.program import NodeProgram

NETWORK = "bench/web"
GATEWAY = "169.254.1.1"
IPERF_PORT = 5201
IPERF_VIP = "10.253.0.1"


def underlay(node: str) -> None:
    def make() -> None:
        with IPRoute() as ipr:
            ipr.link("add", ifname="underlay", kind="veth", peer={"ifname": "underlay-peer"})
            (index,) = ipr.link_lookup(ifname="underlay")
            ipr.addr("add", index=index, address="192.168.0.1", prefixlen=16)
            for name in ("underlay", "underlay-peer"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")

    thread = NamespaceThread(node, name="setup")
    thread.run(make)
    thread.close()


def pod(n: int) -> PodInterface:
    ip = ipaddress.IPv4Address(f"10.0.0.{n}")
    uid = f"bench-pod-{n}"
    return PodInterface(
        pod_uid=uid,
        namespace="bench",
        name=f"pod-{n}",
        network=NETWORK,
        ip=str(ip),
        mac=mac_for(ip),
        gateway=GATEWAY,
        ifname=host_ifname(uid),
    )


def local(iface: PodInterface) -> LocalInterface:
    return LocalInterface(
        pod_uid=iface.pod_uid,
        namespace=iface.namespace,
        name=iface.name,
        ip=iface.ip,
        mac=iface.mac,
        ifname=iface.ifname,
        network=iface.network,
    )


def service(index: int, backends: int, *, shift: int = 0) -> VipMap:
    vip = ipaddress.IPv4Address("10.254.0.0") + index + 1
    first = int(ipaddress.IPv4Address("10.1.0.0")) + index * backends
    port = PolicyPortSpec(port=80, protocol="TCP")
    return VipMap(
        namespace="bench",
        name=f"svc-{index}",
        vip=str(vip),
        network=f"bench/service-svc-{index}",
        ports=(port,),
        backends=tuple(
            VipBackend(
                ip=str(ipaddress.IPv4Address(first + b + shift)),
                node="node-2",
                target_ports=((80, "TCP", 8080),),
            )
            for b in range(backends)
        ),
    )


def allow(vip_map: VipMap) -> Allow:
    return Allow(
        from_network=NETWORK,
        vip=vip_map.vip,
        service=f"{vip_map.namespace}/{vip_map.name}",
        ports=vip_map.ports,
        declared=True,
    )


def program(pods: list[PodInterface], services: list[VipMap], revision: str) -> VrouterConfigured:
    iperf = VipMap(
        namespace="bench",
        name="iperf",
        vip=IPERF_VIP,
        network="bench/service-iperf",
        ports=(PolicyPortSpec(port=IPERF_PORT, protocol="TCP"),),
        backends=(
            VipBackend(
                ip=pods[1].ip, node="node-1", target_ports=((IPERF_PORT, "TCP", IPERF_PORT),)
            ),
        ),
    )
    every = [iperf, *services]
    return VrouterConfigured(
        node="node-1",
        revision=revision,
        gateway=GATEWAY,
        interfaces=tuple(local(p) for p in pods),
        networks=(NetworkMembers(name=NETWORK, members=tuple(p.ip for p in pods)),),
        services=tuple(every),
        allows=tuple(allow(s) for s in every),
    )


def iperf(client: str, server: str, target: str, seconds: int) -> float:
    listening = subprocess.Popen(
        ["ip", "netns", "exec", server, "iperf3", "-s", "-1", "-p", str(IPERF_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # the server's listen: iperf3 has no readiness signal
        result = subprocess.run(
            ["ip", "netns", "exec", client, "iperf3", "-J", "-c", target, "-p", str(IPERF_PORT),
             "-t", str(seconds)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        listening.wait(timeout=30)
    report: dict[str, Any] = json.loads(result.stdout)
    return float(report["end"]["sum_received"]["bits_per_second"])


def full_syncs(
    dataplane: LinuxDataplane,
    *,
    node: str,
    program: NodeProgram,
    overlay: OverlayConfigured,
    rounds: int,
    over_live: bool = False,
) -> tuple[list[float], list[float]]:
    """Seconds and CPU seconds of each round, each from nothing (no table in the kernel,
    a vrouter that knows nothing) or, `over_live`, by a vrouter that knows nothing on a
    node whose kernel holds the table (a restarted agent). The first round from nothing
    is the agent's own; the others are separate vrouters on the same node."""
    syncs: list[float] = []
    cpus: list[float] = []
    for round_ in range(rounds):
        fresh = Vrouter(node="node-1", netns=node) if round_ or over_live else None
        if fresh is not None and not over_live:
            drop_table(node)
        started, cpu = time.perf_counter(), time.process_time()
        (fresh or dataplane).program(program, None, overlay)
        syncs.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        print("full sync:" if not over_live else "over the live table:",
              (fresh or dataplane.vrouter).last, file=sys.stderr)  # fmt: skip
        if fresh is not None:
            fresh.close()
    return syncs, cpus


def drop_table(node: str) -> None:
    def drop() -> None:
        rc, _, error = nftables.Nftables().cmd("delete table ip knm")
        assert rc == 0, error

    thread = NamespaceThread(node, name="drop")
    thread.run(drop)
    thread.close()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--backends", type=int, default=5)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--iperf-seconds", type=int, default=5)
    parser.add_argument("--iperf-rounds", type=int, default=5)
    parser.add_argument("--full-syncs", type=int, default=3)
    args = parser.parse_args()

    tag = secrets.token_hex(2)
    node = f"knmb-{tag}-node"
    pod_spaces = [f"knmb-{tag}-pod{n}" for n in (1, 2, 3)]
    for name in [node, *pod_spaces]:
        netns.create(name)
    try:
        underlay(node)
        pods = [pod(n) for n in (1, 2, 3)]
        vrouter = Vrouter(node="node-1", netns=node)
        dataplane = LinuxDataplane(wiring=PodWiring(node_netns=node), vrouter=vrouter)
        for iface, space in zip(pods, pod_spaces, strict=True):
            dataplane.attach(
                iface,
                Sandbox(container_id=iface.pod_uid, netns=f"/var/run/netns/{space}", ifname="eth0"),
            )
        overlay = OverlayConfigured(
            revision="1",
            nodes=(
                OverlayNode(name="node-1", address="192.168.0.1", blocks=("10.0.0.0/26",)),
                OverlayNode(name="node-2", address="192.168.0.2", blocks=("10.1.0.0/16",)),
            ),
        )
        services = [service(i, args.backends) for i in range(args.services)]
        node_program = NodeProgram("node-1")
        node_program.take(program(pods, services, "0"))

        syncs, cpus = full_syncs(
            dataplane, node=node, program=node_program, overlay=overlay, rounds=args.full_syncs
        )
        full_sync = statistics.median(syncs)
        restarts, _ = full_syncs(
            dataplane,
            node=node,
            program=node_program,
            overlay=overlay,
            rounds=args.full_syncs,
            over_live=True,
        )

        changes: list[float] = []
        kernel: list[float] = []
        for change in range(1, args.changes + 1):
            index = (change * 7919) % args.services
            changed = service(index, args.backends, shift=1)
            wire = encode(
                envelope(
                    VipConfigured(node="node-1", vip=changed, allows=(allow(changed),)),
                    key=f"vrouter/node-1/vip/{changed.vip}",
                    occurred_at=datetime.now(UTC),
                )
            )
            started = time.perf_counter()
            pieces = node_program.take(decode(wire).payload)
            dataplane.program(node_program, pieces, overlay)
            changes.append((time.perf_counter() - started) * 1000)
            kernel.append(vrouter.last.nft_ms)
            assert len(pieces) == 1

        # Interleaved rounds: a burst of load from elsewhere on the machine hits one
        # round of each kind rather than all of one.
        ratios: list[float] = []
        directs: list[float] = []
        vias: list[float] = []
        for _ in range(args.iperf_rounds):
            directs.append(iperf(pod_spaces[0], pod_spaces[1], pods[1].ip, args.iperf_seconds))
            vias.append(iperf(pod_spaces[0], pod_spaces[1], IPERF_VIP, args.iperf_seconds))
            ratios.append(vias[-1] / directs[-1])
        direct, through_vip = statistics.median(directs), statistics.median(vias)
        dataplane.close()
    finally:
        for name in [*pod_spaces, node]:
            netns.remove(name)

    print(
        json.dumps(
            {
                "services": args.services,
                "backends_per_service": args.backends,
                "full_sync_s": round(full_sync, 3),
                "full_sync_runs_s": [round(s, 3) for s in syncs],
                "full_sync_cpu_s": round(statistics.median(cpus), 3),
                "restart_sync_s": round(statistics.median(restarts), 3),
                "change_p50_ms": round(statistics.median(changes), 2),
                "change_p99_ms": round(percentile(changes, 99), 2),
                "change_kernel_p50_ms": round(statistics.median(kernel), 2),
                "change_kernel_p99_ms": round(percentile(kernel, 99), 2),
                "direct_gbps": round(direct / 1e9, 2),
                "vip_gbps": round(through_vip / 1e9, 2),
                "vip_over_direct": round(statistics.median(ratios), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
