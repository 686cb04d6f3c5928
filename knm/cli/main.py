"""The `knm` command: the embedded pipeline (`demo`, `plan`) and the parts that make up
the distributed one (`watcher`, `allocator`, `applier`, `agent`, `db`, `topics`,
`state`, `dev`)."""

from __future__ import annotations

import json
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from knm.cli import admin, audit, contrail, dev, lab, services
from knm.cli.common import BadInputError, FormatOption, OutputFormat, reported, settings
from knm.cli.render import model_tables, node_table, print_tables
from knm.core import logs
from knm.runtime.embedded import EmbeddedRun, run_embedded

NodesOption = Annotated[
    int, typer.Option("--nodes", "-n", help="Simulated nodes to place pods on.")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log what the services do.")]


def _embedded(paths: list[Path], *, nodes: int, db: Path | None, verbose: bool) -> EmbeddedRun:
    logs.configure(level="INFO" if verbose else "ERROR", format="human")
    config = settings()
    if nodes < 1:
        raise BadInputError(f"--nodes must be at least 1, not {nodes}")
    if db is not None:
        return run_embedded(
            paths=paths, nodes=nodes, settings=config, database_url=f"sqlite:///{db}"
        )
    with tempfile.TemporaryDirectory(prefix="knm-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'knm.db'}"
        return run_embedded(paths=paths, nodes=nodes, settings=config, database_url=url)


def _report(run: EmbeddedRun, *, output: OutputFormat, title: str | None) -> None:
    if run.problems:
        first = run.problems[0]
        more = f" (and {len(run.problems) - 1} more)" if len(run.problems) > 1 else ""
        raise BadInputError(f"{first.subject}: {first.message}{more}")
    if output is OutputFormat.JSON:
        print(json.dumps(run.document, indent=2))
        return
    console = Console()
    if title:
        console.print(title)
        console.print()
    print_tables(console, [*model_tables(run.document), node_table(run.nodes)])
    console.print(
        f"{run.facts} facts, {len(run.document['pods'])} pods, "
        f"{len(run.document['services'])} services in {run.seconds:.2f} s"
    )


@reported
def demo(
    *,
    nodes: NodesOption = 2,
    output: FormatOption = OutputFormat.TABLE,
    db: Annotated[
        Path | None, typer.Option(help="Keep the SQLite database here (default: throw away).")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Run the whole pipeline in one process over the bundled K8PetStore example."""
    example = Path(str(files("knm") / "examples" / "k8petstore"))
    run = _embedded([example], nodes=nodes, db=db, verbose=verbose)
    _report(
        run,
        output=output,
        title="K8PetStore, the seed's example: loadgen uses frontend uses redis-master; "
        "redis-slave uses redis-master.",
    )


@reported
def plan(
    *,
    files_: Annotated[
        list[Path],
        typer.Option("--file", "-f", help="A manifest file or folder (repeatable)."),
    ],
    nodes: NodesOption = 2,
    output: FormatOption = OutputFormat.TABLE,
    verbose: VerboseOption = False,
) -> None:
    """Show the networks, addresses, VIPs and policies knm gives these manifests."""
    run = _embedded(files_, nodes=nodes, db=None, verbose=verbose)
    _report(run, output=output, title=None)


def version() -> None:
    """Print knm's version."""
    from knm import __version__

    print(__version__)


def build() -> typer.Typer:
    app = typer.Typer(
        name="knm",
        help="knm: a virtual network per tier, unique pod addresses, VIPs without "
        "kube-proxy, policy from labels.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for command in (demo, plan, version):
        app.command()(command)
    admin.register(app)
    dev.register(app)
    services.register(app)
    lab.register(app)
    audit.register(app)
    contrail.register(app)
    return app


def run() -> None:
    build()()
