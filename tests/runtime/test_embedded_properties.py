"""Properties of the whole embedded pipeline over generated manifests (hypothesis).

Manifests go in as YAML files, exactly as a user's would; what comes out is checked
against the seed's rules recomputed here from the manifests themselves.
"""

from __future__ import annotations

import ipaddress
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from knm.core.settings import Settings
from knm.core.store.schema import AddressHistoryRow, table
from knm.runtime.embedded import EmbeddedPipeline

NAMESPACES = ("default", "shop")
TIERS = ("web", "api", "db")
NODES = 3


@dataclass
class Workload:
    """Generated manifests, and what each of their pods will look like."""

    documents: list[dict[str, Any]] = field(default_factory=list)


def _labels(draw: st.DrawFn, namespace: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    if draw(st.booleans()):
        labels["name"] = draw(st.sampled_from(TIERS))
    if draw(st.booleans()):
        labels["uses"] = draw(st.sampled_from(TIERS))
    if draw(st.booleans()):
        labels["role"] = draw(st.sampled_from(("front", "back")))
    return labels


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    workload = Workload()
    count = draw(st.integers(1, 7))
    for index in range(count):
        namespace = draw(st.sampled_from(NAMESPACES))
        kind = draw(st.sampled_from(("Pod", "ReplicationController", "Deployment", "Service")))
        name = f"{kind.lower()}-{index}"
        labels = _labels(draw, namespace)
        meta = {"name": name, "namespace": namespace}
        container = {"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}
        host = draw(st.integers(0, 6)) == 0
        if kind == "Pod":
            workload.documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {**meta, "labels": labels},
                    "spec": {"hostNetwork": host, "containers": [container]},
                }
            )
        elif kind == "Service":
            selector = draw(
                st.sampled_from(
                    [{"name": t} for t in TIERS] + [{"role": "front"}, {"role": "back"}]
                )
            )
            ports = [{"port": 80, "targetPort": draw(st.sampled_from((8080, "http")))}]
            spec: dict[str, Any] = {"selector": selector, "ports": ports}
            if draw(st.integers(0, 5)) == 0:
                spec["clusterIP"] = "None"
            workload.documents.append(
                {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
            )
        else:
            replicas = draw(st.integers(0, 3))
            # Controllers need a selector their template matches: give every pod one.
            labels = {**labels, "app": name}
            api = "v1" if kind == "ReplicationController" else "apps/v1"
            controller_selector: dict[str, Any] = {"app": name}
            if kind == "Deployment":
                controller_selector = {"matchLabels": {"app": name}}
            workload.documents.append(
                {
                    "apiVersion": api,
                    "kind": kind,
                    "metadata": meta,
                    "spec": {
                        "replicas": replicas,
                        "selector": controller_selector,
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"hostNetwork": host, "containers": [container]},
                        },
                    },
                }
            )
    return workload


@contextmanager
def pipeline(documents: list[dict[str, Any]]) -> Iterator[tuple[EmbeddedPipeline, Path]]:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        manifest = root / "manifests.yaml"
        manifest.write_text(yaml.safe_dump_all(documents))
        running = EmbeddedPipeline(
            paths=[manifest],
            nodes=NODES,
            settings=Settings(),
            database_url=f"sqlite:///{root / 'knm.db'}",
        )
        running.start()
        try:
            yield running, manifest
        finally:
            running.close()


def collection(pod: dict[str, Any], controllers: dict[tuple[str, str], str]) -> str:
    """The seed's rule, from the manifests: the name label, else the top controller."""
    return pod["labels"].get("name") or controllers.get((pod["namespace"], pod["name"]), "default")


def expectations(documents: list[dict[str, Any]], document: dict[str, Any]) -> None:
    pods = document["pods"]
    blocks = {b["cidr"]: b["node"] for b in document["blocks"]}
    pool = ipaddress.IPv4Network("10.0.0.0/16")
    # Recover each pod's labels and controller from the manifests, by name prefix.
    declared = []
    for doc in documents:
        if doc["kind"] == "Pod":
            declared.append((doc, doc["metadata"]["name"], None))
        elif doc["kind"] in ("ReplicationController", "Deployment"):
            declared.append((doc["spec"]["template"], doc["metadata"]["name"], doc["metadata"]))
    labels_of: dict[tuple[str, str], dict[str, str]] = {}
    host_of: dict[tuple[str, str], bool] = {}
    controllers: dict[tuple[str, str], str] = {}
    for pod in pods:
        key = (pod["namespace"], pod["name"])
        for template, name, owner in declared:
            namespace = (owner or template["metadata"]).get("namespace", "default")
            if namespace != pod["namespace"]:
                continue
            if (owner is None and pod["name"] == name) or (
                owner and pod["name"].startswith(f"{name}-")
            ):
                labels_of[key] = template["metadata"].get("labels", {})
                host_of[key] = template["spec"].get("hostNetwork", False)
                if owner is not None:
                    controllers[key] = name
    assert set(labels_of) == {(p["namespace"], p["name"]) for p in pods}

    ips = [p["ip"] for p in pods if p["ip"]]
    assert len(ips) == len(set(ips)), "two pods share an address"
    for pod in pods:
        key = (pod["namespace"], pod["name"])
        if host_of[key]:
            assert pod["ip"] is None
            assert pod["network"] is None
            continue
        ip = ipaddress.IPv4Address(pod["ip"])
        assert ip in pool
        homes = [cidr for cidr in blocks if ip in ipaddress.IPv4Network(cidr)]
        assert len(homes) == 1
        assert blocks[homes[0]] == pod["node"], "address outside its node's block"
        with_labels = {**pod, "labels": labels_of[key]}
        assert pod["network"] == f"{pod['namespace']}/{collection(with_labels, controllers)}"

    # Floating IPs: every selected pod with an address carries the VIP, and nothing else.
    services = {(s["namespace"], s["name"]): s for s in document["services"]}
    expected_fips: dict[tuple[str, str], set[str]] = defaultdict(set)
    selectors = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d["spec"]["selector"]
        for d in documents
        if d["kind"] == "Service"
    }
    backends_in: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (namespace, name), selector in selectors.items():
        service = services[(namespace, name)]
        for pod in pods:
            key = (pod["namespace"], pod["name"])
            if (
                pod["namespace"] == namespace
                and pod["ip"]
                and all(labels_of[key].get(k) == v for k, v in selector.items())
            ):
                backends_in[(namespace, name)].add(pod["network"].split("/", 1)[1])
                if service["vip"]:
                    expected_fips[key].add(service["vip"])
    for pod in pods:
        assert set(pod["floating_ips"]) == expected_fips[(pod["namespace"], pod["name"])]

    # Policies: exactly the declared `uses` relations to services with a VIP.
    expected_policies = set()
    for pod in pods:
        key = (pod["namespace"], pod["name"])
        uses = labels_of[key].get("uses")
        if not uses or pod["network"] is None:
            continue
        own = pod["network"].split("/", 1)[1]
        if uses == own:
            continue
        for (namespace, name), selector in selectors.items():
            service = services[(namespace, name)]
            selects_tier = selector.get("name") == uses or (
                "name" not in selector and uses in backends_in[(namespace, name)]
            )
            if namespace == pod["namespace"] and service["vip"] and selects_tier:
                expected_policies.add((pod["network"], service["network"]))
    assert {(p["from_network"], p["to_network"]) for p in document["policies"]} == (
        expected_policies
    )


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(workloads())
def test_generated_manifests_follow_the_seed_rules(workload: Workload) -> None:
    with pipeline(workload.documents) as (running, _):
        running.publish()
        running.settle()
        assert running.problems() == ()
        expectations(workload.documents, running.document())


@PROPERTY
@given(workloads())
def test_replaying_the_facts_or_duplicates_gives_the_identical_state(workload: Workload) -> None:
    with pipeline(workload.documents) as (first, _):
        first.publish()
        first.settle()
        facts = first.bus.records(first.topics.facts)
        once = first.document()
    # A second pipeline fed the first one's facts, each of them twice, in order.
    with pipeline([]) as (second, _):
        publisher = second.bus.publisher()
        from knm.core.bus.protocol import OutgoingMessage

        for record in facts:
            message = OutgoingMessage(second.topics.facts, record.key or "", record.value)
            publisher.publish([message, message])
        second.settle()
        assert second.document() == once
        assert second.allocator.skipped == len(facts)


@PROPERTY
@given(workloads())
def test_deleting_everything_returns_every_address_and_the_history_balances(
    workload: Workload,
) -> None:
    with pipeline(workload.documents) as (running, manifest):
        running.publish()
        running.settle()
        manifest.write_text("")
        running.publish()
        running.settle()
        document = running.document()
        assert document["pods"] == []
        assert document["services"] == []
        assert document["networks"] == []
        assert document["policies"] == []
        # The simulated nodes remain, so their blocks stay theirs; but hold nothing.
        assert {b["node"] for b in document["blocks"]} <= {f"node-{i}" for i in range(1, 4)}
        with running.engine.connect() as connection:
            rows = connection.execute(
                select(table(AddressHistoryRow)).order_by(table(AddressHistoryRow).c.seq)
            ).all()
        open_: dict[tuple[str, str, str], int] = defaultdict(int)
        for row in rows:
            key = (row.ip, row.kind, row.uid)
            open_[key] += 1 if row.action == "allocated" else -1
            assert open_[key] in (0, 1)
        assert not any(open_.values()), "an allocation was never released"
