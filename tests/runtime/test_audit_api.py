"""The audit API as deployed: `knm audit-api` serving, over HTTP, the history that
`knm watcher` and `knm allocator` processes wrote through Kafka into PostgreSQL, with a
quarantine short enough to see an address handed to a second pod."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import fresh_postgres_database, required
from tests.runtime.fleet import Fleet, environment, free_port, knm, wait_for

TOKEN = "e2e-audit-token"
QUARANTINE_SECONDS = 3.0


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "example/app:1"}]},
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop", "uid": "svc-web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
}


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, token: str | None = TOKEN, **query: str) -> tuple[int, Any]:
        url = self.base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture
def database_url() -> Iterator[str]:
    yield from fresh_postgres_database(required("KNM_DATABASE_URL"))


@pytest.mark.slow
def test_the_served_api_answers_from_what_the_pipeline_wrote(
    database_url: str, tmp_path: Path
) -> None:
    required("KNM_KAFKA_BOOTSTRAP")
    env = environment(database_url=database_url, prefix=f"a{uuid.uuid4().hex[:8]}.")
    env["KNM_QUARANTINE_SECONDS"] = str(QUARANTINE_SECONDS)
    env["KNM_AUDIT_TOKEN_HASHES"] = hashlib.sha256(TOKEN.encode()).hexdigest()
    knm("db", "upgrade", env=env)
    knm("topics", "create", "--partitions", "2", env=env)
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(yaml.safe_dump_all([SERVICE, pod("web-1"), pod("web-2")]))
    fleet = Fleet(env=env, logs=tmp_path)
    fleet.add("watcher", "watcher", "-f", str(manifest), "--nodes", "1", "--interval", "0.5")
    fleet.add("allocator", "allocator")
    for name in fleet.members:
        fleet.start(name)
    port = free_port()
    log = (tmp_path / "audit-api.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "knm", "audit-api", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = Api(port)
    try:
        assert wait_for(lambda: _ready(api), timeout=120, every=0.5), fleet.tail()

        def pod_history(name: str) -> list[dict[str, Any]]:
            status, body = api.get(f"/v1/pods/shop/{name}/history")
            assert status == 200, body
            return [h for h in body["holdings"] if h["kind"] == "pod"]

        assert wait_for(lambda: len(pod_history("web-2")) == 1, timeout=120), fleet.tail()
        manifest.write_text(yaml.safe_dump_all([SERVICE, pod("web-1")]))
        assert wait_for(lambda: pod_history("web-2")[0]["released_at"], timeout=120)
        (web_2,) = pod_history("web-2")
        # Past the quarantine, the lowest free address is web-2's again.
        time.sleep(QUARANTINE_SECONDS + 0.5)
        manifest.write_text(yaml.safe_dump_all([SERVICE, pod("web-1"), pod("api-1")]))
        assert wait_for(lambda: len(pod_history("api-1")) == 1, timeout=120), fleet.tail()
        (api_1,) = pod_history("api-1")
        assert api_1["ip"] == web_2["ip"]

        status, history = api.get(f"/v1/ips/{web_2['ip']}/history")
        assert status == 200
        assert [(h["name"], h["kind"]) for h in history["holdings"]] == [
            ("web-2", "pod"),
            ("api-1", "pod"),
        ]
        tick = timedelta(microseconds=1)
        for instant, holder in [
            (_time(web_2["allocated_at"]) - tick, None),
            (_time(web_2["allocated_at"]), "web-2"),
            (_time(web_2["released_at"]) - tick, "web-2"),
            (_time(web_2["released_at"]), None),
            (_time(api_1["allocated_at"]) - tick, None),
            (_time(api_1["allocated_at"]), "api-1"),
        ]:
            status, body = api.get(f"/v1/ips/{web_2['ip']}/holder", at=instant.isoformat())
            assert (status, body.get("name")) == ((200, holder) if holder else (404, None))

        status, body = api.get("/v1/services/shop/web/history")
        assert {b["name"] for b in body["backends"]} == {"web-1", "web-2", "api-1"}
        assert api.get("/v1/pools", token=None)[0] == 401
        assert api.get("/v1/pools", token="wrong")[0] == 401
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        log.close()
        fleet.stop_all()
    assert code == 0, (tmp_path / "audit-api.log").read_text()
    assert TOKEN not in (tmp_path / "audit-api.log").read_text()


def _ready(api: Api) -> bool:
    try:
        with urllib.request.urlopen(api.base + "/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_workers_share_the_port_and_stop_together(database_url: str, tmp_path: Path) -> None:
    """`--workers 2`: two processes answer on one port; a second server cannot take the
    port; SIGTERM stops the workers and the whole exits 0."""
    env = environment(database_url=database_url, prefix="unused.")
    env["KNM_AUDIT_TOKEN_HASHES"] = hashlib.sha256(TOKEN.encode()).hexdigest()
    knm("db", "upgrade", env=env)
    port = free_port()
    log = (tmp_path / "audit-api.log").open("wb")
    command = [sys.executable, "-m", "knm", "audit-api", "--port", str(port)]
    server = subprocess.Popen([*command, "--workers", "2"], env=env, stdout=log, stderr=log)
    api = Api(port)
    try:
        assert wait_for(lambda: _ready(api), timeout=120, every=0.5)
        workers = _children(server.pid)
        assert len(workers) == 2, workers
        for n in range(20):
            status, body = api.get(f"/v1/ips/10.0.0.{n + 1}/history")
            assert (status, body["holdings"]) == (200, [])
        taken = knm("audit-api", "--port", str(port), "--workers", "2", env=env, check=False)
        assert taken.returncode != 0
        assert f"cannot serve on 127.0.0.1:{port}" in taken.stderr + taken.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "audit-api.log").read_text()
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found
