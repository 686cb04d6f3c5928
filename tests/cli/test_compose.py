"""compose.yaml cannot drift from knm: every command parses, every variable is read."""

from __future__ import annotations

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
    assert {"db", "topics", "watcher", "allocator", "applier", "agent"} <= commands


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
