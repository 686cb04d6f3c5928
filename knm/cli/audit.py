"""`knm audit-api`, `knm who-had`, `knm history`: the allocation history, served over
HTTP or read from the command line through the same queries."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from functools import partial
from typing import Annotated, NoReturn, TypeVar

import typer
import uvicorn
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from knm.cli.common import (
    BadInputError,
    DatabaseOption,
    FormatOption,
    OutputFormat,
    reported,
    settings,
)
from knm.core import logs
from knm.core.settings import Settings
from knm.core.store.database import require_current_schema
from knm.runtime.process import stop_on_signals
from services.audit.access_log import lean_access_log
from services.audit.app import create_app, openapi_text
from services.audit.database import read_only_engine
from services.audit.gathered import GatheringProtocol
from services.audit.models import Holder, Holding
from services.audit.parsing import (
    TIME_EXAMPLE,
    InvalidValueError,
    check_label,
    check_subdomain,
    parse_ip,
    parse_time,
    split_object,
)
from services.audit.queries.addresses import address_history, holder_at
from services.audit.queries.objects import pod_history, service_history
from services.audit.readers import BATCH, reader_for
from services.audit.spread import Seat, Seats, SpreadServer

log = logging.getLogger("knm.audit")
T = TypeVar("T")

# Enough for one person's question; the API pages through more.
CLI_LIMIT = 10_000

history_app = typer.Typer(help="The address history of a pod or a service.", no_args_is_help=True)


def _given(parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except InvalidValueError as error:
        raise BadInputError(str(error)) from None


@reported
def audit_api(
    *,
    host: Annotated[
        str, typer.Option("--host", envvar="KNM_AUDIT_HOST", help="Address to serve on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", envvar="KNM_AUDIT_PORT", help="Port to serve on.")
    ] = 8080,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            envvar="KNM_AUDIT_WORKERS",
            min=1,
            help="Processes serving the port, each with its own connections; more than one "
            "uses more cores, but each has its own request metrics.",
        ),
    ] = 1,
    connections: Annotated[
        int,
        typer.Option(
            "--connections",
            envvar="KNM_AUDIT_CONNECTIONS",
            min=1,
            help="Database connections per worker for the busiest routes; requests beyond "
            "them queue, and queued questions of one kind go to the database together "
            "(a few connections busy with many questions each: the fewest round trips).",
        ),
    ] = 3,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            envvar="KNM_AUDIT_BATCH",
            min=1,
            help="Most queued requests asked in one query (1: each request its own query).",
        ),
    ] = BATCH,
    database_url: DatabaseOption = None,
    access_log: Annotated[
        bool, typer.Option(help="Log each request (path, status, token's digest prefix).")
    ] = True,
    print_openapi: Annotated[
        bool, typer.Option("--print-openapi", help="Print the OpenAPI document and exit.")
    ] = False,
) -> None:
    """Serve the audit API (who held an address, when) over the allocator's database,
    read-only; every /v1 route needs a token whose SHA-256 is in KNM_AUDIT_TOKEN_HASHES."""
    config = settings(database_url=database_url)
    logs.configure(level=config.log_level, format=config.log_format)
    if config.log_format == "json":
        lean_access_log()
    if print_openapi:
        engine = read_only_engine(config.database_url)
        sys.stdout.write(openapi_text(create_app(engine=engine, settings=config)))
        engine.dispose()
        return
    if not config.audit_token_hashes:
        raise BadInputError(
            "KNM_AUDIT_TOKEN_HASHES is empty, so no request could be served: set it to "
            'the SHA-256 of each token, e.g. `printf %s "$TOKEN" | sha256sum`'
        )
    serve = partial(
        _serve,
        config,
        host=host,
        port=port,
        access_log=access_log,
        connections=connections,
        batch=batch,
    )
    if workers == 1:
        serve(None)
        return
    # One listening socket, bound here (a port in use fails before any fork), which every
    # worker accepts on: a connection goes to whichever worker takes it first.
    sock = _listening(host, port)
    try:
        code = _supervise(serve, sock, workers)
    finally:
        sock.close()
    if code != 0:
        raise typer.Exit(1)


def _serve(
    config: Settings,
    seat: Seat | None,
    *,
    host: str,
    port: int,
    access_log: bool,
    connections: int,
    batch: int,
) -> None:
    engine = read_only_engine(config.database_url, pool_size=16)
    reader = reader_for(engine, size=connections, batch=batch)
    try:
        app = create_app(engine=engine, settings=config, reader=reader, access_log=access_log)
        try:
            require_current_schema(engine)
        except OperationalError as error:
            # Not fatal: /readyz says 503 until the database answers.
            log.warning("database unreachable at start", extra={"error": type(error).__name__})
        settings = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="off",
            # httptools, with each response's status line, headers and body in one
            # send (services/audit/gathered.py).
            http=GatheringProtocol,
        )
        # With several workers, each accepts its share of the connections (spread.py).
        server = uvicorn.Server(settings) if seat is None else SpreadServer(settings, seat=seat)
        # What is built by now (the modules, the application) lives as long as the
        # process: kept out of the collector's full passes, which would otherwise walk
        # all of it and stall the requests in flight.
        gc.freeze()
        # uvicorn stops gracefully on SIGTERM, then hands the signal on to the handler it
        # found: with this one, the process ends as knm's services do, with exit code 0.
        stop_on_signals()
        server.run()
    finally:
        reader.close()
        engine.dispose()


def _listening(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise BadInputError(f"cannot serve on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    return sock


def _supervise(serve: Callable[[Seat], None], sock: socket.socket, workers: int) -> int:
    """`workers` child processes serving `sock`, each building its own application and
    connections after the fork. SIGTERM and SIGINT are passed on to them; if one ends on
    its own, the others are stopped too (the orchestrator restarts the whole). 0 when all
    ended well."""
    children: list[int] = []
    stopping = False
    seats = Seats(workers)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        _signal(children, signum)

    # Held until the parent's handlers are in place; a child starts with the defaults.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for index in range(workers):
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                _worker(serve, Seat(sock, seats, index))
            children.append(pid)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    worst = 0
    while children:
        pid, status = os.wait()
        children.remove(pid)
        worst = max(worst, abs(os.waitstatus_to_exitcode(status)))
        if not stopping:
            log.error("an audit API worker ended; stopping the others", extra={"pid": pid})
            stopping = True
            _signal(children, signal.SIGTERM)
    return worst


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _worker(serve: Callable[[Seat], None], seat: Seat) -> NoReturn:
    code = 1
    try:
        serve(seat)
        code = 0
    except BaseException:
        log.exception("audit API worker failed")
    finally:
        logging.shutdown()
        os._exit(code)


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)


@contextmanager
def _reading(database_url: str | None) -> Iterator[Connection]:
    engine = read_only_engine(settings(database_url=database_url).database_url, pool_size=1)
    try:
        require_current_schema(engine)
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


@reported
def who_had(
    ip: Annotated[str, typer.Argument(help="An IPv4 address.", show_default=False)],
    *,
    at: Annotated[
        str | None,
        typer.Option("--at", help=f"An RFC 3339 time ({TIME_EXAMPLE}); default: every holder."),
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
    database_url: DatabaseOption = None,
) -> None:
    """Who held an address at an instant, or everyone who ever held or carried it."""
    address = _given(parse_ip, ip)
    instant = _given(parse_time, at) if at is not None else None
    with _reading(database_url) as connection:
        if instant is not None:
            holder = holder_at(connection, ip=address, at=instant)
            if output is OutputFormat.JSON:
                print(holder.model_dump_json(indent=2) if holder else "null")
            elif holder is None:
                Console().print(f"nobody held {address} at {_when(instant)}")
            else:
                Console().print(_holder_table(holder))
            return
        found = address_history(connection, ip=address, since=None, until=None, limit=CLI_LIMIT)
    _show(found, output, [(f"Holders of {address}", found.holdings, found.truncated)])


@history_app.command("pod")
@reported
def history_pod(
    pod: Annotated[str, typer.Argument(help="NAMESPACE/NAME", show_default=False)],
    *,
    output: FormatOption = OutputFormat.TABLE,
    database_url: DatabaseOption = None,
) -> None:
    """Every address and floating IP pods of this name held, across their UIDs."""
    namespace, name = _object(pod, what="pod", check=check_subdomain)
    with _reading(database_url) as connection:
        found = pod_history(connection, namespace=namespace, name=name, limit=CLI_LIMIT)
    _show(found, output, [(f"Addresses of pod {pod}", found.holdings, found.truncated)])


@history_app.command("service")
@reported
def history_service(
    service: Annotated[str, typer.Argument(help="NAMESPACE/NAME", show_default=False)],
    *,
    output: FormatOption = OutputFormat.TABLE,
    database_url: DatabaseOption = None,
) -> None:
    """A service's VIPs over time, and which pods carried them as its backends."""
    namespace, name = _object(service, what="service", check=check_label)
    with _reading(database_url) as connection:
        found = service_history(connection, namespace=namespace, name=name, limit=CLI_LIMIT)
    _show(
        found,
        output,
        [
            (f"VIPs of service {service}", found.vips, found.truncated),
            (f"Backends of service {service}", found.backends, False),
        ],
    )


def _object(text: str, *, what: str, check: Callable[..., str]) -> tuple[str, str]:
    """NAMESPACE/NAME of a pod or a service, each part checked."""
    namespace, name = _given(lambda given: split_object(given, what=what), text)
    _given(lambda given: check(given, what=f"{what} name"), name)
    return namespace, name


def _show(
    found: BaseModel, output: OutputFormat, tables: Sequence[tuple[str, Sequence[Holding], bool]]
) -> None:
    """An answer as JSON, or as a table per list of holdings (title, holdings, truncated)."""
    if output is OutputFormat.JSON:
        print(found.model_dump_json(indent=2))
        return
    for title, holdings, truncated in tables:
        _print_holdings(title, holdings, truncated=truncated)


def _when(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else "-"


def _table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *, caption: str | None
) -> Table:
    table = Table(title=title, title_justify="left", caption=caption)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def _holder_table(holder: Holder) -> Table:
    row = (
        holder.kind.value,
        f"{holder.namespace}/{holder.name}",
        holder.uid,
        holder.node or "-",
        holder.network or "-",
        _when(holder.allocated_at),
        holder.allocation_fact_id,
    )
    return _table(
        f"{holder.ip} at {_when(holder.at)}",
        ("kind", "holder", "uid", "node", "network", "since", "fact"),
        [row],
        caption=None,
    )


def _holding_row(holding: Holding) -> tuple[str, ...]:
    holder = f"{holding.namespace}/{holding.name}"
    if holding.service:
        holder += f"\n(backend of {holding.service})"
    return (
        str(holding.ip),
        holding.kind.value,
        holder,
        holding.uid,
        holding.node or "-",
        _when(holding.allocated_at),
        _when(holding.released_at) if holding.released_at else "(held)",
    )


def _print_holdings(title: str, holdings: Sequence[Holding], *, truncated: bool) -> None:
    caption = None
    if not holdings:
        caption = "no history"
    elif truncated:
        caption = f"the first {len(holdings)}; the API pages through the rest"
    Console().print(
        _table(
            title,
            ("address", "kind", "holder", "uid", "node", "from", "until"),
            map(_holding_row, holdings),
            caption=caption,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("audit-api")(audit_api)
    app.command("who-had")(who_had)
    app.add_typer(history_app, name="history")
