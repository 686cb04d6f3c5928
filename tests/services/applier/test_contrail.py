"""The contrail backend against the VNC test server: it converges to exactly what the
plan asks for, writes nothing when nothing changed, repairs drift, removes its orphans,
never touches what is not its own, and ends the same through failures and SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.synthetic import tiers, write
from knm.core.settings import Settings
from knm.runtime.embedded import EmbeddedPipeline
from knm.testing.vnc_server import VncTestServer
from services.applier.contrail.backend import ContrailBackend
from services.applier.contrail.client import VncClient
from services.applier.model import DesiredModel
from tests.services.applier.contrail_walk import annotations_of, expected, walk

EXAMPLE = Path(__file__).parents[3] / "knm" / "examples" / "k8petstore"
CLUSTER = "test-cluster"


@pytest.fixture
def server() -> Iterator[VncTestServer]:
    with VncTestServer() as running:
        yield running


def backend_for(server: VncTestServer, *, cluster: str = CLUSTER) -> ContrailBackend:
    settings = Settings()
    return ContrailBackend(
        client=VncClient(url=server.url, backoff=0.005),
        cluster=cluster,
        pod_pools=settings.pod_pools,
        service_pools=settings.service_pools,
    )


def converge(
    paths: list[Path], backend: ContrailBackend, tmp_path: Path, *, nodes: int = 2
) -> tuple[dict[str, Any], DesiredModel]:
    """The embedded pipeline with the contrail backend as its applier's: (plan, model)."""
    pipeline = EmbeddedPipeline(
        paths=paths,
        nodes=nodes,
        settings=Settings(),
        database_url=f"sqlite:///{tmp_path / 'knm.db'}",
        applier_backend=backend,
    )
    try:
        pipeline.start()
        pipeline.publish()
        pipeline.settle()
        assert not pipeline.problems()
        return dict(pipeline.document()), pipeline.applier.model
    finally:
        pipeline.close()


def assert_holds_exactly(server: VncTestServer, document: dict[str, Any]) -> None:
    want_objects, want_refs, want_props = expected(document)
    have_objects, have_refs, have_props = walk(server.store.snapshot())
    assert have_objects == want_objects
    assert have_refs == want_refs
    assert have_props == want_props
    for obj in server.store.snapshot():
        if (obj.type, obj.fq_name) in want_objects:
            assert annotations_of(obj)["owner"] == "knm"
            assert annotations_of(obj)["cluster"] == CLUSTER
            assert {"namespace", "name", "kind"} <= annotations_of(obj).keys()


def test_the_example_converges_exactly_and_a_second_reconcile_writes_nothing(
    server: VncTestServer, tmp_path: Path
) -> None:
    backend = backend_for(server)
    document, model = converge([EXAMPLE], backend, tmp_path)
    assert_holds_exactly(server, document)
    assert len(document["pods"]) == 8
    server.reset_counts()
    report = backend.reconcile(model)
    assert report.writes == []
    assert server.writes == 0
    assert server.calls["list"] == 8


def test_two_hundred_generated_applications_converge_exactly(
    server: VncTestServer, tmp_path: Path
) -> None:
    # 200 applications: 50 namespaces of 4 tiers, each tier a controller and a service,
    # each using the next.
    manifest = write(
        tmp_path / "apps.yaml", tiers(namespaces=50, tiers_per_namespace=4, replicas=2)
    )
    backend = backend_for(server)
    document, model = converge([manifest], backend, tmp_path, nodes=5)
    assert len(document["services"]) == 200
    assert len(document["policies"]) == 150
    assert_holds_exactly(server, document)
    server.reset_counts()
    backend.reconcile(model)
    assert server.writes == 0


def test_drift_behind_knms_back_is_repaired_in_one_reconcile(
    server: VncTestServer, tmp_path: Path
) -> None:
    backend = backend_for(server)
    document, model = converge([EXAMPLE], backend, tmp_path)
    store = server.store
    objects = {(o.type, o.fq_name): o for o in store.snapshot()}
    fips = sorted(k for k in objects if k[0] == "floating-ip")
    policies = sorted(k for k in objects if k[0] == "network-policy")
    # A floating IP deleted.
    store.delete("floating-ip", objects[fips[0]].uuid)
    # A policy rule edited: another port, and drop instead of pass.
    policy = objects[policies[0]]
    entries = policy.props["network_policy_entries"]
    entries["policy_rule"][0]["dst_ports"] = [{"start_port": 1, "end_port": 1}]
    entries["policy_rule"][0]["action_list"] = {"simple_action": "deny"}
    store.update("network-policy", policy.uuid, {"network_policy_entries": entries})
    # An interface reference removed from another floating IP.
    fip = objects[fips[1]]
    vmi_ref = fip.refs["virtual_machine_interface_refs"][0]
    store.ref_update(
        {
            "type": "floating-ip",
            "uuid": fip.uuid,
            "ref-type": "virtual-machine-interface",
            "ref-uuid": vmi_ref["uuid"],
            "operation": "DELETE",
        }
    )
    # And an instance IP's network reference.
    iip = next(o for k, o in sorted(objects.items()) if k[0] == "instance-ip")
    store.ref_update(
        {
            "type": "instance-ip",
            "uuid": iip.uuid,
            "ref-type": "virtual-network",
            "ref-uuid": iip.refs["virtual_network_refs"][0]["uuid"],
            "operation": "DELETE",
        }
    )
    with pytest.raises(AssertionError):
        assert_holds_exactly(server, document)
    server.reset_counts()
    report = backend.reconcile(model)
    assert_holds_exactly(server, document)
    assert {w.operation for w in report.writes} == {"create", "update", "ref-add"}
    assert server.writes == 4
    server.reset_counts()
    backend.reconcile(model)
    assert server.writes == 0


def test_orphans_go_and_what_is_not_knms_stays(server: VncTestServer, tmp_path: Path) -> None:
    store = server.store
    knm = {
        "key_value_pair": [
            {"key": "owner", "value": "knm"},
            {"key": "cluster", "value": CLUSTER},
            {"key": "namespace", "value": "gone"},
            {"key": "name", "value": "old"},
            {"key": "kind", "value": "pod"},
        ]
    }
    other_cluster = {
        "key_value_pair": [
            {"key": "owner", "value": "knm"},
            {"key": "cluster", "value": "another-cluster"},
        ]
    }
    # An orphan chain of knm's (project > network > interface > machine): removed, the
    # interface before the machine and the network, the network before the project.
    store.seed("project", ("default-domain", "gone"), annotations=knm)
    store.seed("virtual-network", ("default-domain", "gone", "old"), annotations=knm)
    store.seed("virtual-machine", ("old-pod",), annotations=knm)
    store.create(
        "virtual-machine-interface",
        {
            "fq_name": ["default-domain", "gone", "old-pod"],
            "parent_type": "project",
            "annotations": knm,
            "virtual_machine_refs": [{"to": ["old-pod"]}],
            "virtual_network_refs": [{"to": ["default-domain", "gone", "old"]}],
        },
    )
    # Someone else's objects: one without annotations inside a namespace knm manages,
    # one of another knm installation, one elsewhere.
    store.seed("project", ("default-domain", "default"))
    store.seed("virtual-network", ("default-domain", "default", "theirs"))
    store.seed("virtual-machine", ("their-vm",), annotations=other_cluster)
    store.seed("virtual-network", ("default-domain", "default-project", "mgmt"))
    before = {(o.type, o.fq_name): o for o in store.snapshot()}

    backend = backend_for(server)
    document, _ = converge([EXAMPLE], backend, tmp_path)
    after = {(o.type, o.fq_name): o for o in store.snapshot()}
    for gone in (
        ("project", ("default-domain", "gone")),
        ("virtual-network", ("default-domain", "gone", "old")),
        ("virtual-machine", ("old-pod",)),
        ("virtual-machine-interface", ("default-domain", "gone", "old-pod")),
    ):
        assert gone not in after
    for kept in (
        ("project", ("default-domain", "default")),
        ("virtual-network", ("default-domain", "default", "theirs")),
        ("virtual-machine", ("their-vm",)),
        ("virtual-network", ("default-domain", "default-project", "mgmt")),
    ):
        assert after[kept] == before[kept]
    # The walk of knm's own objects matches the plan exactly.
    want_objects, want_refs, _ = expected(document)
    mine, refs, _ = walk(store.snapshot(), cluster=CLUSTER)
    # The project `default` is someone else's, used as it is.
    assert mine | {("project", ("default-domain", "default"))} == want_objects
    assert refs == want_refs


def _sync(url: str, manifest: Path, *, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "knm", "contrail", "sync", "-f", str(manifest), "--url", url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_failures_and_sigkill_mid_reconcile_end_in_the_same_state(tmp_path: Path) -> None:
    manifest = write(tmp_path / "apps.yaml", tiers(namespaces=6, tiers_per_namespace=3, replicas=2))
    env = {**os.environ, "KNM_CONTRAIL_CLUSTER": CLUSTER}
    # The state a calm run ends in.
    with VncTestServer() as calm:
        done = _sync(calm.url, manifest, env=env)
        _, err = done.communicate(timeout=120)
        assert done.returncode == 0, err
        reference = walk(calm.store.snapshot())
        document_objects = len(reference[0])

    with VncTestServer(fail_rate=0.2, seed=7) as flaky:
        killed = _sync(flaky.url, manifest, env=env)
        deadline = time.monotonic() + 120
        while flaky.writes < document_objects // 3 and time.monotonic() < deadline:
            assert killed.poll() is None, killed.communicate()
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        partial = walk(flaky.store.snapshot())
        assert partial != reference
        restarted = _sync(flaky.url, manifest, env=env)
        _, err = restarted.communicate(timeout=180)
        assert restarted.returncode == 0, err
        assert flaky.failures_injected > 10
        assert walk(flaky.store.snapshot()) == reference
