"""compose.yaml cannot drift from knm: every command parses, every variable is read."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.core import TyperGroup

from knm.cli.main import build
from knm.core.settings import Settings

ROOT = Path(__file__).parents[2]


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


def knm_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == "knm:dev"
    }


def parse(args: list[str]) -> Any:
    """Parse like `knm ARGS` would, without running anything; returns the command.

    Raises the command line library's UsageError (what `knm` reports as a usage error)
    when the arguments do not parse.
    """
    command: Any = typer.main.get_command(build())
    context = command.make_context("knm", list(args), resilient_parsing=False)
    while isinstance(command, TyperGroup):
        pending = [*getattr(context, "_protected_args", []), *context.args]
        name, sub, rest = command.resolve_command(context, pending)
        assert sub is not None, f"no command {name!r}"
        context = sub.make_context(name, list(rest), parent=context)
        command = sub
    return command


def variables_knm_reads() -> set[str]:
    names = {f"KNM_{field.upper()}" for field in Settings.model_fields}
    group = typer.main.get_command(build())
    assert isinstance(group, TyperGroup)

    def walk(command: Any) -> None:
        for parameter in command.params:
            envvar = getattr(parameter, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
        if isinstance(command, TyperGroup):
            for sub in command.commands.values():
                walk(sub)

    walk(group)
    return names


def test_compose_runs_every_service_of_the_pipeline() -> None:
    commands = {service["command"][0] for service in knm_services().values()}
    assert {"db", "topics", "watcher", "allocator", "applier", "agent", "audit-api"} <= commands


@pytest.mark.parametrize("name", sorted(knm_services()))
def test_every_command_is_a_valid_knm_invocation(name: str) -> None:
    parse(knm_services()[name]["command"])


@pytest.mark.parametrize("name", sorted(knm_services()))
def test_every_variable_set_is_one_knm_reads(name: str) -> None:
    known = variables_knm_reads()
    for variable in knm_services()[name].get("environment", {}):
        assert variable in known, f"{name} sets {variable}, which knm does not read"


def test_a_wrong_command_would_be_caught() -> None:
    with pytest.raises(Exception, match="No such option"):
        parse(["allocator", "--no-such-flag"])
    with pytest.raises(Exception, match="Missing parameter: node"):
        parse(["agent"])  # --node is required
    assert "KNM_NO_SUCH" not in variables_knm_reads()


def test_services_wait_for_what_they_need() -> None:
    services = compose()["services"]
    assert services["allocator"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for name in ("watcher", "allocator", "applier", "agent-node-1", "agent-node-2"):
        assert "topics" in services[name]["depends_on"]
        assert "healthcheck" in services[name]


def test_the_audit_api_serves_what_its_healthcheck_and_port_reach() -> None:
    service = compose()["services"]["audit-api"]
    command = parse(service["command"])
    assert command.name == "audit-api"
    context = command.make_context("audit-api", list(service["command"][1:]))
    assert (context.params["host"], context.params["port"]) == ("0.0.0.0", 8080)
    assert any(str(context.params["port"]) in check for check in service["healthcheck"]["test"])
    assert service["ports"] == [f"127.0.0.1:8088:{context.params['port']}"]
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # The development token's digest, behind a variable to give one's own.
    value = service["environment"]["KNM_AUDIT_TOKEN_HASHES"]
    default = value.removeprefix("${KNM_AUDIT_TOKEN_HASHES:-").removesuffix("}")
    assert Settings(audit_token_hashes=default).audit_token_hashes == [
        hashlib.sha256(b"knm-dev-token").hexdigest()
    ]
