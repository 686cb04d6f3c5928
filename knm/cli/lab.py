"""`knm lab up|down|status|probe|matrix`: a multi-node lab on this machine, real packets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from knm.cli.common import FAILURE, BadInputError, FormatOption, OutputFormat, fail, reported
from knm.core import logs
from knm.core.settings import Settings
from knm.lab import backing, record
from knm.lab.daemon import LabDaemon, teardown
from knm.lab.matrix import run_matrix
from knm.lab.probe import probe as probe_once
from knm.lab.topology import Layout, existing, remove_namespaces
from knm.runtime.process import stop_on_signals

lab_app = typer.Typer(
    help="A multi-node lab on this machine, with real packets.", no_args_is_help=True
)

NameOption = Annotated[
    str, typer.Option("--name", envvar="KNM_LAB_NAME", help="The lab's name (a prefix).")
]
UP_TIMEOUT = 240.0


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _loaded(name: str) -> record.LabRecord:
    found = record.load(name)
    if found is None or not _alive(found.daemon_pid):
        raise BadInputError(f"no lab {name!r} is running: `knm lab up -f PATH` first")
    return found


@lab_app.command("up")
@reported
def up(
    *,
    files: Annotated[
        list[Path], typer.Option("--file", "-f", help="Manifests (files or folders).")
    ],
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Nodes (namespaces).")] = 3,
    name: NameOption = "knm-lab",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the lab.")] = UP_TIMEOUT,
) -> None:
    """Nodes as namespaces on an underlay bridge, the pipeline running, every pod wired."""
    if os.geteuid() != 0:
        raise BadInputError("the lab makes network namespaces: run it as root")
    if nodes < 1:
        raise BadInputError(f"--nodes must be at least 1, not {nodes}")
    for path in files:
        if not path.exists():
            raise BadInputError(f"{path}: no such file or folder")
    current = record.load(name)
    if current is not None and _alive(current.daemon_pid):
        raise BadInputError(f"lab {name!r} is already up: `knm lab down` first")
    server_url, kafka = backing.servers()
    directory = record.lab_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    record.path(name).unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "knm", "lab", "run", "--name", name, "--nodes", str(nodes),
        "--database-server", server_url, "--kafka-bootstrap", kafka,
        *(arg for path in files for arg in ("-f", str(path.resolve()))),
    ]  # fmt: skip
    log_path = directory / "daemon.log"
    with log_path.open("ab") as output:
        daemon = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    console = Console(stderr=True)
    deadline = time.monotonic() + timeout
    with console.status(f"bringing lab {name} up"):
        while True:
            found = record.load(name)
            if found is not None and found.ready:
                break
            if daemon.poll() is not None:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                raise fail(FAILURE, f"the lab's daemon exited ({daemon.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                problems = "; ".join(
                    f"{k}: {v}" for k, v in (found.problems if found else {}).items()
                )
                raise fail(FAILURE, f"lab {name} not ready after {timeout:.0f} s {problems}")
            time.sleep(0.3)
    print(
        f"lab {name} is up: {len(found.nodes)} nodes, {len(found.pods)} pods, "
        f"{len(found.services)} services (logs in {directory})"
    )


@lab_app.command("run", hidden=True)
@reported
def run(
    *,
    files: Annotated[list[Path], typer.Option("--file", "-f")],
    nodes: Annotated[int, typer.Option("--nodes")],
    name: NameOption = "knm-lab",
    database_server: Annotated[str, typer.Option("--database-server")],
    kafka_bootstrap: Annotated[str, typer.Option("--kafka-bootstrap")],
) -> None:
    """The lab's daemon (what `knm lab up` starts in the background)."""
    logs.configure(level="INFO", format="json")
    stop = stop_on_signals()
    daemon = LabDaemon(
        name=name,
        manifests=files,
        nodes=nodes,
        server_url=database_server,
        kafka_bootstrap=kafka_bootstrap,
        settings=Settings(),
    )
    try:
        daemon.up()
        daemon.run(stop)
    finally:
        daemon.down()
        record.path(name).unlink(missing_ok=True)


@lab_app.command("down")
@reported
def down(
    *,
    name: NameOption = "knm-lab",
    keep_logs: Annotated[
        bool, typer.Option("--keep-logs", help="Leave the lab's process logs behind.")
    ] = False,
) -> None:
    """Remove everything the lab made, and nothing else."""
    found = record.load(name)
    if found is not None and _alive(found.daemon_pid):
        assert found.daemon_pid is not None
        os.kill(found.daemon_pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while _alive(found.daemon_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(found.daemon_pid):
            os.kill(found.daemon_pid, signal.SIGKILL)
    left = record.load(name)
    if left is not None:
        # The daemon died before cleaning up: do it from its record.
        for pid in left.processes.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        teardown(left)
        record.path(name).unlink(missing_ok=True)
    # Namespaces are named for their lab: any left by an earlier crash go too.
    layout = Layout(name)
    remove_namespaces(sorted(ns for ns in existing() if layout.owns(ns)))
    directory = record.lab_dir(name)
    if keep_logs and directory.exists():
        print(f"lab {name} is down (logs kept in {directory})")
        return
    shutil.rmtree(directory, ignore_errors=True)
    print(f"lab {name} is down")


@lab_app.command("status")
@reported
def status(*, name: NameOption = "knm-lab", output: FormatOption = OutputFormat.TABLE) -> None:
    """The lab's nodes, processes and pods."""
    found = _loaded(name)
    if output is OutputFormat.JSON:
        print(found.model_dump_json(indent=2))
        return
    console = Console()
    table = Table("pod", "node", "ip", "network", "ports", title=f"lab {name}")
    for pod in found.pods:
        table.add_row(pod.key, pod.node, pod.ip, pod.network, ",".join(map(str, pod.ports)))
    console.print(table)
    console.print(f"ready: {found.ready}; processes: {found.processes}")


def _endpoint(value: str) -> tuple[str, int]:
    address, _, port = value.rpartition(":")
    if not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInputError(f"--to {value!r}: expected IP:PORT")
    return address, int(port)


@lab_app.command("probe")
@reported
def probe(
    *,
    source: Annotated[str, typer.Option("--from", help="NS/POD to connect from.")],
    to: Annotated[str, typer.Option("--to", help="IP:PORT to connect to.")],
    name: NameOption = "knm-lab",
    timeout: Annotated[float, typer.Option(help="Seconds before giving up.")] = 1.0,
) -> None:
    """One connection from a pod: prints who answered, or refused / timed out."""
    found = _loaded(name)
    ip, port = _endpoint(to)
    pods = {pod.key: pod for pod in found.pods}
    if source not in pods:
        raise BadInputError(f"--from {source!r}: no such pod in the lab (knm lab status)")
    result = probe_once(netns=pods[source].netns, ip=ip, port=port, timeout=timeout)
    if result.connected:
        print(f"{source} -> {ip}:{port}: answered by {result.answered_by}")
        return
    print(f"{source} -> {ip}:{port}: {result.outcome}")
    raise typer.Exit(FAILURE)


@lab_app.command("matrix")
@reported
def matrix(*, name: NameOption = "knm-lab", output: FormatOption = OutputFormat.TABLE) -> None:
    """Every pod to every pod's ports and every VIP's ports: observed beside expected."""
    found = _loaded(name)
    results = run_matrix(found)
    mismatches = [r for r in results if r["expected"] != r["observed"]]
    if output is OutputFormat.JSON:
        print(json.dumps({"probes": results}, indent=2))
    else:
        table = Table("from", "to", "target", "expected", "observed", "answered by")
        for r in results:
            style = "red" if r["expected"] != r["observed"] else None
            table.add_row(
                r["from"], r["to"], r["target"], _word(r["expected"]), _word(r["observed"]),
                r["answered_by"] or "-", style=style,
            )  # fmt: skip
        console = Console()
        console.print(table)
        console.print(f"{len(results)} probes, {len(mismatches)} not as expected")
    if mismatches:
        raise typer.Exit(FAILURE)


def _word(allowed: bool) -> str:
    return "allowed" if allowed else "denied"


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")
