"""The live watcher and the allocator as processes, on the real control plane, Kafka and
PostgreSQL: what `kubectl apply` makes, the allocator holds (`knm state`) as `knm plan`
gives it for the same manifests, up to pod names and UIDs (and the scheduler's
placement), within 2 s of the last pod Running; after scaling, deletions, and a restart
of the watcher that republishes nothing that did not change.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from knm.core.bus.kafka import KafkaBus
from knm.core.bus.protocol import TopicPartition
from knm.core.domain.addresses import mac_for
from knm.core.events.codec import decode
from knm.core.settings import Settings
from knm.core.store.database import create_engine
from knm.runtime.embedded import run_embedded
from services.allocator.report import plan_document
from tests.conftest import fresh_postgres_database, required
from tests.runtime.fleet import Fleet, environment, knm
from tests.services.watcher.cluster import (
    EXAMPLE,
    delete_namespace,
    fresh_namespace,
    kubeconfig,
    kubectl,
    pods,
    wait_for,
    wait_running,
)
from tests.services.watcher.cluster import running as is_running

NODES = 3
DEADLINE = 2.0

# The seed's example, and a Deployment whose pods have no `name` label: their collection
# is their top owner, which only the resolved owner chain (ReplicaSet, Deployment) gives.
WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, uses: redis-master}}
    spec:
      containers: [{name: web, image: web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


class Manifests:
    """The test's manifests, each object in the test's namespace, edited step by step."""

    def __init__(self, namespace: str, directory: Path) -> None:
        self.namespace = namespace
        self.directory = directory
        self.objects: list[dict[str, Any]] = []
        texts = [path.read_text() for path in sorted(EXAMPLE.glob("*.yaml"))] + [WEB]
        for text in texts:
            for document in yaml.safe_load_all(text):
                if document:
                    document["metadata"]["namespace"] = namespace
                    self.objects.append(document)

    def find(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return found

    def write(self) -> Path:
        path = self.directory / "cluster.yaml"
        path.write_text(yaml.safe_dump_all(self.objects))
        return path

    def pods(self) -> int:
        total = 0
        for o in self.objects:
            total += {"Pod": 1}.get(o["kind"], o.get("spec", {}).get("replicas", 0) or 0)
        return total

    def apply(self) -> None:
        kubectl("apply", "-f", str(self.write()))

    def expected(self) -> dict[str, Any]:
        """What `knm plan` gives these manifests, in the test's namespace."""
        directory = self.directory / f"plan-{uuid.uuid4().hex[:6]}"
        directory.mkdir()
        manifests = self.write()
        run = run_embedded(
            paths=[manifests],
            nodes=NODES,
            settings=Settings(),
            database_url=f"sqlite:///{directory / 'plan.db'}",
        )
        return normalized(run.document, self.namespace)


def normalized(document: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The namespace's part of a state, without what names or places one pod: names, uids,
    nodes, address values (they depend on the order of events)."""
    prefix = f"{namespace}/"
    return {
        "pods": sorted(
            Counter(
                (p["network"], p["ip"] is not None, len(p["floating_ips"]))
                for p in document["pods"]
                if p["namespace"] == namespace
            ).items()
        ),
        "services": sorted(
            (
                s["name"],
                s["network"],
                json.dumps(s["ports"], sort_keys=True),
                s["vip"] is not None,
                len(s["backends"]),
            )
            for s in document["services"]
            if s["namespace"] == namespace
        ),
        "networks": [n for n in document["networks"] if n["namespace"] == namespace],
        "policies": [
            p
            for p in document["policies"]
            if p["from_network"].startswith(prefix) or p["to_network"].startswith(prefix)
        ],
    }


class Pipeline:
    def __init__(self, *, database_url: str, logs: Path) -> None:
        self.env = environment(database_url=database_url, prefix=f"t{uuid.uuid4().hex[:8]}.")
        self.env["KNM_KUBECONFIG"] = kubeconfig()
        self.env["KNM_BATCH_SIZE"] = "500"
        knm("db", "upgrade", env=self.env)
        knm("topics", "create", "--partitions", "4", env=self.env)
        self.topic = f"{self.env['KNM_TOPIC_PREFIX']}facts"
        self.bus = KafkaBus(bootstrap=required("KNM_KAFKA_BOOTSTRAP"), client_id="test")
        self.fleet = Fleet(env=self.env, logs=logs)
        self.fleet.add("watcher", "watcher")
        self.fleet.add("allocator", "allocator")
        self.engine = create_engine(database_url)

    def start(self) -> None:
        for name in self.fleet.members:
            self.fleet.start(name)
        assert wait_for(self.fleet.members["watcher"].ready, timeout=60, every=0.2), (
            self.fleet.tail()
        )

    def state(self, namespace: str) -> dict[str, Any]:
        # One snapshot for the report's several queries: the allocator writes meanwhile.
        with self.engine.connect().execution_options(
            isolation_level="REPEATABLE READ"
        ) as connection:
            return normalized(plan_document(connection), namespace)

    def ends(self) -> dict[TopicPartition, int]:
        return self.bus.end_offsets(self.topic)

    def close(self) -> dict[str, int]:
        codes = self.fleet.stop_all()
        self.engine.dispose()
        return codes


@pytest.fixture
def namespace() -> Iterator[str]:
    name = fresh_namespace()
    yield name
    delete_namespace(name)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    urls = fresh_postgres_database(required("KNM_DATABASE_URL"))
    running = Pipeline(database_url=next(urls), logs=tmp_path)
    try:
        running.start()
        yield running
    finally:
        codes = running.close()
        for _ in urls:
            pass
    assert codes == dict.fromkeys(codes, 0), f"not every process stopped cleanly: {codes}"


def converged(
    pipeline: Pipeline,
    manifests: Manifests,
    change: Callable[[], object],
    *,
    running: bool = True,
    deadline: float = DEADLINE,
) -> float:
    """Make the change, then the seconds from the last pod Running (or, with `running`
    False, from the change's end) until the allocator's state is what `knm plan` gives
    the manifests. The plan is computed before the change, and the pods and the state
    are read every 50 ms from the change on; fails past `deadline`."""
    expected = manifests.expected()
    namespace, count = manifests.namespace, manifests.pods()
    change()
    since = time.monotonic()
    give_up = since + 90
    last: dict[str, Any] = {}
    while running:
        found = pods(namespace)
        if len(found) == count and all(is_running(pod) for pod in found):
            since = time.monotonic()
            break
        assert time.monotonic() < give_up, f"{namespace}: pods did not all run: {len(found)}"
        time.sleep(0.05)
    while time.monotonic() < give_up:
        last = pipeline.state(namespace)
        if last == expected:
            took = time.monotonic() - since
            assert took <= deadline, (
                f"state converged only after {took:.2f} s (limit {deadline} s)\n"
                f"{pipeline.fleet.tail()}"
            )
            return took
        time.sleep(0.05)
    pytest.fail(f"no convergence\nwanted {expected}\ngot    {last}\n{pipeline.fleet.tail()}")


def test_state_matches_the_plan_through_scaling_and_deletions(
    pipeline: Pipeline, namespace: str, tmp_path: Path
) -> None:
    manifests = Manifests(namespace, tmp_path)
    frontend = manifests.find("ReplicationController", "frontend")
    web = manifests.find("Deployment", "web")
    timings: dict[str, float] = {}

    timings["apply"] = converged(pipeline, manifests, manifests.apply)
    assert wait_for(lambda: annotated(pipeline, namespace), timeout=10), (
        "pods not annotated with their interfaces"
    )

    frontend["spec"]["replicas"], web["spec"]["replicas"] = 5, 4
    timings["scale up"] = converged(pipeline, manifests, manifests.apply)

    frontend["spec"]["replicas"], web["spec"]["replicas"] = 1, 1
    timings["scale down"] = converged(pipeline, manifests, manifests.apply)

    manifests.objects.remove(manifests.find("Service", "loadgen"))
    timings["service deleted"] = converged(
        pipeline,
        manifests,
        lambda: kubectl("delete", "-n", namespace, "service/loadgen"),
        running=False,
    )

    manifests.objects.clear()
    timings["namespace deleted"] = converged(
        pipeline,
        manifests,
        lambda: kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=90s"),
        running=False,
    )
    print(json.dumps({"seconds_after_running": {k: round(v, 2) for k, v in timings.items()}}))


def annotated(pipeline: Pipeline, namespace: str) -> bool:
    """Every pod carries knm.io/interface with the address the allocator holds for it."""
    with pipeline.engine.connect().execution_options(
        isolation_level="REPEATABLE READ"
    ) as connection:
        held = {
            p["name"]: p["ip"]
            for p in plan_document(connection)["pods"]
            if p["namespace"] == namespace
        }
    found = {
        pod["metadata"]["name"]: json.loads(
            (pod["metadata"].get("annotations") or {}).get("knm.io/interface", "null")
        )
        for pod in pods(namespace)
    }
    return set(found) == set(held) and all(
        value is not None
        and value["ip"] == f"{held[name]}/32"
        and value["gateway"] == "169.254.1.1"
        and value["mac"] == mac_for(IPv4Address(held[name]))
        for name, value in found.items()
    )


def test_a_restarted_watcher_publishes_only_what_changed(
    pipeline: Pipeline, namespace: str, tmp_path: Path
) -> None:
    manifests = Manifests(namespace, tmp_path)
    converged(pipeline, manifests, manifests.apply)
    # The endpoint-slice controller may still be catching up with the pods (on a busy
    # machine, seconds): its changes are not what the restart is about. Stop the watcher
    # once every slice holds its service's ready pods and the facts topic is quiet.
    assert wait_for(lambda: slices_settled(manifests), timeout=60, every=0.5)
    assert wait_for(lambda: quiet(pipeline), timeout=30, every=0.1)
    before = pipeline.ends()
    assert pipeline.fleet.stop("watcher") == 0

    manifests.find("ReplicationController", "frontend")["spec"]["replicas"] = 4
    manifests.apply()
    wait_running(namespace, manifests.pods())
    names = {p["metadata"]["name"] for p in pods(namespace)}

    # From the restart: the process starts, reads its facts back, lists the cluster.
    converged(
        pipeline,
        manifests,
        lambda: pipeline.fleet.start("watcher"),
        running=False,
        deadline=30.0,
    )
    keys = new_keys(pipeline, since=before)
    ours = {key for key in keys if f"/{namespace}/" in key or key.endswith(f"/{namespace}")}
    (added,) = [key for key in ours if key.startswith("Pod/")]
    assert added.rsplit("/", 1)[1] in names
    # The frontend service's endpoint slice changed too: it has the new pod.
    slices = {key for key in ours if key.startswith("EndpointSlice/")}
    assert [key.rsplit("/", 1)[1].rsplit("-", 1)[0] for key in slices] == ["frontend"], ours
    assert ours - slices == {f"ReplicationController/{namespace}/frontend", added}, ours


def slices_settled(manifests: Manifests) -> bool:
    """Every service's endpoint slices list exactly its running, ready pods."""
    namespace = manifests.namespace
    listed = json.loads(kubectl("get", "-n", namespace, "endpointslices", "-o", "json"))
    ready: Counter[str] = Counter()
    for item in listed["items"]:
        service = item["metadata"].get("labels", {}).get("kubernetes.io/service-name")
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                ready[service] += 1
    running = [pod for pod in pods(namespace) if is_running(pod)]
    for service in (o for o in manifests.objects if o["kind"] == "Service"):
        selector = service["spec"].get("selector") or {}
        wanted = sum(
            all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            for pod in running
        )
        if ready[service["metadata"]["name"]] != wanted:
            return False
    return True


def quiet(pipeline: Pipeline, *, seconds: float = 1.5) -> bool:
    """No fact published for `seconds`."""
    first = pipeline.ends()
    time.sleep(seconds)
    return pipeline.ends() == first


def new_keys(pipeline: Pipeline, *, since: dict[TopicPartition, int]) -> set[str]:
    """The keys of the facts published past these offsets."""
    ends = pipeline.ends()
    consumer = pipeline.bus.consumer(
        group=f"test-{uuid.uuid4().hex[:8]}", topics=[pipeline.topic], positions=lambda a: since
    )
    keys: set[str] = set()
    read = dict(since)
    try:
        deadline = time.monotonic() + 30
        while any(read.get(tp, 0) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, "could not read the facts topic to its end"
            for record in consumer.poll(max_records=5000, timeout=0.5):
                if record.offset >= since.get(record.position, 0):
                    keys.add(decode(record.value).key)
                read[record.position] = max(read.get(record.position, 0), record.offset + 1)
    finally:
        consumer.close()
    return keys


SHOP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  replicas: 1
  selector: {matchLabels: {name: shop}}
  template:
    metadata: {labels: {name: shop}}
    spec:
      containers: [{name: shop, image: shop, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  type: %s
  selector: {name: shop}
  ports: [{port: 80, targetPort: 8080}]
"""


def public_ip(pipeline: Pipeline, namespace: str) -> str | None:
    with pipeline.engine.connect().execution_options(
        isolation_level="REPEATABLE READ"
    ) as connection:
        (found,) = [
            s
            for s in plan_document(connection)["services"]
            if (s["namespace"], s["name"]) == (namespace, "shop")
        ] or [{"public_ip": None}]
    address: str | None = found["public_ip"]
    return address


def ingress(namespace: str) -> list[str]:
    found = json.loads(kubectl("get", "-n", namespace, "service/shop", "-o", "json"))
    balancer = (found.get("status") or {}).get("loadBalancer") or {}
    return [entry["ip"] for entry in balancer.get("ingress") or []]


def public_lines(pipeline: Pipeline, namespace: str) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from knm.core.store.schema import AddressHistoryRow, table

    history = table(AddressHistoryRow)
    with pipeline.engine.connect() as connection:
        rows = connection.execute(
            select(history.c.action, history.c.ip)
            .where(history.c.namespace == namespace, history.c.kind == "public")
            .order_by(history.c.seq)
        ).all()
    return [(row.action, row.ip) for row in rows]


def test_a_load_balancer_gets_its_ingress_and_loses_it(pipeline: Pipeline, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=SHOP % "LoadBalancer")
    assert wait_for(lambda: public_ip(pipeline, namespace) is not None, timeout=30), (
        pipeline.fleet.tail()
    )
    first = public_ip(pipeline, namespace)
    assert first is not None
    assert IPv4Address(first) in IPv4Network("10.1.0.0/16")
    assert wait_for(lambda: ingress(namespace) == [first], timeout=10), ingress(namespace)

    # No longer a LoadBalancer: the address is released and the ingress cleared.
    kubectl("apply", "-n", namespace, "-f", "-", stdin=SHOP % "ClusterIP")
    assert wait_for(lambda: public_ip(pipeline, namespace) is None, timeout=30)
    assert wait_for(lambda: ingress(namespace) == [], timeout=10), ingress(namespace)

    # A LoadBalancer again: a new address (the first one is in quarantine).
    kubectl("apply", "-n", namespace, "-f", "-", stdin=SHOP % "LoadBalancer")
    assert wait_for(lambda: public_ip(pipeline, namespace) not in (None, first), timeout=30)
    second = public_ip(pipeline, namespace)
    assert wait_for(lambda: ingress(namespace) == [second], timeout=10), ingress(namespace)

    # Deleted: released, and the history says who held both.
    kubectl("delete", "-n", namespace, "service/shop")
    assert wait_for(lambda: public_ip(pipeline, namespace) is None, timeout=30)
    assert wait_for(lambda: len(public_lines(pipeline, namespace)) == 4, timeout=10)
    assert public_lines(pipeline, namespace) == [
        ("allocated", first),
        ("released", first),
        ("allocated", second),
        ("released", second),
    ]
