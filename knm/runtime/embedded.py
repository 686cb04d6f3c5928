"""The whole pipeline in one process: manifest source, in-memory bus, SQLite, recording agents.

Services are stepped in turn until none has anything left to do, so a run is
deterministic and ends by itself; the same service classes run as separate processes
on Kafka and PostgreSQL in the distributed mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from knm.core.bus.memory import MemoryBus
from knm.core.clock import Clock, utcnow
from knm.core.events.codec import decode
from knm.core.events.intents import AllocationFailed
from knm.core.settings import Settings
from knm.core.store.database import create_engine, upgrade
from services.agent.recording import NodeSummary, RecordingDataplane
from services.agent.service import Agent
from services.allocator.report import Document, plan_document
from services.allocator.service import Allocator
from services.applier.service import Applier
from services.watcher.service import Watcher
from services.watcher.source import ManifestSource


def _drain(step: Callable[[], int]) -> int:
    total = 0
    while moved := step():
        total += moved
    return total


@dataclass(frozen=True, slots=True)
class EmbeddedRun:
    document: Document
    problems: tuple[AllocationFailed, ...]
    nodes: dict[str, NodeSummary]
    facts: int
    seconds: float


def run_embedded(
    *,
    paths: Sequence[Path],
    nodes: int,
    settings: Settings,
    database_url: str,
    clock: Clock = utcnow,
) -> EmbeddedRun:
    """Run the pipeline over manifests until it settles. Raises BadManifestError on bad
    input before anything is published."""
    started = time.perf_counter()
    topics = settings.topics()
    source = ManifestSource(list(paths), nodes=nodes, underlay=settings.node_underlay)
    bus = MemoryBus(partitions=4)
    engine = create_engine(database_url)
    try:
        upgrade(engine)
        facts = Watcher(
            source=source, publisher=bus.publisher(), topics=topics, clock=clock
        ).publish_changes()
        allocator = Allocator(
            engine=engine,
            bus=bus,
            settings=settings.network(),
            topics=topics,
            batch_size=settings.batch_size,
            clock=clock,
        )
        applier = Applier(bus=bus, topics=topics, gateway=str(settings.gateway))
        dataplanes = {node: RecordingDataplane() for node in source.nodes()}
        agents = [
            Agent(node=node, bus=bus, topics=topics, dataplane=dataplane)
            for node, dataplane in dataplanes.items()
        ]
        allocator.start()
        applier.start()
        for agent in agents:
            agent.start()
        # Stage by stage, each until it has nothing left: the applier then compiles each
        # node once for the whole run instead of once per allocator batch.
        while (
            _drain(allocator.step)
            + allocator.relay.drain()
            + _drain(applier.step)
            + sum(_drain(agent.step) for agent in agents)
        ):
            pass
        with engine.connect() as connection:
            document = plan_document(connection)
        problems = tuple(
            payload
            for record in bus.records(topics.errors)
            if isinstance(payload := decode(record.value).payload, AllocationFailed)
        )
        allocator.close()
        applier.close()
        for agent in agents:
            agent.close()
        return EmbeddedRun(
            document=document,
            problems=problems,
            nodes={node: dataplane.summary() for node, dataplane in dataplanes.items()},
            facts=facts,
            seconds=time.perf_counter() - started,
        )
    finally:
        engine.dispose()
