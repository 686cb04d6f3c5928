"""Facts processed per second by the embedded pipeline, beside the raw database insert rate
measured in the same run (these machines are noisy: compare the ratio, not the figures).

    .venv/bin/python bench/embedded_throughput.py [--namespaces 10 --tiers 50 --replicas 20]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import tiers, write
from knm.core.bus.memory import MemoryBus
from knm.core.clock import utcnow
from knm.core.settings import Settings
from knm.core.store.database import create_engine, upgrade
from knm.runtime.embedded import run_embedded
from services.allocator.service import Allocator
from services.watcher.service import Watcher
from services.watcher.source import ManifestSource


def raw_insert_rate(url: str, *, rows: int, batch: int) -> float:
    """Pods per second when each pod is only three plain rows inserted in batches."""
    engine = create_engine(url)
    metadata = MetaData()
    tables = [
        Table(f"raw_{i}", metadata, Column("id", Integer, primary_key=True), Column("v", String))
        for i in range(3)
    ]
    metadata.create_all(engine)
    started = time.perf_counter()
    for start in range(0, rows, batch):
        with engine.begin() as connection:
            for table in tables:
                connection.execute(
                    table.insert(),
                    [
                        {"id": i, "v": f"pod-{i}-10.0.{i % 256}.{i // 256}"}
                        for i in range(start, start + batch)
                    ],
                )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return rows / elapsed


def allocator_rate(manifest: Path, url: str, *, nodes: int, batch: int) -> tuple[int, float]:
    """Facts per second through the allocator alone: decode, rules, one transaction per
    batch with rows, history, inbox, positions and outbox."""
    settings = Settings(batch_size=batch)
    bus = MemoryBus(partitions=4)
    facts = Watcher(
        source=ManifestSource([manifest], nodes=nodes),
        publisher=bus.publisher(),
        topics=settings.topics(),
        clock=utcnow,
    ).publish_changes()
    engine = create_engine(url)
    upgrade(engine)
    allocator = Allocator(
        engine=engine,
        bus=bus,
        settings=settings.network(),
        topics=settings.topics(),
        batch_size=batch,
    )
    allocator.start()
    started = time.perf_counter()
    while allocator.step():
        pass
    elapsed = time.perf_counter() - started
    allocator.close()
    engine.dispose()
    return facts, facts / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--tiers", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="knm-bench-") as scratch:
        root = Path(scratch)
        manifest = write(
            root / "cluster.yaml",
            tiers(
                namespaces=args.namespaces, tiers_per_namespace=args.tiers, replicas=args.replicas
            ),
        )
        pods = args.namespaces * args.tiers * args.replicas
        raw = raw_insert_rate(f"sqlite:///{root / 'raw.db'}", rows=pods, batch=args.batch)
        facts, allocator = allocator_rate(
            manifest, f"sqlite:///{root / 'alloc.db'}", nodes=args.nodes, batch=args.batch
        )
        run = run_embedded(
            paths=[manifest],
            nodes=args.nodes,
            settings=Settings(batch_size=args.batch),
            database_url=f"sqlite:///{root / 'pipeline.db'}",
        )
    print(
        json.dumps(
            {
                "pods": pods,
                "services": args.namespaces * args.tiers,
                "nodes": args.nodes,
                "facts": facts,
                "allocator_facts_per_s": round(allocator),
                "pipeline_facts_per_s": round(run.facts / run.seconds),
                "pipeline_seconds": round(run.seconds, 2),
                "raw_sqlite_pods_per_s": round(raw),
                "allocator_over_raw": round(allocator / raw, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
