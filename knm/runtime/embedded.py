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

from sqlalchemy import Engine

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
from services.applier.backend import Backend
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


class EmbeddedPipeline:
    """Watcher, allocator, applier and one agent per node over one bus and one database.

    `publish()` reads the manifests again and publishes what changed; `settle()` steps
    every service until the pipeline is quiet.
    """

    def __init__(
        self,
        *,
        paths: Sequence[Path],
        nodes: int,
        settings: Settings,
        database_url: str,
        clock: Clock = utcnow,
        applier_backend: Backend | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics()
        self.source = ManifestSource(list(paths), nodes=nodes, underlay=settings.node_underlay)
        self.bus = MemoryBus(partitions=4)
        self.engine: Engine = create_engine(database_url)
        self._clock = clock
        self.watcher = Watcher(
            source=self.source, publisher=self.bus.publisher(), topics=self.topics, clock=clock
        )
        self.allocator = Allocator(
            engine=self.engine,
            bus=self.bus,
            settings=settings.network(),
            topics=self.topics,
            batch_size=settings.batch_size,
            clock=clock,
        )
        # The native backend unless told otherwise (the Contrail one, in its tests).
        self.applier = Applier(
            bus=self.bus,
            topics=self.topics,
            gateway=str(settings.gateway),
            backend=applier_backend,
            sync_every_intent=applier_backend is not None,
        )
        self.dataplanes: dict[str, RecordingDataplane] = {}
        self.agents: list[Agent] = []
        self.facts = 0

    def start(self) -> None:
        upgrade(self.engine)
        self.allocator.start()
        self.applier.start()

    def publish(self) -> int:
        """Publish the manifests' changes; raises BadManifestError having published nothing."""
        published = self.watcher.publish_changes()
        self.facts += published
        for node in self.source.nodes():
            if node not in self.dataplanes:
                dataplane = self.dataplanes[node] = RecordingDataplane()
                agent = Agent(node=node, bus=self.bus, topics=self.topics, dataplane=dataplane)
                agent.start()
                self.agents.append(agent)
        return published

    def settle(self) -> None:
        # Stage by stage, each until it has nothing left: the applier then compiles each
        # node once per wave instead of once per allocator batch.
        allocator, applier = self.allocator, self.applier
        while (
            _drain(allocator.step)
            + allocator.relay.drain()
            + _drain(applier.step)
            + sum(_drain(agent.step) for agent in self.agents)
        ):
            pass

    def document(self) -> Document:
        with self.engine.connect() as connection:
            return plan_document(connection)

    def problems(self) -> tuple[AllocationFailed, ...]:
        return tuple(
            payload
            for record in self.bus.records(self.topics.errors)
            if isinstance(payload := decode(record.value).payload, AllocationFailed)
        )

    def close(self) -> None:
        self.allocator.close()
        self.applier.close()
        for agent in self.agents:
            agent.close()
        self.engine.dispose()


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
    pipeline = EmbeddedPipeline(
        paths=paths, nodes=nodes, settings=settings, database_url=database_url, clock=clock
    )
    try:
        pipeline.start()
        pipeline.publish()
        pipeline.settle()
        return EmbeddedRun(
            document=pipeline.document(),
            problems=pipeline.problems(),
            nodes={node: dp.summary() for node, dp in pipeline.dataplanes.items()},
            facts=pipeline.facts,
            seconds=time.perf_counter() - started,
        )
    finally:
        pipeline.close()
