"""A history made by the real pipeline (watcher, allocator, applier, agents) on a real
database, with the clock held at chosen instants so that tests know every boundary.

One namespace, `shop`, on one node; quarantine 60 s:

    T0        web-1, web-2 (app=web), db (uid db-1); services web (app=web) and db and
              db-admin (both select name=db); web pods `uses: db`
    T0+10 s   web-2 deleted: its address quarantined until T0+70 s
    T0+20 s   web-3 created (app=web): another address, web-2's is in quarantine
    T0+30 s   db recreated under uid db-2: a new address, the old one quarantined
    T0+100 s  api-1 created: it gets web-2's address, out of quarantine since T0+70 s
    T0+110 s  web-3 relabelled app=old: no longer a backend of web
    T0+120 s  web-1 deleted; service db-admin deleted (its VIP released)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from knm.core.settings import Settings
from knm.runtime.embedded import EmbeddedPipeline

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
NAMESPACE = "shop"
QUARANTINE = timedelta(seconds=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pod(name: str, *, uid: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "example/app:1"}]},
    }


def service(
    name: str, *, selector: dict[str, str], port: int, type: str = "ClusterIP"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"svc-{name}"},
        "spec": {"selector": selector, "ports": [{"port": port}], "type": type},
    }


WEB = {"name": "web", "app": "web", "uses": "db"}


def _cluster() -> list[tuple[float, dict[str, dict[str, Any]]]]:
    """Each step's instant and the whole cluster then, by object."""
    objects: dict[str, dict[str, Any]] = {
        "web-1": pod("web-1", uid="web-1", labels=WEB),
        "web-2": pod("web-2", uid="web-2", labels=WEB),
        "db": pod("db", uid="db-1", labels={"name": "db"}),
        "svc-web": service("web", selector={"app": "web"}, port=80),
        "svc-db": service("db", selector={"name": "db"}, port=5432),
        # A LoadBalancer: it holds a public address too, until it is deleted.
        "svc-db-admin": service(
            "db-admin", selector={"name": "db"}, port=8080, type="LoadBalancer"
        ),
    }
    steps = [(0.0, dict(objects))]
    del objects["web-2"]
    steps.append((10.0, dict(objects)))
    objects["web-3"] = pod("web-3", uid="web-3", labels=WEB)
    steps.append((20.0, dict(objects)))
    objects["db"] = pod("db", uid="db-2", labels={"name": "db"})
    steps.append((30.0, dict(objects)))
    objects["api-1"] = pod("api-1", uid="api-1", labels={"name": "api"})
    steps.append((100.0, dict(objects)))
    objects["web-3"] = pod("web-3", uid="web-3", labels={**WEB, "app": "old"})
    steps.append((110.0, dict(objects)))
    del objects["web-1"]
    del objects["svc-db-admin"]
    steps.append((120.0, dict(objects)))
    return steps


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Timeline:
    database_url: str
    steps: list[float] = field(default_factory=list)


def record(database_url: str, folder: Path) -> Timeline:
    """Run the pipeline through every step on `database_url`."""
    manifest = folder / "cluster.yaml"
    clock = Clock()
    settings = Settings(quarantine_seconds=QUARANTINE.total_seconds())
    pipeline = EmbeddedPipeline(
        paths=[manifest], nodes=1, settings=settings, database_url=database_url, clock=clock
    )
    timeline = Timeline(database_url=database_url)
    try:
        pipeline.start()
        for seconds, objects in _cluster():
            manifest.write_text(yaml.safe_dump_all(objects.values(), sort_keys=False))
            clock.now = at(seconds)
            pipeline.publish()
            pipeline.settle()
            timeline.steps.append(seconds)
        assert not pipeline.problems(), pipeline.problems()
    finally:
        pipeline.close()
    return timeline
