"""The bundled example on three lab nodes, with real packets: isolation, `uses`, VIPs."""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path

from knm.lab import record as lab_record
from knm.lab.probe import probe
from knm.lab.topology import existing
from tests.lab.conftest import Lab, bring_up, example, knm, take_down


def test_matrix_observes_exactly_what_the_policy_expects(lab: Lab) -> None:
    probes = lab.matrix()

    assert {frozenset(p) for p in probes} == {
        frozenset({"from", "to", "target", "expected", "observed", "answered_by"})
    }
    wrong = [p for p in probes if p["expected"] != p["observed"]]
    assert not wrong, wrong
    # Every kind of pair is there: own collection, `uses` to a VIP, everything else.
    vip = [p for p in probes if "/service/" in p["target"]]
    assert any(p["expected"] for p in vip)
    assert any(not p["expected"] for p in vip)
    direct = [p for p in probes if "/service/" not in p["target"]]
    assert any(p["expected"] for p in direct)
    assert sum(not p["expected"] for p in direct) > len(direct) / 2
    for p in probes:
        if p["observed"] and "/service/" not in p["target"]:
            assert p["answered_by"] == p["target"]
    # loadgen uses frontend: its VIP answers, from one of frontend's pods.
    frontend = lab.service("default/frontend")
    through = [p for p in vip if p["from"].startswith("default/loadgen")]
    assert all(
        p["answered_by"] in frontend.backends for p in through if p["to"].startswith(frontend.vip)
    )


def test_a_vip_spreads_connections_over_its_backends(lab: Lab) -> None:
    frontend = lab.service("default/frontend")
    assert len(frontend.backends) == 3
    client = lab.pod("default/loadgen-")
    # Fixed source ports: the spread must not depend on how a client picks them.
    answers = Counter(
        probe(
            netns=client.netns,
            ip=frontend.vip,
            port=frontend.ports[0],
            source_port=41000 + i,
        ).answered_by
        for i in range(60)
    )

    assert set(answers) == set(frontend.backends), answers
    assert max(answers.values()) <= 2 * min(answers.values()), answers


def test_a_pod_reaches_a_vip_whose_only_backend_is_on_another_node(lab: Lab) -> None:
    master = lab.service("default/redis-master")
    (backend,) = master.backends
    far = lab.pod(backend).node
    client = next(
        p for p in lab.record.pods if p.key.startswith("default/frontend-") and p.node != far
    )

    result = probe(netns=client.netns, ip=master.vip, port=6379)

    assert result.answered_by == backend
    # and the backend's own address, from another collection, stays closed
    assert not probe(netns=client.netns, ip=lab.pod(backend).ip, port=6379, timeout=0.5).connected


def test_probe_command_says_who_answered_or_that_nobody_did(lab: Lab) -> None:
    client = lab.pod("default/loadgen-")
    master = lab.service("default/redis-master")
    frontend = lab.service("default/frontend")

    allowed = knm(
        "lab", "probe", "--name", lab.name, "--from", client.key, "--to", f"{frontend.vip}:3000"
    )
    denied = knm(
        "lab", "probe", "--name", lab.name, "--from", client.key, "--to", f"{master.vip}:6379"
    )
    bad = knm("lab", "probe", "--name", lab.name, "--from", client.key, "--to", "nowhere")

    assert allowed.returncode == 0
    assert "answered by default/frontend-" in allowed.stdout
    assert denied.returncode == 1
    assert "timed out" in denied.stdout
    assert bad.returncode == 2
    assert "IP:PORT" in bad.stderr


def test_two_pods_on_one_node_serve_the_same_port(tmp_path: Path) -> None:
    # Eight pods on two nodes: two of frontend's three replicas share a node.
    small = bring_up(f"knmt-{secrets.token_hex(2)}", example(), nodes=2)
    try:
        pods = [p for p in small.record.pods if p.key.startswith("default/frontend-")]
        nodes = Counter(p.node for p in pods)
        shared = next(node for node, count in nodes.items() if count > 1)
        twins = [p for p in pods if p.node == shared]
        assert {p.ports[0] for p in twins} == {3000}
        for pod in twins:
            for other in twins:
                result = probe(netns=other.netns, ip=pod.ip, port=3000)
                if other is not pod:
                    assert result.answered_by == pod.key
        assert all(p["expected"] == p["observed"] for p in small.matrix())
    finally:
        take_down(small)


def test_down_removes_what_the_lab_made(lab: Lab) -> None:
    # Checked on a second, short-lived lab so the module's lab stays up.
    other = bring_up(f"knmt-{secrets.token_hex(2)}", example(), nodes=1)
    made = set(other.record.namespaces) | {p.netns for p in other.record.pods}
    logs = lab_record.lab_dir(other.name)
    assert (logs / "daemon.log").exists()
    take_down(other)

    left = existing()
    assert not made & left
    assert not logs.exists()
    assert lab.record.namespaces[0] in left
    again = knm("lab", "down", "--name", other.name)
    assert again.returncode == 0
