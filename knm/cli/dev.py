"""`knm dev services up|down|status|env`: PostgreSQL and Kafka on loopback for development.

Backed by the idempotent scripts in knm/dev/ (install from the registries if missing,
initialise once, start what is not running). `up` and `env` print the `export KNM_...`
lines that point knm at them: `eval "$(knm dev services up)"`.
"""

from __future__ import annotations

import subprocess
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from knm.cli.common import FAILURE, fail

dev_app = typer.Typer(help="Development helpers.", no_args_is_help=True)

# "tools" installs the dataplane's kernel tools and cnitool; nothing of it runs.
SERVICES = ("postgres", "kafka", "tools")


class Action(StrEnum):
    UP = "up"
    DOWN = "down"
    STATUS = "status"
    ENV = "env"
    RESTART = "restart"


def script(name: str) -> Path:
    return Path(str(files("knm") / "dev" / f"{name}.sh"))


@dev_app.command("services")
def services(
    action: Annotated[Action, typer.Argument(help="up, down, status, env or restart.")],
    only: Annotated[
        list[str] | None, typer.Option("--only", help="postgres, kafka or tools (default all).")
    ] = None,
) -> None:
    """Install if missing, start, stop or show knm's development PostgreSQL and Kafka
    (and install the dataplane's tools)."""
    chosen = only or list(SERVICES)
    for name in chosen:
        if name not in SERVICES:
            raise fail(2, f"unknown service {name!r}: choose from {', '.join(SERVICES)}")
    failed = False
    for name in chosen:
        result = subprocess.run(["bash", str(script(name)), action.value], check=False)
        failed |= result.returncode != 0 and action is not Action.STATUS
    if action in (Action.UP, Action.RESTART):
        for name in chosen:
            subprocess.run(["bash", str(script(name)), "env"], check=False)
    if failed:
        raise fail(FAILURE, f"`{action.value}` failed; see the lines above")


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")
