"""The informer against the real control plane (`knm dev cluster up`, KNM_KUBECONFIG):
pods from real controllers, scheduled by kube-scheduler onto kwok's nodes; watches cut
and expired (410 Gone) while the cluster changes; nothing lost, compared with a fresh list.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from knm.core.bus.memory import MemoryBus
from knm.core.clock import utcnow
from knm.core.events.codec import decode
from knm.core.events.facts import (
    EndpointSliceDeleted,
    EndpointSliceObserved,
    LabelSelectorSpec,
    NetworkPolicyDeleted,
    NetworkPolicyObserved,
    NetworkPolicyPortSpec,
    OwnerReference,
    PodObserved,
    SelectorRequirementSpec,
    ServiceObserved,
)
from knm.core.topics import Topics
from services.watcher.informer import Informer
from services.watcher.live import LiveSource
from services.watcher.service import Watcher
from tests.services.watcher.cluster import (
    Relay,
    api_client,
    delete_namespace,
    fresh_namespace,
    kubectl,
    relay,
    wait_for,
    wait_running,
)

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: db}
spec:
  replicas: 1
  selector: {name: db}
  template:
    metadata: {labels: {name: db}}
    spec:
      containers: [{name: db, image: db}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    name = fresh_namespace()
    yield name
    delete_namespace(name)


@pytest.fixture
def cut() -> Iterator[Relay]:
    with relay() as found:
        yield found


def started(config: str | None = None, **options: Any) -> Informer:
    informer = Informer(LiveSource(api_client(config), request_timeout=5), **options)
    informer.start()
    return informer


def facts(informer: Informer, namespace: str) -> dict[str, Any]:
    """The namespace's facts as the informer holds them (and the namespace's own)."""
    return {obj.key: obj.event for obj in informer.snapshot() if obj.partition_key == namespace}


def fresh(namespace: str) -> dict[str, Any]:
    """What a new informer lists now: the truth to compare with."""
    with api_client() as api:
        informer = Informer(LiveSource(api, request_timeout=5))
        informer.load()
        return facts(informer, namespace)


def converges(informer: Informer, namespace: str, *, timeout: float = 30.0) -> bool:
    """The informer's view equals a fresh list (both read until they agree or time out)."""
    return wait_for(
        lambda: facts(informer, namespace) == fresh(namespace), timeout=timeout, every=0.5
    )


def test_pods_carry_node_phase_readiness_and_their_owner_chain(namespace: str) -> None:
    informer = started()
    try:
        kubectl("apply", "-n", namespace, "-f", "-", stdin=DEPLOYMENT)
        wait_running(namespace, 3)
        assert converges(informer, namespace)
        seen = facts(informer, namespace)
    finally:
        informer.stop()

    pods = [event for event in seen.values() if isinstance(event, PodObserved)]
    assert len(pods) == 3
    for pod in pods:
        assert pod.node in {"node-1", "node-2", "node-3"}
        assert (pod.phase, pod.ready, pod.host_network) == ("Running", True, False)
    web = [pod for pod in pods if pod.labels.get("app") == "web"]
    assert len(web) == 2
    for pod in web:
        replica_set, deployment = pod.owners
        assert replica_set.kind == "ReplicaSet"
        assert replica_set.name.startswith("web-")
        assert (deployment.kind, deployment.name) == ("Deployment", "web")
        assert pod.ports[0].port == 8080
    (db,) = [pod for pod in pods if pod.labels.get("name") == "db"]
    assert [(o.kind, o.name) for o in db.owners] == [("ReplicationController", "db")]
    assert isinstance(owner := db.owners[0], OwnerReference)
    assert owner.uid
    service = seen[f"Service/{namespace}/web"]
    assert isinstance(service, ServiceObserved)
    assert service.cluster_ip is not None
    assert service.cluster_ip.startswith("10.254.")


def test_a_cut_watch_connection_loses_no_fact(namespace: str, cut: Relay, tmp_path: Path) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=DEPLOYMENT)
    wait_running(namespace, 3)
    informer = started(cut.kubeconfig(tmp_path), backoff_ceiling=1.0)
    try:
        assert converges(informer, namespace)
        cut.cut()
        # While the watcher is away: scale, delete, create, relabel.
        kubectl("scale", "-n", namespace, "deployment/web", "--replicas=4")
        kubectl("scale", "-n", namespace, "rc/db", "--replicas=0")
        kubectl("delete", "-n", namespace, "service/web")
        kubectl("create", "-n", namespace, "service", "clusterip", "api", "--tcp=81:8081")
        kubectl("label", "-n", namespace, "deployment/web", "tier=front")
        wait_running(namespace, 4)
        reconnects = informer.counters.reconnects
        cut.restore()
        assert converges(informer, namespace)
        assert informer.counters.reconnects > reconnects or cut.accepted > 1
        seen = facts(informer, namespace)
        assert f"Service/{namespace}/web" not in seen
        assert f"Service/{namespace}/api" in seen
        assert sum(isinstance(event, PodObserved) for event in seen.values()) == 4
    finally:
        informer.stop()


def compact_etcd() -> None:
    """Compact etcd to its current revision, as kube-apiserver does every 5 minutes."""
    endpoint = os.environ.get("KNM_DEV_ETCD_URL", "http://127.0.0.1:12379")

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{endpoint}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    revision = post("/v3/kv/range", {"key": "AA=="})["header"]["revision"]
    post("/v3/kv/compaction", {"revision": revision, "physical": True})


def cluster_script(action: str) -> None:
    script = Path(str(files("knm") / "dev" / "cluster.sh"))
    result = subprocess.run(
        ["bash", str(script), action], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr


def test_an_expired_resource_version_relists_and_loses_no_fact(
    namespace: str, cut: Relay, tmp_path: Path
) -> None:
    """410 Gone: while the watcher is away, etcd is compacted past its resourceVersion
    and the apiserver restarts (its watch cache starts again from etcd's revision), so
    resuming is refused; the relist must publish what vanished as deleted."""
    kubectl("apply", "-n", namespace, "-f", "-", stdin=DEPLOYMENT)
    wait_running(namespace, 3)
    informer = started(cut.kubeconfig(tmp_path), backoff_ceiling=1.0)
    try:
        assert converges(informer, namespace)
        cut.cut()
        kubectl("delete", "-n", namespace, "deployment/web", "service/web")
        kubectl("scale", "-n", namespace, "rc/db", "--replicas=2")
        wait_running(namespace, 2)
        compact_etcd()
        cluster_script("restart-apiserver")
        expired = informer.counters.expired
        cut.restore()
        assert converges(informer, namespace, timeout=60)
        assert informer.counters.expired > expired
        seen = facts(informer, namespace)
        assert not [key for key in seen if "/web" in key], seen.keys()
        assert sum(isinstance(event, PodObserved) for event in seen.values()) == 2
    finally:
        informer.stop()


def ready_endpoints(namespace: str, service: str) -> int:
    """The ready endpoints of the service's EndpointSlices, as the controller wrote them."""
    listed = json.loads(
        kubectl(
            *("get", "endpointslices", "-n", namespace, "-o", "json"),
            *("-l", f"kubernetes.io/service-name={service}"),
        )
    )
    return sum(
        1
        for item in listed["items"]
        for endpoint in item.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
    )


def test_resyncs_publish_only_what_differs(namespace: str) -> None:
    """Relists every second (and a watcher publishing what the informer sees): nothing
    is published again while nothing changes; a change is published once."""
    kubectl("apply", "-n", namespace, "-f", "-", stdin=DEPLOYMENT)
    wait_running(namespace, 3)
    # The cluster settled first: the EndpointSlice controller may still be writing the
    # service's slice after the pods are ready, and a relist rightly publishes that (a
    # fresh clone's run once saw the slice published again during the quiet relists).
    assert wait_for(lambda: ready_endpoints(namespace, "web") == 2, timeout=30, every=0.5)
    informer = started(resync=1.0, watch_timeout=1)
    bus = MemoryBus()
    watcher = Watcher(source=informer, publisher=bus.publisher(), topics=Topics(), clock=utcnow)

    def ours() -> list[str]:
        """The keys of the facts published about the test's namespace, in order."""
        return [decode(r.value).key for r in bus.records(Topics().facts) if r.key == namespace]

    try:
        assert converges(informer, namespace)
        watcher.publish_changes()
        first = len(ours())
        assert first >= 6  # the namespace, 3 pods, 2 controllers (+ the ReplicaSet), 1 service
        resyncs = informer.counters.resyncs
        assert wait_for(lambda: informer.counters.resyncs >= resyncs + 18, timeout=30)
        watcher.publish_changes()
        assert len(ours()) == first, ours()[first:]

        kubectl("label", "-n", namespace, "rc/db", "tier=back")
        assert wait_for(lambda: watcher.publish_changes() >= 0 and len(ours()) > first, timeout=10)
        assert ours()[first:] == [f"ReplicationController/{namespace}/db"]
    finally:
        informer.stop()


POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-front}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from:
        - podSelector:
            matchExpressions: [{key: tier, operator: In, values: [front]}]
      ports: [{port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress}
spec:
  podSelector: {}
  policyTypes: [Egress]
"""


def slices_of(seen: dict[str, Any], service: str) -> list[EndpointSliceObserved]:
    return [
        event
        for event in seen.values()
        if isinstance(event, EndpointSliceObserved) and event.service == service
    ]


def test_endpoint_slices_and_network_policies_arrive_and_their_deletions_during_a_cut(
    namespace: str, cut: Relay, tmp_path: Path
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=DEPLOYMENT + "---" + POLICIES)
    wait_running(namespace, 3)
    informer = started(cut.kubeconfig(tmp_path), backoff_ceiling=1.0)
    bus = MemoryBus()
    watcher = Watcher(source=informer, publisher=bus.publisher(), topics=Topics(), clock=utcnow)
    try:
        # The endpoint-slice controller fills the slice once both web pods are ready.
        assert wait_for(
            lambda: (
                sum(
                    e.ready
                    for s in slices_of(facts(informer, namespace), "web")
                    for e in s.endpoints
                )
                == 2
            ),
            timeout=30,
        )
        assert converges(informer, namespace)
        seen = facts(informer, namespace)
        (web,) = slices_of(seen, "web")
        pods = {
            event.uid: event
            for event in seen.values()
            if isinstance(event, PodObserved) and event.labels.get("app") == "web"
        }
        assert web.address_type == "IPv4"
        assert [(p.port, p.protocol) for p in web.ports] == [(8080, "TCP")]
        assert {e.pod_uid for e in web.endpoints} == set(pods)
        assert {e.node for e in web.endpoints} == {
            pods[e.pod_uid].node for e in web.endpoints if e.pod_uid
        }
        policy = seen[f"NetworkPolicy/{namespace}/web-from-front"]
        assert isinstance(policy, NetworkPolicyObserved)
        assert policy.pod_selector == LabelSelectorSpec(match_labels={"app": "web"})
        assert policy.policy_types == ("Ingress",)
        (rule,) = policy.ingress
        assert rule.ports == (NetworkPolicyPortSpec(protocol="TCP", port=8080),)
        (peer,) = rule.peers
        assert peer.pod_selector == LabelSelectorSpec(
            match_expressions=(
                SelectorRequirementSpec(key="tier", operator="In", values=("front",)),
            )
        )
        deny = seen[f"NetworkPolicy/{namespace}/deny-egress"]
        assert isinstance(deny, NetworkPolicyObserved)
        assert (deny.policy_types, deny.egress) == (("Egress",), ())
        watcher.publish_changes()
        published = {(r.position, r.offset) for r in bus.records(Topics().facts)}

        cut.cut()
        # While the watcher is away: a policy and a service (so its slice) deleted.
        kubectl("delete", "-n", namespace, "networkpolicy/deny-egress", "service/web")
        kubectl("scale", "-n", namespace, "deployment/web", "--replicas=3")
        wait_running(namespace, 4)
        cut.restore()
        assert wait_for(lambda: not slices_of(fresh(namespace), "web"), timeout=30)
        assert converges(informer, namespace)
        watcher.publish_changes()
        after = [
            decode(r.value).payload
            for r in bus.records(Topics().facts)
            if (r.position, r.offset) not in published
        ]
        deleted = {
            (type(event).__name__, event.name)
            for event in after
            if isinstance(event, EndpointSliceDeleted | NetworkPolicyDeleted)
        }
        assert ("NetworkPolicyDeleted", "deny-egress") in deleted
        assert ("EndpointSliceDeleted", web.name) in deleted
        seen = facts(informer, namespace)
        assert f"NetworkPolicy/{namespace}/deny-egress" not in seen
        assert f"NetworkPolicy/{namespace}/web-from-front" in seen
    finally:
        informer.stop()
