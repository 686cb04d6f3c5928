"""`knm dev services up|down|status|env`: PostgreSQL, Kafka and a Kubernetes control plane
on loopback for development; `knm dev cluster ...` drives the control plane alone.

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

# "tools" installs the dataplane's kernel tools and cnitool; nothing of it runs. "cluster"
# is etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built from
# their Go modules the first time (many minutes), then cached.
SERVICES = ("postgres", "kafka", "tools", "cluster")


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
        list[str] | None,
        typer.Option("--only", help="postgres, kafka, tools or cluster (default all)."),
    ] = None,
) -> None:
    """Install if missing, start, stop or show knm's development PostgreSQL, Kafka and
    Kubernetes control plane (and install the dataplane's tools)."""
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


@dev_app.command("cluster")
def cluster(
    action: Annotated[Action, typer.Argument(help="up, down, status, env or restart.")],
) -> None:
    """A Kubernetes control plane on loopback (etcd, kube-apiserver, controller manager,
    scheduler, kwok's simulated nodes); `up` and `env` print the kubeconfig's path as
    `export KNM_KUBECONFIG=...`."""
    result = subprocess.run(["bash", str(script("cluster")), action.value], check=False)
    if result.returncode != 0 and action is not Action.STATUS:
        raise fail(FAILURE, f"`cluster {action.value}` failed; see the lines above")
    if action in (Action.UP, Action.RESTART):
        subprocess.run(["bash", str(script("cluster")), "env"], check=False)
    if result.returncode != 0:
        raise typer.Exit(result.returncode)


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")
