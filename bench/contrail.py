"""Contrail backend: how fast knm converges the VNC config API, and what it costs in calls.

10,000 pods in 500 tiers behind 500 services (`bench/synthetic.py`), settled by the
embedded pipeline, then reconciled into the VNC test server running as its own process
(so that server and client do not share one interpreter):

- `objects_per_s`: objects created per second by the first reconcile (from nothing);
- `calls_per_pod`: every API call of that reconcile (lists, creates, ...) per pod;
- `noop_reconcile_calls` / `noop_reconcile_writes`: a second reconcile with nothing
  changed (goal: 0 writes);
- `writes_per_new_pod`: writes of the reconcile after `--new-pods` pods were added to
  existing tiers (goal: at most 4: machine, interface, instance IP, and the service's
  floating IP gaining the interface);
- `raw_posts_per_s`: the baseline, plain POSTs of one small object each through a
  `requests` session to the same server; `objects_over_raw` the ratio.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.synthetic import tiers, write
from knm.core.settings import Settings
from knm.runtime.embedded import EmbeddedPipeline
from services.applier.contrail.backend import ContrailBackend
from services.applier.contrail.client import VncClient


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "knm", "contrail", "test-server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    # Generous: on a busy machine importing knm and vnc_api takes a while.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            return server
        except requests.ConnectionError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the VNC test server did not start")


def raw_posts_per_s(url: str, *, count: int) -> float:
    session = requests.Session()
    started = time.perf_counter()
    for index in range(count):
        answer = session.post(
            f"{url}/virtual-machines",
            json={"virtual-machine": {"fq_name": [f"baseline-{index}"]}},
            timeout=10,
        )
        answer.raise_for_status()
    elapsed = time.perf_counter() - started
    session.close()
    return count / elapsed


def extra_pods(count: int) -> dict[str, Any]:
    labels = {"name": "tier-0", "extra": "yes"}
    return {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": {"name": "tier-0-extra", "namespace": "team-0"},
        "spec": {
            "replicas": count,
            "selector": labels,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


def main() -> None:  # noqa: PLR0915 (one measured story, told in order)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--tiers", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--new-pods", type=int, default=20, help="pods added afterwards")
    args = parser.parse_args()
    settings = Settings()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port)
    try:
        with tempfile.TemporaryDirectory(prefix="knm-bench-") as scratch:
            root = Path(scratch)
            documents = tiers(
                namespaces=args.namespaces,
                tiers_per_namespace=args.tiers,
                replicas=args.replicas,
            )
            manifest = write(root / "cluster.yaml", documents)
            pipeline = EmbeddedPipeline(
                paths=[manifest],
                nodes=args.nodes,
                settings=settings,
                database_url=f"sqlite:///{root / 'knm.db'}",
            )
            pipeline.start()
            pipeline.publish()
            pipeline.settle()
            model = pipeline.applier.model
            pods = len(model.interfaces)

            client = VncClient(url=url)
            backend = ContrailBackend(
                client=client,
                cluster="bench",
                pod_pools=settings.pod_pools,
                service_pools=settings.service_pools,
            )
            started = time.perf_counter()
            first = backend.reconcile(model)
            first_seconds = time.perf_counter() - started
            first_calls = sum(client.calls.values())
            created = sum(1 for w in first.writes if w.operation == "create")

            client.calls.clear()
            started = time.perf_counter()
            noop = backend.reconcile(model)
            noop_seconds = time.perf_counter() - started
            noop_calls = sum(client.calls.values())
            noop_writes = client.writes
            assert not noop.writes

            # New pods in an existing tier (and behind its service), from a controller
            # added last so that no existing pod is scheduled elsewhere.
            write(manifest, [*documents, extra_pods(args.new_pods)])
            pipeline.publish()
            pipeline.settle()
            new_pods = len(model.interfaces) - pods
            client.calls.clear()
            backend.reconcile(model)
            new_writes = client.writes
            pipeline.close()

            raw = raw_posts_per_s(url, count=2000)
    finally:
        server.terminate()
        server.wait(timeout=10)
    objects_per_s = created / first_seconds
    print(
        json.dumps(
            {
                "pods": pods,
                "services": len(model.services),
                "objects_created": created,
                "first_reconcile_seconds": round(first_seconds, 1),
                "objects_per_s": round(objects_per_s),
                "calls_per_pod": round(first_calls / pods, 2),
                "noop_reconcile_calls": noop_calls,
                "noop_reconcile_writes": noop_writes,
                "noop_reconcile_seconds": round(noop_seconds, 1),
                "new_pods": new_pods,
                "writes_per_new_pod": round(new_writes / new_pods, 2) if new_pods else None,
                "raw_posts_per_s": round(raw),
                "objects_over_raw": round(objects_per_s / raw, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
