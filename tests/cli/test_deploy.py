"""deploy/ cannot drift from knm: the audit API's container runs a valid `knm` command,
sets only variables knm reads, and its probes and Service reach what it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from knm.core.settings import Settings
from services.audit.app import create_app
from services.audit.database import read_only_engine
from tests.cli.test_compose import parse, variables_knm_reads

ROOT = Path(__file__).parents[2]


def documents() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "deploy").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def test_the_audit_api_deployment_runs_knm_audit_api() -> None:
    deployment = documents()["Deployment/knm-audit-api"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = parse(container["args"])
    assert command.name == "audit-api"
    context = command.make_context("audit-api", list(container["args"][1:]))
    (port,) = container["ports"]
    assert port["containerPort"] == context.params["port"]
    assert context.params["host"] == "0.0.0.0"


def test_it_sets_only_variables_knm_reads_and_takes_secrets_by_reference() -> None:
    (container,) = documents()["Deployment/knm-audit-api"]["spec"]["template"]["spec"]["containers"]
    known = variables_knm_reads()
    names = {variable["name"] for variable in container["env"]}
    assert names <= known, names - known
    secret = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container["env"]
        if "valueFrom" in variable
    }
    assert secret == {
        "KNM_DATABASE_URL": {"name": "knm-audit", "key": "database-url"},
        "KNM_AUDIT_TOKEN_HASHES": {"name": "knm-audit", "key": "token-hashes"},
    }
    plain = {v["name"]: v["value"] for v in container["env"] if "value" in v}
    Settings(**{name.removeprefix("KNM_").lower(): value for name, value in plain.items()})


def test_probes_and_service_reach_what_the_api_serves() -> None:
    found = documents()
    deployment, service = found["Deployment/knm-audit-api"], found["Service/knm-audit-api"]
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    engine = read_only_engine("sqlite://")
    served = {route.path for route in create_app(engine=engine, settings=Settings()).routes}  # type: ignore[attr-defined]
    engine.dispose()
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in served
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in served
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= template["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == container["ports"][0]["name"]
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True


# ---- knm's services (deploy/knm.yaml) ------------------------------------------------------

SERVICES = {
    "Deployment/knm-watcher": "watcher",
    "Deployment/knm-allocator": "allocator",
    "Deployment/knm-applier": "applier",
    "DaemonSet/knm-agent": "agent",
}


def test_each_service_runs_its_knm_command_with_variables_knm_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The agent's node comes from the pod's spec.nodeName (KNM_NODE).
    monkeypatch.setenv("KNM_NODE", "node-1")
    found = documents()
    known = variables_knm_reads()
    config = found["ConfigMap/knm-config"]["data"]
    assert set(config) <= known, set(config) - known
    Settings(**{name.removeprefix("KNM_").lower(): value for name, value in config.items()})
    for ref, command_name in SERVICES.items():
        (container,) = found[ref]["spec"]["template"]["spec"]["containers"]
        assert parse(container["args"]).name == command_name, ref
        names = {variable["name"] for variable in container.get("env", [])}
        assert names <= known, names - known
        assert container["envFrom"] == [{"configMapRef": {"name": "knm-config"}}]


def test_only_the_watcher_gets_a_token_and_it_may_only_read_what_it_watches_and_write_back() -> (
    None
):
    from services.watcher.live import RESOURCES

    found = documents()
    for ref in SERVICES:
        spec = found[ref]["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is (ref == "Deployment/knm-watcher"), ref
    assert found["Deployment/knm-watcher"]["spec"]["template"]["spec"]["serviceAccountName"] == (
        "knm-watcher"
    )
    granted = {
        (group, resource, verb)
        for rule in found["ClusterRole/knm-watcher"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    watched = {
        # The API group: "" for the core v1, else what comes before the version.
        (r.api_version.rpartition("/")[0], r.plural, verb)
        for r in RESOURCES
        for verb in ("get", "list", "watch")
    }
    assert granted == watched | {("", "pods", "patch"), ("", "services/status", "patch")}
    binding = found["ClusterRoleBinding/knm-watcher"]
    assert binding["roleRef"]["name"] == "knm-watcher"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "knm-watcher", "namespace": "knm"}
    ]


def test_the_agent_installs_knm_cni_and_its_configuration() -> None:
    spec = documents()["DaemonSet/knm-agent"]["spec"]["template"]["spec"]
    (install,) = spec["initContainers"]
    script = install["args"][0]
    assert "/host/opt/cni/bin/knm-cni" in script
    assert '"type": "knm-cni", "agentSocket": "/run/knm/agent.sock"' in script
    (agent,) = spec["containers"]
    assert "--cni-socket=/run/knm/agent.sock" in agent["args"]


def test_the_api_server_accepts_every_manifest() -> None:
    """`kubectl apply --dry-run=server` against the real control plane."""
    from tests.services.watcher.cluster import kubectl

    namespaces = kubectl("get", "namespaces", "-o", "name")
    if "namespace/knm\n" not in namespaces:
        kubectl("create", "namespace", "knm")
    out = kubectl("apply", "--dry-run=server", "-n", "knm", "-f", str(ROOT / "deploy"))
    for ref in [*SERVICES, "ConfigMap/knm-config", "ClusterRole/knm-watcher"]:
        _kind, name = ref.split("/")
        assert f"{name} " in out, out


def test_the_api_server_grants_the_watcher_exactly_its_rules() -> None:
    """The watcher's ClusterRole, bound (under a test's own names) to a service account,
    as the real apiserver's authorizer answers `kubectl auth can-i` for it."""
    import subprocess
    import uuid

    from tests.services.watcher.cluster import (
        delete_namespace,
        fresh_namespace,
        kubeconfig,
        kubectl,
        kubectl_binary,
    )

    found = documents()
    namespace = fresh_namespace()
    name = f"knm-watcher-{uuid.uuid4().hex[:8]}"
    role = {**found["ClusterRole/knm-watcher"], "metadata": {"name": name}}
    binding = {
        **found["ClusterRoleBinding/knm-watcher"],
        "metadata": {"name": name},
        "roleRef": {**found["ClusterRoleBinding/knm-watcher"]["roleRef"], "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "knm-watcher", "namespace": namespace}],
    }
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([role, binding]))
    account = f"system:serviceaccount:{namespace}:knm-watcher"

    def can(verb: str, resource: str, subresource: str = "") -> bool:
        # Exit code 0 is yes, 1 is no; anything else fails the test.
        answer = subprocess.run(
            [
                *(kubectl_binary(), "--kubeconfig", kubeconfig(), "auth", "can-i", verb, resource),
                *(f"--subresource={subresource}", f"--as={account}", "--all-namespaces"),
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert answer.returncode in (0, 1), answer.stderr
        return answer.returncode == 0

    try:
        for resource in (
            "namespaces",
            "nodes",
            "pods",
            "services",
            "replicationcontrollers",
            "deployments.apps",
            "replicasets.apps",
            "statefulsets.apps",
            "daemonsets.apps",
            "endpointslices.discovery.k8s.io",
            "networkpolicies.networking.k8s.io",
        ):
            for verb in ("get", "list", "watch"):
                assert can(verb, resource), (verb, resource)
            for verb in ("create", "update", "delete"):
                assert not can(verb, resource), (verb, resource)
        assert can("patch", "pods")
        assert can("patch", "services", "status")
        assert not can("patch", "services")
        assert not can("patch", "endpointslices.discovery.k8s.io")
        assert not can("patch", "pods", "status")
        assert not can("get", "secrets")
    finally:
        kubectl("delete", "clusterrolebinding", name, "clusterrole", name, "--ignore-not-found")
        delete_namespace(namespace)
