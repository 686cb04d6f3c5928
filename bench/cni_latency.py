"""knm-cni against Debian's reference plugins (ptp with host-local IPAM), under cnitool.

    eval "$(.venv/bin/knm dev services up)"     # builds cnitool (KNM_CNITOOL)
    .venv/bin/python bench/cni_latency.py [--runs 20]

- Start-up: `VERSION` executed `runs` times, knm-cni (Python) and ptp (Go); the time
  until the process exits.
- ADD and DEL: `cnitool add|del` of `runs` pod namespaces, each the whole runtime call
  (cnitool, the plugin, and for knm the agent's wiring over its socket; for ptp its
  veth, host-local's address and the routes). The agent runs in this process with the
  Linux pod wiring on a node namespace, and has each pod's AttachRequested already;
  ptp runs with cnitool inside a node namespace of its own (its host end goes there).
- `knm_agent_add_ms`: the agent's share of knm's ADD, the plugin's request answered
  (in-process, no executable started).

Prints one JSON line of medians (and p90s) in milliseconds.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyroute2 import netns

from knm.core.bus.memory import MemoryBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.domain.addresses import host_ifname, mac_for
from knm.core.events.base import envelope
from knm.core.events.codec import encode
from knm.core.events.commands import AttachRequested
from knm.core.topics import Topics
from services.agent.cni.plugin import run as run_plugin
from services.agent.cni.server import CniServer
from services.agent.linux.dataplane import LinuxDataplane
from services.agent.linux.namespaces import CLONE_NEWNET, netns_path
from services.agent.linux.vrouter import Vrouter
from services.agent.linux.wiring import PodWiring
from services.agent.service import Agent

REFERENCE_PLUGINS = "/usr/lib/cni"
KNM_PLUGINS = os.path.dirname(sys.executable)
TOPICS = Topics(prefix="bench.")
NODE = "bench-node"


def milliseconds(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return {"median": round(statistics.median(ordered) * 1000, 1), "p90": round(p90 * 1000, 1)}


def timed(action: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    action(*args, **kwargs)
    return time.perf_counter() - started


def execute(
    argv: list[str], *, env: dict[str, str], stdin: bytes = b"", netns: str | None = None
) -> None:
    def enter() -> None:
        if netns is not None:
            descriptor = os.open(netns, os.O_RDONLY)
            entered = ctypes.CDLL(None, use_errno=True).setns(descriptor, CLONE_NEWNET)
            os.close(descriptor)
            if entered != 0:
                raise OSError(ctypes.get_errno(), "setns")

    done = subprocess.run(
        argv, input=stdin, env=env, capture_output=True, check=False, preexec_fn=enter
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed: {done.stdout!r} {done.stderr!r}")


class Spaces:
    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.made: list[str] = []

    def make(self, name: str) -> str:
        full = f"knmb-{self.run}-{name}"
        netns.create(full)
        self.made.append(full)
        return netns_path(full)

    def close(self) -> None:
        for full in self.made:
            netns.remove(full)


@contextmanager
def knm_agent(node: str, pods: list[AttachRequested]) -> Iterator[str]:
    bus = MemoryBus(partitions=2)
    bus.publisher().publish(
        [
            OutgoingMessage(
                topic=TOPICS.node_commands,
                key=NODE,
                value=encode(
                    envelope(pod, key=f"interface/{pod.pod_uid}", occurred_at=datetime.now(UTC))
                ),
            )
            for pod in pods
        ]
    )
    agent = Agent(
        node=NODE,
        bus=bus,
        topics=TOPICS,
        dataplane=LinuxDataplane(
            wiring=PodWiring(node_netns=node), vrouter=Vrouter(node=NODE, netns=node)
        ),
    )
    agent.start()
    while agent.step():
        pass
    directory = tempfile.mkdtemp(prefix="knmb-")
    server = CniServer(path=f"{directory}/agent.sock", handler=agent)
    server.start()
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    loop.start()
    try:
        yield server.path
    finally:
        stop.set()
        loop.join()
        agent.close()
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


def pod(n: int) -> AttachRequested:
    ip = IPv4Address("10.0.0.0") + 10 + n
    uid = f"bench-{n}"
    return AttachRequested(
        node=NODE,
        pod_uid=uid,
        namespace="bench",
        name=f"pod-{n}",
        network="bench/pods",
        ip=str(ip),
        mac=mac_for(ip),
        gateway="169.254.1.1",
        ifname=host_ifname(uid),
    )


def cnitool_env(*, confdir: str, plugins: str, args: str = "") -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "NETCONFPATH": confdir, "CNI_PATH": plugins}
    if args:
        env["CNI_ARGS"] = args
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args()
    cnitool = os.environ.get("KNM_CNITOOL")
    if not cnitool:
        sys.exit('KNM_CNITOOL is not set: eval "$(.venv/bin/knm dev services up)"')
    runs = options.runs
    spaces = Spaces()
    confdir = tempfile.mkdtemp(prefix="knmb-netconf-")
    ipam_dir = tempfile.mkdtemp(prefix="knmb-ipam-")
    try:
        results: dict[str, Any] = {"runs": runs}
        version = b'{"cniVersion": "1.0.0"}'
        plugins = {"knm": f"{KNM_PLUGINS}/knm-cni", "ptp": f"{REFERENCE_PLUGINS}/ptp"}
        for name, plugin in plugins.items():
            results[f"{name}_version_ms"] = milliseconds(
                [
                    timed(execute, [plugin], env={"CNI_COMMAND": "VERSION"}, stdin=version)
                    for _ in range(runs)
                ]
            )

        # knm: the agent wires its node namespace.
        node = spaces.make("knm-node")
        boxes = [spaces.make(f"knm-pod{n}") for n in range(runs)]
        pods = [pod(n) for n in range(runs)]
        with knm_agent(node, pods) as sock:
            with open(f"{confdir}/10-knm.conflist", "w") as file:
                json.dump(
                    {
                        "cniVersion": "1.0.0",
                        "name": "knmbench",
                        "plugins": [{"type": "knm-cni", "agentSocket": sock}],
                    },
                    file,
                )
            envs = [
                cnitool_env(
                    confdir=confdir,
                    plugins=KNM_PLUGINS,
                    args=f"K8S_POD_NAMESPACE=bench;K8S_POD_NAME={each.name}",
                )
                for each in pods
            ]
            calls = list(zip(boxes, envs, strict=True))
            results["knm_add_ms"] = milliseconds(
                [timed(execute, [cnitool, "add", "knmbench", box], env=env) for box, env in calls]
            )
            results["knm_del_ms"] = milliseconds(
                [timed(execute, [cnitool, "del", "knmbench", box], env=env) for box, env in calls]
            )
            config = json.dumps(
                {"cniVersion": "1.0.0", "name": "knmbench", "type": "knm-cni", "agentSocket": sock}
            ).encode()
            direct = [
                timed(
                    run_plugin,
                    {
                        "CNI_COMMAND": "ADD",
                        "CNI_CONTAINERID": f"direct{n}",
                        "CNI_NETNS": box,
                        "CNI_IFNAME": "eth0",
                        "CNI_ARGS": f"K8S_POD_NAMESPACE=bench;K8S_POD_NAME={each.name}",
                    },
                    config,
                )
                for n, (box, each) in enumerate(zip(boxes, pods, strict=True))
            ]
            results["knm_agent_add_ms"] = milliseconds(direct)

        # ptp + host-local: cnitool runs inside a node namespace of its own.
        ptp_node = spaces.make("ptp-node")
        ptp_boxes = [spaces.make(f"ptp-pod{n}") for n in range(runs)]
        os.unlink(f"{confdir}/10-knm.conflist")
        with open(f"{confdir}/10-ptp.conflist", "w") as file:
            json.dump(
                {
                    "cniVersion": "1.0.0",
                    "name": "ptpbench",
                    "plugins": [
                        {
                            "type": "ptp",
                            "ipMasq": False,
                            "ipam": {
                                "type": "host-local",
                                "subnet": "10.99.0.0/24",
                                "dataDir": ipam_dir,
                                "routes": [{"dst": "0.0.0.0/0"}],
                            },
                        }
                    ],
                },
                file,
            )
        env = cnitool_env(confdir=confdir, plugins=REFERENCE_PLUGINS)
        for command in ("add", "del"):
            results[f"ptp_{command}_ms"] = milliseconds(
                [
                    timed(execute, [cnitool, command, "ptpbench", box], env=env, netns=ptp_node)
                    for box in ptp_boxes
                ]
            )
        print(json.dumps(results))
    finally:
        spaces.close()
        shutil.rmtree(confdir, ignore_errors=True)
        shutil.rmtree(ipam_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
