"""The `knm` command."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from importlib.resources import files
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from knm.cli.render import model_tables, node_table, print_tables
from knm.core import logs
from knm.core.settings import Settings
from knm.core.store.database import create_engine, upgrade
from knm.runtime.embedded import EmbeddedRun, run_embedded
from services.watcher.errors import BadManifestError

app = typer.Typer(
    name="knm",
    help="knm: a virtual network per tier, unique pod addresses, VIPs without kube-proxy, "
    "policy from labels.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

P = ParamSpec("P")
R = TypeVar("R")

BAD_INPUT = 2
FAILURE = 1


class BadInputError(Exception):
    """The user's input cannot be honoured: one line, exit code 2."""


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def _fail(code: int, message: str) -> typer.Exit:
    print(f"knm: {message}", file=sys.stderr)
    return typer.Exit(code)


def reported(command: Callable[P, R]) -> Callable[P, R]:
    """One line on stderr instead of a traceback; 2 for bad input, 1 for our failures."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except (BadManifestError, BadInputError) as error:
            raise _fail(BAD_INPUT, str(error).splitlines()[0]) from None
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise _fail(BAD_INPUT, f"invalid setting {where}: {first['msg']}") from None
        except Exception as error:
            raise _fail(FAILURE, f"{type(error).__name__}: {error}".splitlines()[0]) from None

    return wrapper


def _settings() -> Settings:
    return Settings()


def _embedded(paths: list[Path], *, nodes: int, db: Path | None, verbose: bool) -> EmbeddedRun:
    logs.configure(level="INFO" if verbose else "ERROR", format="human")
    settings = _settings()
    if nodes < 1:
        raise BadInputError(f"--nodes must be at least 1, not {nodes}")
    if db is not None:
        return run_embedded(
            paths=paths, nodes=nodes, settings=settings, database_url=f"sqlite:///{db}"
        )
    with tempfile.TemporaryDirectory(prefix="knm-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'knm.db'}"
        return run_embedded(paths=paths, nodes=nodes, settings=settings, database_url=url)


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


NodesOption = Annotated[
    int, typer.Option("--nodes", "-n", help="Simulated nodes to place pods on.")
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table or json.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log what the services do.")]


@app.command()
@reported
def demo(
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


@app.command()
@reported
def plan(
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


@db_app.command("upgrade")
@reported
def db_upgrade(
    database_url: Annotated[str | None, typer.Option(help="Default: KNM_DATABASE_URL.")] = None,
) -> None:
    """Apply the migrations: bring the database's schema to this knm's."""
    url = database_url or _settings().database_url
    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    print(f"database {engine.url.render_as_string(hide_password=True)} is at the current schema")


@app.command()
def version() -> None:
    """Print knm's version."""
    from knm import __version__

    print(__version__)


def run() -> None:
    app()
