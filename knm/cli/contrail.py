"""`knm contrail sync` converges a Contrail controller to manifests; `knm contrail
test-server` and `knm contrail vrouter-test-server` serve the test servers knm is tested
against, for trying knm without a Contrail installation."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from knm.cli.common import BadInputError, reported, settings
from knm.core import logs

app = typer.Typer(
    name="contrail",
    help="Contrail / Tungsten Fabric: converge a controller, or serve the test servers.",
    no_args_is_help=True,
)


@app.command()
@reported
def sync(
    *,
    files: Annotated[
        list[Path], typer.Option("--file", "-f", help="A manifest file or folder (repeatable).")
    ],
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Simulated nodes.")] = 2,
    url: Annotated[
        str | None,
        typer.Option(help="The VNC config API (default KNM_CONTRAIL_API_URL, :8082)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the calls it would make; write nothing.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what it does.")] = False,
) -> None:
    """Run the pipeline over manifests and converge a Contrail controller to it, then exit."""
    from knm.runtime.contrail import sync as run_sync

    logs.configure(level="INFO" if verbose else "WARNING", format="human")
    if nodes < 1:
        raise BadInputError(f"--nodes must be at least 1, not {nodes}")
    result = run_sync(files, nodes=nodes, settings=settings(), url=url, dry_run=dry_run)
    if result.problems:
        first = result.problems[0]
        raise BadInputError(f"{first.subject}: {first.message}")
    report = result.report
    if dry_run:
        for write in report.writes:
            print(write)
    for type_name, fq in report.foreign:
        print(f"knm: left alone (not knm's): {type_name} {':'.join(fq)}", file=sys.stderr)
    for type_name, fq in report.refused_deletes:
        print(f"knm: delete refused (still used): {type_name} {':'.join(fq)}", file=sys.stderr)
    verb = "would make" if dry_run else "made"
    print(
        f"{result.pods} pods, {result.services} services: {report.listed} objects listed, "
        f"{verb} {len(report.writes)} writes"
    )


@app.command("test-server")
@reported
def serve_vnc_test_server(
    *,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (Contrail's API server uses 8082).")] = 8082,
    fail_rate: Annotated[
        float, typer.Option(help="Share of calls to fail (5xx or dropped connection).")
    ] = 0.0,
) -> None:
    """Serve the VNC config API test server (in memory; not a Contrail controller)."""
    from knm.testing.vnc_server import VncTestServer

    server = VncTestServer(host=host, port=port, fail_rate=fail_rate)
    print(f"VNC test server on {server.url} (a test server, in memory)", flush=True)
    _run(server.serve_forever, server.close)


@app.command("vrouter-test-server")
@reported
def serve_vrouter_test_server(
    *,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (the vrouter agent uses 9091).")] = 9091,
) -> None:
    """Serve the vrouter agent port API test server (in memory; not a vrouter)."""
    from knm.testing.vrouter_server import VrouterTestServer

    server = VrouterTestServer(host=host, port=port)
    print(f"vrouter port API test server on {server.url} (a test server)", flush=True)
    _run(server.serve_forever, server.close)


def _run(serve: Callable[[], None], close: Callable[[], None]) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    stop.wait()
    close()


def register(root: typer.Typer) -> None:
    root.add_typer(app)
