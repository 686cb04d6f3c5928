"""`knm applier --backend contrail` as its own process on Kafka, against a VNC test server
that fails a fifth of its calls, killed with SIGKILL mid-reconcile and restarted: the
controller ends holding exactly what the plan asks for."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bench.synthetic import tiers, write
from knm.core.store.database import create_engine
from knm.testing.vnc_server import VncTestServer
from services.allocator.report import plan_document
from tests.conftest import fresh_postgres_database, required
from tests.runtime.fleet import Fleet, environment, knm, wait_for
from tests.services.applier.contrail_walk import expected, walk


@pytest.fixture
def postgres_database() -> Iterator[str]:
    yield from fresh_postgres_database(required("KNM_DATABASE_URL"))


def _document(engine: Engine) -> dict[str, object]:
    with engine.connect() as connection:
        return dict(plan_document(connection))


@pytest.mark.slow
def test_the_contrail_applier_process_survives_failures_and_sigkill(
    postgres_database: str, tmp_path: Path
) -> None:
    required("KNM_KAFKA_BOOTSTRAP")
    manifest = write(tmp_path / "apps.yaml", tiers(namespaces=4, tiers_per_namespace=3, replicas=3))
    with VncTestServer(fail_rate=0.2, seed=11) as server:
        env = environment(database_url=postgres_database, prefix=f"c{uuid.uuid4().hex[:8]}.")
        env.update(
            {
                "KNM_CONTRAIL_API_URL": server.url,
                "KNM_CONTRAIL_CLUSTER": "fleet",
                "KNM_CONTRAIL_RESYNC_SECONDS": "2",
            }
        )
        knm("db", "upgrade", env=env)
        knm("topics", "create", "--partitions", "3", env=env)
        fleet = Fleet(env=env, logs=tmp_path)
        fleet.add("watcher", "watcher", "-f", str(manifest), "--nodes", "3", "--interval", "1")
        fleet.add("allocator", "allocator")
        fleet.add("applier", "applier", "--backend", "contrail")
        engine = create_engine(postgres_database)
        try:
            for name in fleet.members:
                fleet.start(name)
            # Killed once it has written some of what it must.
            assert wait_for(lambda: server.writes > 60, timeout=120, every=0.02), fleet.tail()
            fleet.kill("applier")
            killed_at = walk(server.store.snapshot())
            time.sleep(0.5)
            fleet.start("applier")

            def converged() -> bool:
                document = _document(engine)
                if len(document["pods"]) != 36:  # type: ignore[arg-type]
                    return False
                return walk(server.store.snapshot()) == expected(document)

            assert wait_for(converged, timeout=180, every=1.0), fleet.tail()
            assert killed_at != walk(server.store.snapshot())
            assert server.failures_injected > 10
            # Settled: the periodic reconciles that follow write nothing.
            server.reset_counts()
            time.sleep(5)
            assert server.calls["list"] >= 8
            assert server.writes == 0
        finally:
            codes = fleet.stop_all()
            engine.dispose()
        assert codes["applier"] == 0, fleet.tail()
