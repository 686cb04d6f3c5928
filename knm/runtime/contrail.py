"""`knm contrail sync`: the embedded pipeline over manifests, then one reconcile of a
Contrail controller to the model it settled on."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from knm.core.events.intents import AllocationFailed
from knm.core.settings import Settings
from knm.runtime.distributed import contrail_backend
from knm.runtime.embedded import EmbeddedPipeline
from services.applier.contrail.reconcile import Report
from services.applier.model import DesiredModel


@dataclass(frozen=True, slots=True)
class SyncResult:
    report: Report
    problems: tuple[AllocationFailed, ...]
    pods: int
    services: int


def settled_model(
    paths: Sequence[Path], *, nodes: int, settings: Settings
) -> tuple[DesiredModel, tuple[AllocationFailed, ...]]:
    """The applier's model once the embedded pipeline has settled over the manifests."""
    with tempfile.TemporaryDirectory(prefix="knm-") as scratch:
        pipeline = EmbeddedPipeline(
            paths=paths,
            nodes=nodes,
            settings=settings,
            database_url=f"sqlite:///{Path(scratch) / 'knm.db'}",
        )
        try:
            pipeline.start()
            pipeline.publish()
            pipeline.settle()
            return pipeline.applier.model, pipeline.problems()
        finally:
            pipeline.close()


def sync(
    paths: Sequence[Path],
    *,
    nodes: int,
    settings: Settings,
    url: str | None,
    dry_run: bool,
) -> SyncResult:
    model, problems = settled_model(paths, nodes=nodes, settings=settings)
    if problems:
        return SyncResult(report=Report(), problems=problems, pods=0, services=0)
    backend = contrail_backend(settings, url=url)
    report = backend.reconcile(model, dry_run=dry_run)
    return SyncResult(
        report=report,
        problems=(),
        pods=len(model.interfaces),
        services=len(model.services),
    )
