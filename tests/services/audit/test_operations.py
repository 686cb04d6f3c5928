"""/healthz, /readyz, /metrics, and what a request gets when the database is away."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from services.audit.database import read_only_engine, reading
from tests.conftest import fresh_postgres_database, required
from tests.runtime.fleet import free_port
from tests.services.audit.conftest import AUTH, audit_app
from tests.services.audit.lines import line, tenures, write

START = datetime(2026, 1, 1, tzinfo=UTC)


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.fixture
def reader(engine: Engine) -> Iterator[Engine]:
    found = read_only_engine(engine.url.render_as_string(hide_password=False))
    yield found
    found.dispose()


def test_metrics_count_allocations_and_releases_as_lines_arrive(
    engine: Engine, reader: Engine
) -> None:
    write(engine, tenures(addresses=3, holders=2, start=START))
    with TestClient(audit_app(reader), headers=AUTH) as client:
        first = samples(client)
        assert first[("knm_audit_database_up", ())] == 1
        assert first[("knm_address_allocations_total", (("kind", "pod"),))] == 6
        assert first[("knm_address_releases_total", (("kind", "pod"),))] == 6
        assert first[("knm_address_allocations_total", (("kind", "service"),))] == 0
        write(
            engine,
            [
                line(ip="10.254.0.9", action="allocated", kind="service", uid="s", at=START),
                line(ip="10.0.0.9", action="allocated", kind="pod", uid="p", at=START),
            ],
        )
        second = samples(client)
        assert second[("knm_address_allocations_total", (("kind", "pod"),))] == 7
        assert second[("knm_address_allocations_total", (("kind", "service"),))] == 1
        assert second[("knm_address_releases_total", (("kind", "pod"),))] == 6


def test_metrics_show_pool_usage_and_request_latency_by_route(client: TestClient) -> None:
    pools = {p["pool"]: p for p in client.get("/v1/pools").json()["pools"]}
    client.get("/v1/ips/10.0.0.2/holder", params={"at": "2026-11-27T10:00:00Z"})
    client.get("/v1/ips/10.0.0.3/holder", params={"at": "2026-11-27T10:00:00Z"})
    found = samples(client)
    for field in ("capacity", "used", "quarantined", "free"):
        for pool, usage in pools.items():
            labels = (("kind", usage["kind"]), ("pool", pool))
            assert found[(f"knm_pool_{field}_addresses", labels)] == usage[field]
    # By route template: one series for every address asked about.
    holder = (
        "knm_audit_request_duration_seconds_count",
        (("method", "GET"), ("route", "/v1/ips/{ip}/holder"), ("status", "200")),
    )
    assert found[holder] >= 2
    assert not any("10.0.0.2" in str(labels) for _, labels in found)


def test_ready_only_with_the_database_at_this_schema(bare_engine: Engine) -> None:
    reader = read_only_engine(bare_engine.url.render_as_string(hide_password=False))
    try:
        with TestClient(audit_app(reader)) as client:
            response = client.get("/readyz")
            assert response.status_code == 503
            assert response.json() == {
                "status": "unavailable",
                "detail": "the database is at schema None, this knm reads 0005",
            }
            assert client.get("/healthz").json() == {"status": "ok", "detail": None}
    finally:
        reader.dispose()


def test_without_the_database_requests_get_503_and_the_process_stays_live() -> None:
    reader = read_only_engine(f"postgresql+psycopg2://knm:knm@127.0.0.1:{free_port()}/knm")
    try:
        with TestClient(audit_app(reader), headers=AUTH) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["detail"] == "the database is unreachable"
            for path in ("/v1/pools", "/v1/ips/10.0.0.1/history", "/v1/allocations"):
                response = client.get(path)
                assert response.status_code == 503, path
                assert response.json() == {"detail": "the database is unavailable; try again"}
            assert client.get("/healthz").status_code == 200
            assert samples(client)[("knm_audit_database_up", ())] == 0
    finally:
        reader.dispose()


def test_an_answer_of_several_statements_sees_one_snapshot() -> None:
    """On PostgreSQL: one statement alone runs in autocommit, several share a REPEATABLE
    READ transaction; both are read-only."""
    for url in fresh_postgres_database(required("KNM_DATABASE_URL")):
        reader = read_only_engine(url)
        try:
            for consistent, level in ((False, "read committed"), (True, "repeatable read")):
                with reading(reader, consistent=consistent) as connection:
                    shown = connection.execute(text("SHOW transaction_isolation")).scalar()
                    read_only = connection.execute(text("SHOW transaction_read_only")).scalar()
                    snapshots = connection.execute(
                        text("SELECT now() = statement_timestamp()")
                    ).scalar()
                assert (shown, read_only) == (level, "on")
                # In a transaction, now() is its start; alone, each statement's own.
                assert snapshots is (not consistent)
        finally:
            reader.dispose()
