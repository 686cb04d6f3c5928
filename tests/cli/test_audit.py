"""`knm who-had`, `knm history` and `knm audit-api` as users run them, over a database
the embedded pipeline wrote (`knm demo --db`)."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cli import test_commands

ROOT = Path(__file__).parents[2]


def knm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Wide enough that rich does not wrap a table's cells across lines.
    return test_commands.knm(*args, env={"COLUMNS": "250", **(env or {})})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("demo") / "knm.db"
    result = knm("demo", "--db", str(db), "--format", "json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return {"url": f"sqlite:///{db}", "document": document}


def pod(demo: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [p for p in demo["document"]["pods"] if p["name"] == name]
    assert len(found) == 1
    return found[0]


def test_who_had_lists_every_holder_and_carrier(demo: dict[str, Any]) -> None:
    master = pod(demo, "redis-master")
    (service,) = [s for s in demo["document"]["services"] if s["name"] == "redis-master"]
    result = knm("who-had", service["vip"], "--database-url", demo["url"])
    assert result.returncode == 0, result.stderr
    assert f"Holders of {service['vip']}" in result.stdout
    assert "default/redis-master" in result.stdout
    assert "backend of default/redis-master" in result.stdout
    assert "(held)" in result.stdout
    as_json = knm("who-had", master["ip"], "--database-url", demo["url"], "--format", "json")
    (holding,) = json.loads(as_json.stdout)["holdings"]
    assert (holding["kind"], holding["name"], holding["uid"]) == (
        "pod",
        "redis-master",
        master["uid"],
    )
    assert holding["released_at"] is None


def test_who_had_at_an_instant(demo: dict[str, Any]) -> None:
    master = pod(demo, "redis-master")
    url = demo["url"]
    listed = knm("who-had", master["ip"], "--database-url", url, "--format", "json")
    since = datetime.fromisoformat(json.loads(listed.stdout)["holdings"][0]["allocated_at"])
    at = knm("who-had", master["ip"], "--at", since.isoformat(), "--database-url", url)
    assert at.returncode == 0, at.stderr
    assert "default/redis-master" in at.stdout
    assert master["uid"] in at.stdout
    before = (since - timedelta(microseconds=1)).isoformat()
    nobody = knm("who-had", master["ip"], "--at", before, "--database-url", url)
    assert nobody.returncode == 0, nobody.stderr
    assert nobody.stdout.strip() == f"nobody held {master['ip']} at {before[:-6]}Z"
    as_json = knm(
        "who-had", master["ip"], "--at", before, "--database-url", url, "--format", "json"
    )
    assert as_json.stdout.strip() == "null"


def test_history_of_a_pod_and_of_a_service(demo: dict[str, Any]) -> None:
    master = pod(demo, "redis-master")
    result = knm("history", "pod", "default/redis-master", "--database-url", demo["url"])
    assert result.returncode == 0, result.stderr
    assert "Addresses of pod default/redis-master" in result.stdout
    assert master["ip"] in result.stdout
    found = knm(
        "history", "pod", "default/redis-master", "--database-url", demo["url"], "--format", "json"
    )
    kinds = sorted(h["kind"] for h in json.loads(found.stdout)["holdings"])
    assert kinds == ["floating", "pod"]
    service = knm("history", "service", "default/frontend", "--database-url", demo["url"])
    assert service.returncode == 0, service.stderr
    assert "VIPs of service default/frontend" in service.stdout
    assert "Backends of service default/frontend" in service.stdout
    assert service.stdout.count("default/frontend-") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["who-had", "10.0.0.256"], "'10.0.0.256' is not an IPv4 address"),
        (["who-had", "10.0.0.1", "--at", "yesterday"], "is not an RFC 3339 time"),
        (["history", "pod", "redis-master"], "give the pod as NAMESPACE/NAME"),
        (["history", "pod", "default/Redis"], "'Redis' is not a valid pod name"),
        (["history", "service", "Default/x"], "'Default' is not a valid namespace"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    demo: dict[str, Any], args: list[str], message: str
) -> None:
    result = knm(*args, "--database-url", demo["url"])
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_a_database_without_the_schema_says_what_to_run(tmp_path: Path) -> None:
    result = knm("who-had", "10.0.0.1", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.returncode == 2
    assert "knm db upgrade" in result.stderr


def test_audit_api_prints_the_kept_openapi_document() -> None:
    result = knm("audit-api", "--print-openapi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "docs" / "openapi.json").read_text()


def test_audit_api_refuses_to_serve_without_token_hashes(demo: dict[str, Any]) -> None:
    result = knm("audit-api", "--database-url", demo["url"], env={"KNM_AUDIT_TOKEN_HASHES": ""})
    assert result.returncode == 2
    assert "KNM_AUDIT_TOKEN_HASHES is empty" in result.stderr
    assert "sha256sum" in result.stderr


def test_audit_api_refuses_a_token_in_place_of_its_hash(demo: dict[str, Any]) -> None:
    result = knm(
        "audit-api", "--database-url", demo["url"], env={"KNM_AUDIT_TOKEN_HASHES": "my-token"}
    )
    assert result.returncode == 2
    assert "invalid setting audit_token_hashes" in result.stderr
    assert "my-token" not in result.stderr
