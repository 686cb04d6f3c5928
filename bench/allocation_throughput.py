"""Pods through watcher -> Kafka -> allocator -> PostgreSQL -> node commands.

    eval "$(.venv/bin/knm dev services up)"
    .venv/bin/python bench/allocation_throughput.py [--pods 20000]

Runs one `knm allocator` process on a fresh database and fresh topics, and in this
process the watcher (manifest source) and a consumer of the node commands.

- Throughput: the watcher publishes all N pods at once; `pods_per_s` is N over the time
  from publishing to the last AttachRequested being on the bus.
- Latency: then M more pods are published in small chunks at half that rate;
  `p50_ms` / `p99_ms` are from a fact's publication to its pod's AttachRequested.
- Baseline: `raw_pods_per_s` is how fast the same PostgreSQL takes the rows a pod
  needs (pod, history line, outbox message: three) inserted in batches of 500, in this
  same run; `ratio_to_raw_insert` is our rate over it.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import tiers, write
from knm.core.bus.kafka import KafkaBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.clock import utcnow
from knm.core.events.base import envelope
from knm.core.events.codec import encode
from knm.core.events.commands import AttachRequested
from knm.core.events.facts import PodObserved
from knm.core.settings import Settings
from knm.core.store.database import create_engine, upgrade
from knm.core.store.rows import insert_rows
from knm.core.store.schema import AddressHistoryRow, OutboxRow, PodRow, table
from knm.core.topics import Topics
from services.watcher.service import Watcher
from services.watcher.source import ManifestSource


def fresh_database(server_url: str) -> str:
    name = f"knm_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url)
    with admin.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    admin = create_engine(server_url)
    with admin.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def raw_insert_rate(url: str, *, pods: int, batch: int) -> float:
    """Pods per second when a pod is just its three rows (pod, history line, outbox
    message), inserted in batches through the same bulk path knm uses."""
    engine = create_engine(url)
    upgrade(engine)
    now = utcnow()

    def ip(i: int) -> str:
        return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"

    started = time.perf_counter()
    for start in range(0, pods, batch):
        numbers = range(start, min(start + batch, pods))
        with engine.begin() as connection:
            insert_rows(
                connection,
                table(PodRow),
                [
                    {
                        "uid": f"raw-{i}",
                        "namespace": "raw",
                        "name": f"pod-{i}",
                        "node": "node-1",
                        "labels": {"name": "tier", "uses": "next"},
                        "annotations": {},
                        "host_network": False,
                        "phase": "Running",
                        "ready": True,
                        "owners": [{"kind": "ReplicationController", "name": "t", "uid": "u"}],
                        "ports": [{"port": 8080, "protocol": "TCP", "name": "http"}],
                        "version": None,
                        "collection": "tier",
                        "uses": [["raw", "next"]],
                        "network": "raw/tier",
                        "ip": ip(i),
                        "block": "10.0.0.0/26",
                    }
                    for i in numbers
                ],
            )
            insert_rows(
                connection,
                table(AddressHistoryRow),
                [
                    {
                        "ip": ip(i),
                        "action": "allocated",
                        "kind": "pod",
                        "pool": "10.0.0.0/8",
                        "namespace": "raw",
                        "name": f"pod-{i}",
                        "uid": f"raw-{i}",
                        "network": "raw/tier",
                        "node": "node-1",
                        "service": None,
                        "at": now,
                        "fact_id": str(uuid.uuid4()),
                    }
                    for i in numbers
                ],
            )
            insert_rows(
                connection,
                table(OutboxRow),
                [
                    {
                        "topic": "raw",
                        "key": f"interface/raw-{i}",
                        "value": b"x" * 600,
                        "headers": [],
                        "created_at": now,
                    }
                    for i in numbers
                ],
            )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return pods / elapsed


def attach_times(
    bus: KafkaBus, topic: str, *, wanted: set[str], group: str, timeout: float
) -> dict[str, int]:
    """Each wanted pod's AttachRequested: when it reached the bus (ms since the epoch)."""
    consumer = bus.consumer(group=group, topics=[topic])
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < len(wanted) and time.monotonic() < deadline:
            for record in consumer.poll(max_records=5000, timeout=0.5):
                # Only the command's type and pod matter here: read just those.
                document = json.loads(record.value)
                if document["type"] == AttachRequested.TYPE:
                    uid = document["payload"]["pod_uid"]
                    if uid in wanted:
                        seen.setdefault(uid, record.timestamp_ms or 0)
    finally:
        consumer.close()
    return seen


def throughput(
    *, bus: KafkaBus, topics: Topics, manifest: Path, nodes: int, group: str
) -> dict[str, Any]:
    """All pods at once: publication to the last AttachRequested."""
    source = ManifestSource([manifest], nodes=nodes)
    pods = {o.event.uid for o in source.snapshot() if isinstance(o.event, PodObserved)}
    publisher = bus.publisher()
    watcher = Watcher(source=source, publisher=publisher, topics=topics, clock=utcnow)
    started_ms = time.time() * 1000
    facts = watcher.publish_changes()
    published_ms = time.time() * 1000
    times = attach_times(bus, topics.node_commands, wanted=pods, group=group, timeout=600)
    publisher.close()
    if len(times) < len(pods):
        raise SystemExit(f"only {len(times)} of {len(pods)} pods were attached")
    rate = len(pods) / ((max(times.values()) - started_ms) / 1000)
    return {
        "facts": facts,
        "publish_s": round((published_ms - started_ms) / 1000, 2),
        "pods_per_s": round(rate),
    }


def latency(
    *, bus: KafkaBus, topics: Topics, manifest: Path, nodes: int, rate: float, group: str
) -> dict[str, Any]:
    """Pods of a new namespace in chunks of 50 at `rate`: publication to AttachRequested."""
    more = ManifestSource([manifest], nodes=nodes).snapshot()
    publisher = bus.publisher()
    chunk = 50
    interval = chunk / max(rate, 1.0)
    sent: dict[str, float] = {}
    for start in range(0, len(more), chunk):
        part = more[start : start + chunk]
        at = time.time() * 1000
        publisher.publish(
            [
                OutgoingMessage(
                    topics.facts,
                    o.partition_key,
                    encode(envelope(o.event, key=o.key, occurred_at=utcnow())),
                )
                for o in part
            ]
        )
        sent.update({o.event.uid: at for o in part if isinstance(o.event, PodObserved)})
        time.sleep(interval)
    publisher.close()
    arrived = attach_times(bus, topics.node_commands, wanted=set(sent), group=group, timeout=300)
    latencies = sorted(arrived[uid] - sent[uid] for uid in arrived)
    return {
        "latency_pods": len(latencies),
        "latency_offered_per_s": round(rate),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=20_000)
    parser.add_argument("--latency-pods", type=int, default=4_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    server_url = os.environ["KNM_DATABASE_URL"]
    bootstrap = os.environ["KNM_KAFKA_BOOTSTRAP"]
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    database = fresh_database(server_url)
    raw_database = fresh_database(server_url)
    topics = Settings(topic_prefix=prefix).topics()
    bus = KafkaBus(bootstrap=bootstrap, client_id="knm-bench")
    bus.create_topics(topics.specs(partitions=args.partitions))
    env = {
        **os.environ,
        "KNM_DATABASE_URL": database,
        "KNM_TOPIC_PREFIX": prefix,
        "KNM_BATCH_SIZE": str(args.batch),
        "KNM_LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "-m", "knm", "db", "upgrade"], env=env, check=True, capture_output=True
    )
    allocator = subprocess.Popen([sys.executable, "-m", "knm", "allocator"], env=env)
    result: dict[str, Any] = {"pods": args.pods, "nodes": args.nodes, "batch": args.batch}
    try:
        with tempfile.TemporaryDirectory(prefix="knm-bench-") as scratch:
            replicas = 20
            cluster = write(
                Path(scratch) / "cluster.yaml",
                tiers(
                    namespaces=max(1, args.pods // (replicas * 50)),
                    tiers_per_namespace=50,
                    replicas=replicas,
                ),
            )
            more = write(
                Path(scratch) / "more.yaml",
                tiers(
                    namespaces=1,
                    tiers_per_namespace=max(1, args.latency_pods // replicas),
                    replicas=replicas,
                    prefix="latency",
                ),
            )
            # Let the allocator join its group first, so that the clock measures work.
            time.sleep(8)
            result.update(
                throughput(bus=bus, topics=topics, manifest=cluster, nodes=args.nodes, group=prefix)
            )
            result.update(
                latency(
                    bus=bus,
                    topics=topics,
                    manifest=more,
                    nodes=args.nodes,
                    rate=result["pods_per_s"] / 2,
                    group=f"{prefix}latency",
                )
            )
        raw = raw_insert_rate(raw_database, pods=args.pods, batch=args.batch)
        result["raw_pods_per_s"] = round(raw)
        result["ratio_to_raw_insert"] = round(result["pods_per_s"] / raw, 3)
    finally:
        allocator.terminate()
        allocator.wait(timeout=60)
        drop_database(server_url, database)
        drop_database(server_url, raw_database)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
