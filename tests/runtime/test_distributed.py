"""The distributed pipeline as separate OS processes on the real Kafka and PostgreSQL,
with processes killed, and the broker and the database restarted, while it works.

Whatever happens on the way, the end must be what the same manifests give without any
fault: the same pods addressed, no address twice, none leaked, every agent holding
exactly its node's pods, and in the history each allocation released at most once.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from sqlalchemy import select

from bench.synthetic import tiers, write
from knm.core.bus.kafka import KafkaBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.events.base import Event, envelope
from knm.core.events.codec import encode
from knm.core.events.facts import PodDeleted, PodObserved
from knm.core.settings import Settings
from knm.core.store.database import create_engine
from knm.core.store.schema import AddressHistoryRow, table
from knm.core.topics import TopicSpec
from knm.lab.backing import delete_topics
from knm.runtime.distributed import RESTORE_GROUP, read_published
from knm.runtime.embedded import run_embedded
from services.allocator.report import plan_document
from tests.conftest import fresh_postgres_database, required
from tests.runtime.fleet import Fleet, environment, knm, wait_for

NODES = 3
# Three waves: 1,000 pods; then 2,200 behind 110 services; then the final 2,000 behind
# 100 services (two tiers of each namespace deleted: releases, quarantine, withdrawals).
WAVES = [
    tiers(namespaces=5, tiers_per_namespace=20, replicas=10),
    tiers(namespaces=5, tiers_per_namespace=22, replicas=20),
    tiers(namespaces=5, tiers_per_namespace=20, replicas=20),
]
WAVE_SECONDS = 6.0
CONVERGE_SECONDS = 240.0


@pytest.fixture
def database_url() -> Iterator[str]:
    yield from fresh_postgres_database(required("KNM_DATABASE_URL"))


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the final manifests give, computed by the embedded pipeline: no faults."""
    root = tmp_path_factory.mktemp("expected")
    manifest = write(root / "final.yaml", WAVES[-1])
    run = run_embedded(
        paths=[manifest],
        nodes=NODES,
        settings=Settings(),
        database_url=f"sqlite:///{root / 'knm.db'}",
    )
    return normalized(run.document)


def normalized(document: dict[str, Any]) -> dict[str, Any]:
    """The state without the address values, which depend on the order of events."""
    return {
        "pods": sorted(
            (p["namespace"], p["name"], p["uid"], p["node"], p["network"], p["ip"] is not None)
            for p in document["pods"]
        ),
        "services": sorted(
            (s["namespace"], s["name"], s["network"], str(s["ports"]), tuple(s["backends"]))
            for s in document["services"]
        ),
        "networks": document["networks"],
        "policies": document["policies"],
    }


class Run:
    def __init__(self, *, database_url: str, logs: Path) -> None:
        self.database_url = database_url
        self.env = environment(database_url=database_url, prefix=f"t{uuid.uuid4().hex[:8]}.")
        self.manifest = logs / "cluster.yaml"
        write(self.manifest, WAVES[0])
        knm("db", "upgrade", env=self.env)
        knm("topics", "create", "--partitions", "6", env=self.env)
        self.fleet = Fleet(env=self.env, logs=logs)
        self.fleet.add(
            "watcher", "watcher", "-f", str(self.manifest), "--nodes", str(NODES), "--interval", "1"
        )
        self.fleet.add("allocator-a", "allocator")
        self.fleet.add("allocator-b", "allocator")
        self.fleet.add("applier", "applier")
        for n in range(1, NODES + 1):
            self.fleet.add(f"agent-{n}", "agent", "--node", f"node-{n}")
        self.engine = create_engine(database_url)

    def start(self) -> None:
        for name in self.fleet.members:
            self.fleet.start(name)

    def waves(self, during: Callable[[float], None]) -> None:
        """Write the manifests' waves, calling `during(elapsed)` about every 100 ms."""
        started = time.monotonic()
        for wave in WAVES[1:]:
            deadline = time.monotonic() + WAVE_SECONDS
            while time.monotonic() < deadline:
                during(time.monotonic() - started)
                time.sleep(0.1)
            write(self.manifest, wave)
        deadline = time.monotonic() + WAVE_SECONDS
        while time.monotonic() < deadline:
            during(time.monotonic() - started)
            time.sleep(0.1)

    def document(self) -> dict[str, Any]:
        with self.engine.connect() as connection:
            return plan_document(connection)

    def agents_hold(self, document: dict[str, Any]) -> bool:
        for n in range(1, NODES + 1):
            node = f"node-{n}"
            wanted = {p["uid"]: p["ip"] for p in document["pods"] if p["node"] == node and p["ip"]}
            try:
                state = self.fleet.members[f"agent-{n}"].state()
            except OSError:
                return False
            if {i["pod_uid"]: i["ip"] for i in state["interfaces"]} != wanted:
                return False
        return True

    def converge(self, expected: dict[str, Any]) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def done() -> bool:
            nonlocal last
            try:
                last = self.document()
            except Exception:
                return False
            return normalized(last) == expected and self.agents_hold(last)

        if not wait_for(done, timeout=CONVERGE_SECONDS, every=2.0):
            got = normalized(last) if last else {}
            summary = {k: (len(got.get(k, [])), len(v)) for k, v in expected.items()}
            pytest.fail(f"no convergence (got, wanted): {summary}\n{self.fleet.tail()}")
        return last

    def history(self) -> list[Any]:
        history = table(AddressHistoryRow)
        with self.engine.connect() as connection:
            return list(connection.execute(select(history).order_by(history.c.seq)).all())

    def close(self) -> dict[str, int]:
        codes = self.fleet.stop_all()
        self.engine.dispose()
        return codes


def check_end_state(run: Run, document: dict[str, Any]) -> None:
    pods = [p for p in document["pods"] if p["ip"]]
    ips = [p["ip"] for p in pods]
    assert len(ips) == len(set(ips)) == 2000, "an address twice, or pods without one"
    vips = [s["vip"] for s in document["services"] if s["vip"]]
    assert len(vips) == len(set(vips)) == 100
    held: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in run.history():
        key = (row.ip, row.kind, row.uid)
        held[key] += 1 if row.action == "allocated" else -1
        assert held[key] in (0, 1), f"{key} allocated twice or released twice"
    open_ = {key for key, count in held.items() if count}
    assert {k for k in open_ if k[1] == "pod"} == {(p["ip"], "pod", p["uid"]) for p in pods}, (
        "the history and the pods disagree: an address leaked or was lost"
    )
    services = {(s["namespace"], s["name"]): s for s in document["services"]}
    assert {k[0] for k in open_ if k[1] == "service"} == set(vips)
    floating = {(k[0], k[2]) for k in open_ if k[1] == "floating"}
    expected_floating = {(vip, p["uid"]) for p in pods for vip in p["floating_ips"]}
    assert floating == expected_floating
    for pod in pods:
        assert len(pod["floating_ips"]) == 1
        service = services[(pod["namespace"], pod["name"].rsplit("-", 1)[0])]
        assert pod["floating_ips"] == [service["vip"]]


@pytest.mark.slow
def test_killed_processes_lose_nothing_and_repeat_nothing(
    database_url: str, expected: dict[str, Any], tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run = Run(database_url=database_url, logs=tmp_path)
    run.start()
    victims = ["allocator-a", "allocator-b", "applier", "agent-1", "agent-2", "agent-3"]
    schedule = sorted(rng.uniform(1.0, 3 * WAVE_SECONDS) for _ in range(8))
    down: dict[str, float] = {}
    killed: list[str] = []

    def faults(elapsed: float) -> None:
        for name, back_at in list(down.items()):
            if elapsed >= back_at:
                run.fleet.start(name)
                del down[name]
        while schedule and elapsed >= schedule[0]:
            schedule.pop(0)
            name = rng.choice([v for v in victims if v not in down])
            run.fleet.kill(name)
            killed.append(name)
            down[name] = elapsed + rng.uniform(0.3, 2.5)

    try:
        run.waves(faults)
        for name in list(down):
            run.fleet.start(name)
        document = run.converge(expected)
        check_end_state(run, document)
    finally:
        codes = run.close()
    print(f"seed {seed}: killed {killed}")
    assert codes == dict.fromkeys(codes, 0), f"not every process stopped cleanly: {codes}"


@pytest.mark.slow
@pytest.mark.parametrize("server", ["kafka", "postgres"])
def test_restarting_a_server_mid_run_loses_nothing(
    server: str, database_url: str, expected: dict[str, Any], tmp_path: Path
) -> None:
    run = Run(database_url=database_url, logs=tmp_path)
    run.start()
    restarted: list[float] = []

    def restart(elapsed: float) -> None:
        if not restarted and elapsed >= WAVE_SECONDS + 1.0:
            restarted.append(elapsed)
            knm("dev", "services", "restart", "--only", server, env=run.env)

    try:
        run.waves(restart)
        assert restarted
        document = run.converge(expected)
        check_end_state(run, document)
    finally:
        codes = run.close()
    assert codes == dict.fromkeys(codes, 0), f"not every process stopped cleanly: {codes}"


def restore_groups(bootstrap: str) -> set[str]:
    """The groups the broker knows that a watcher's read-back made (earlier ones made one
    of their own, named from RESTORE_GROUP)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        groups = admin.list_groups()
    finally:
        admin.close()
    return {g["group_id"] for g in groups if g["group_id"].startswith(RESTORE_GROUP)}


def test_the_watcher_reads_back_what_it_published_without_joining_a_group(
    kafka_bootstrap: str,
) -> None:
    bus = KafkaBus(bootstrap=kafka_bootstrap)
    topic = f"restore-{uuid.uuid4().hex[:8]}"
    bus.create_topics([TopicSpec(topic, partitions=4)])
    try:
        publisher = bus.publisher()
        facts: list[tuple[str, Event]] = [
            (f"Pod/ns/{name}", PodObserved(uid=name, namespace="ns", name=name, node="n"))
            for name in ("a", "b", "c")
        ]
        facts.append(("Pod/ns/b", PodDeleted(uid="b", namespace="ns", name="b")))
        publisher.publish(
            [
                OutgoingMessage(
                    topic=topic,
                    key="ns",
                    value=encode(envelope(event, key=key, occurred_at=datetime.now(UTC))),
                )
                for key, event in facts
            ]
        )
        publisher.close()

        before = restore_groups(kafka_bootstrap)
        published = read_published(bus, topic, timeout=30)

        assert published.records == 4
        assert set(published.objects) == {"Pod/ns/a", "Pod/ns/c"}
        assert set(published.last_ids) == {"Pod/ns/a", "Pod/ns/b", "Pod/ns/c"}
        assert restore_groups(kafka_bootstrap) == before
    finally:
        delete_topics(bootstrap=kafka_bootstrap, prefix=topic)
