"""The live watcher under load: a client creates pods as fast as the apiserver accepts
them, the watcher (a `knm watcher` process, list then watch) carries them to Kafka.

    eval "$(.venv/bin/knm dev services up)"
    .venv/bin/python bench/watcher.py            # --pods 10000 --clients 8

Pods are created with spec.nodeName set (kwok runs them, as a kubelet would; the
scheduler is not what is measured), round-robin over the cluster's nodes, in a fresh
namespace deleted afterwards. Prints one JSON line:

- `events_per_s`: facts on Kafka per second, from the first create to the last fact
  (every fact the pods cause: created, then running and ready).
- `p50_ms` / `p99_ms`: from the moment the client sent a pod's create to the first fact
  about that pod on Kafka (the producer's timestamp).
- `creates_per_s`: the baseline, pods the apiserver accepted per second in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client
from kubernetes import config as kube

from knm.core.bus.kafka import KafkaBus
from knm.core.events.codec import decode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"name": "bench"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "bench", "ports": [{"containerPort": 80}]}],
        },
    }


def start_watcher(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "knm", "watcher", "--health-port", str(port), "--no-write-back"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not ready(port):
        if watcher.poll() is not None or time.monotonic() > deadline:
            watcher.kill()
            raise SystemExit("the watcher did not become ready")
        time.sleep(0.2)
    return watcher, port


def create_pods(core: Any, namespace: str, *, count: int, clients: int) -> dict[str, float]:
    """Create the pods from `clients` threads; when each create was sent (epoch seconds)."""
    nodes = [node.metadata.name for node in core.list_node().items]
    sent: dict[str, float] = {}

    def create(index: int) -> None:
        name = f"bench-{index:05d}"
        sent[name] = time.time()
        core.create_namespaced_pod(
            namespace, pod(name, nodes[index % len(nodes)]), _preload_content=False
        )

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, range(count)))
    return sent


def read_facts(
    bus: KafkaBus, topic: str, namespace: str, *, pods: int, timeout: float
) -> tuple[dict[str, float], int, float]:
    """The first fact's time per pod, the pods' facts in all, and the last fact's time;
    read until every pod has a fact and nothing came for 5 s."""
    consumer = bus.consumer(group=f"bench-{uuid.uuid4().hex[:6]}", topics=[topic])
    first: dict[str, float] = {}
    facts, last = 0, 0.0
    quiet_since = time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            records = consumer.poll(max_records=5000, timeout=0.5)
            if records:
                quiet_since = time.monotonic()
            for record in records:
                key = decode(record.value).key
                if key.startswith(f"Pod/{namespace}/"):
                    stamp = (record.timestamp_ms or 0) / 1000
                    facts += 1
                    last = max(last, stamp)
                    first.setdefault(key.rsplit("/", 1)[1], stamp)
            if len(first) == pods and time.monotonic() - quiet_since > 5:
                break
    finally:
        consumer.close()
    return first, facts, last


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    bus = KafkaBus(bootstrap=os.environ["KNM_KAFKA_BOOTSTRAP"], client_id="bench")
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    env = {**os.environ, "KNM_TOPIC_PREFIX": prefix, "KNM_LOG_LEVEL": "WARNING"}
    subprocess.run(
        [sys.executable, "-m", "knm", "topics", "create", "--partitions", "8"],
        env=env,
        check=True,
        capture_output=True,
    )
    api = kube.new_client_from_config(config_file=os.environ["KNM_KUBECONFIG"])  # type: ignore[no-untyped-call]
    core: Any = client.CoreV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    watcher, _ = start_watcher(env)
    try:
        started = time.time()
        sent = create_pods(core, namespace, count=args.pods, clients=args.clients)
        created = time.time()
        first, facts, last = read_facts(
            bus, f"{prefix}facts", namespace, pods=args.pods, timeout=args.timeout
        )
    finally:
        watcher.terminate()
        watcher.wait(timeout=60)
        core.delete_namespace(namespace)

    delays = sorted((first[name] - sent[name]) * 1000 for name in first)

    def percentile(q: float) -> float:
        return round(delays[min(len(delays) - 1, int(q * len(delays)))], 1) if delays else -1.0

    print(
        json.dumps(
            {
                "pods": args.pods,
                "pods_seen": len(first),
                "facts": facts,
                "events_per_s": round(facts / max(1e-9, last - started), 1),
                "p50_ms": percentile(0.50),
                "p99_ms": percentile(0.99),
                "creates_per_s": round(args.pods / (created - started), 1),
                "seconds": round(last - started, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
