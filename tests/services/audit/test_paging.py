"""The change log's pages, read while two allocators write (as several allocator
processes share one database), neither skip nor repeat a line."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from bench.synthetic import tiers, write
from knm.core.bus.memory import MemoryBus
from knm.core.clock import utcnow
from knm.core.settings import Settings
from knm.core.store.database import create_engine, upgrade
from knm.core.store.schema import AddressHistoryRow, table
from services.allocator.service import Allocator
from services.audit.database import read_only_engine
from services.watcher.service import Watcher
from services.watcher.source import ManifestSource
from tests.conftest import fresh_postgres_database, required
from tests.services.audit.conftest import AUTH, audit_app

SETTINGS = Settings()


def publish_waves(bus: MemoryBus, manifest: Path) -> int:
    """Three versions of the cluster, one after the other: pods come and go."""
    watcher = Watcher(
        source=ManifestSource([manifest], nodes=3),
        publisher=bus.publisher(),
        topics=SETTINGS.topics(),
        clock=utcnow,
    )
    published = 0
    for replicas in (8, 3, 6):
        # Eight namespaces: their partitions are even and odd, so each allocator of
        # two has some (four all landed on the odd ones, one allocator's share).
        write(manifest, tiers(namespaces=8, tiers_per_namespace=2, replicas=replicas))
        published += watcher.publish_changes()
    return published


def allocate(
    engine: Engine, bus: MemoryBus, *, facts: int, stop: threading.Event
) -> tuple[list[Allocator], list[threading.Thread]]:
    """Two allocators in a consumer group, each in its own thread, in small batches."""
    allocators = [
        Allocator(
            engine=engine,
            bus=bus,
            settings=SETTINGS.network(),
            topics=SETTINGS.topics(),
            batch_size=5,
        )
        for _ in range(2)
    ]

    # Both join the group before either reads: one starting late on a busy machine
    # found the other done with every partition.
    for allocator in allocators:
        allocator.start()

    def run(allocator: Allocator) -> None:
        while not stop.is_set():
            allocator.step(timeout=0.01)
            allocator.relay.drain()
            if sum(a.applied for a in allocators) >= facts:
                stop.set()

    threads = [threading.Thread(target=run, args=(allocator,)) for allocator in allocators]
    for thread in threads:
        thread.start()
    return allocators, threads


def test_pages_read_during_writes_hold_every_line_once(tmp_path: Path) -> None:
    for url in fresh_postgres_database(required("KNM_DATABASE_URL")):
        engine = create_engine(url)
        upgrade(engine)
        bus = MemoryBus(partitions=4)
        facts = publish_waves(bus, tmp_path / "cluster.yaml")
        done = threading.Event()
        allocators, threads = allocate(engine, bus, facts=facts, stop=done)
        reader = read_only_engine(url)
        seen: list[int] = []
        pages_during_writes = 0
        deadline = time.monotonic() + 120
        try:
            with TestClient(audit_app(reader), headers=AUTH) as client:
                cursor: str | None = None
                while time.monotonic() < deadline:
                    finished = done.is_set()
                    params: dict[str, Any] = {"limit": 7}
                    if cursor is not None:
                        params["cursor"] = cursor
                    page = client.get("/v1/allocations", params=params).json()
                    seen += [item["seq"] for item in page["items"]]
                    cursor = page["next_cursor"]
                    if page["items"] and not finished:
                        pages_during_writes += 1
                    if finished and not page["has_more"]:
                        break
                    if not page["items"]:
                        time.sleep(0.005)
        finally:
            done.set()
            for thread in threads:
                thread.join(timeout=30)
            for allocator in allocators:
                allocator.close()
            reader.dispose()
        history = table(AddressHistoryRow)
        with engine.connect() as connection:
            written = list(
                connection.execute(select(history.c.seq).order_by(history.c.seq)).scalars()
            )
        engine.dispose()
        assert sum(a.applied for a in allocators) == facts
        assert all(a.applied for a in allocators), "one allocator did all the work"
        assert len(written) > 300
        assert pages_during_writes > 10, "the pages were not read while the allocators wrote"
        assert seen == written
