"""deploy/ cannot drift from knm: the audit API's container runs a valid `knm` command,
sets only variables knm reads, and its probes and Service reach what it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
