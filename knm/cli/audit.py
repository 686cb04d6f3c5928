"""`knm audit-api`, `knm who-had`, `knm history`: the allocation history, served over
HTTP or read from the command line through the same queries."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, TypeVar

import typer
import uvicorn
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
from knm.core.store.database import require_current_schema
from knm.runtime.process import stop_on_signals
from services.audit.app import create_app, openapi_text
from services.audit.database import read_only_engine
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
from services.audit.readers import reader_for

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
    engine = read_only_engine(config.database_url, pool_size=16)
    reader = reader_for(engine, size=16)
    try:
        app = create_app(engine=engine, settings=config, reader=reader, access_log=access_log)
        if print_openapi:
            sys.stdout.write(openapi_text(app))
            return
        if not config.audit_token_hashes:
            raise BadInputError(
                "KNM_AUDIT_TOKEN_HASHES is empty, so no request could be served: set it to "
                'the SHA-256 of each token, e.g. `printf %s "$TOKEN" | sha256sum`'
            )
        try:
            require_current_schema(engine)
        except OperationalError as error:
            # Not fatal: /readyz says 503 until the database answers.
            log.warning("database unreachable at start", extra={"error": type(error).__name__})
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                server_header=False,
                lifespan="off",
            )
        )
        # uvicorn stops gracefully on SIGTERM, then hands the signal on to the handler it
        # found: with this one, the process ends as knm's services do, with exit code 0.
        stop_on_signals()
        server.run()
    finally:
        reader.close()
        engine.dispose()


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
    if output is OutputFormat.JSON:
        print(found.model_dump_json(indent=2))
        return
    _print_holdings(f"Holders of {address}", found.holdings, truncated=found.truncated)


@history_app.command("pod")
@reported
def history_pod(
    pod: Annotated[str, typer.Argument(help="NAMESPACE/NAME", show_default=False)],
    *,
    output: FormatOption = OutputFormat.TABLE,
    database_url: DatabaseOption = None,
) -> None:
    """Every address and floating IP pods of this name held, across their UIDs."""
    namespace, name = _given(lambda text: split_object(text, what="pod"), pod)
    _given(lambda text: check_subdomain(text, what="pod name"), name)
    with _reading(database_url) as connection:
        found = pod_history(connection, namespace=namespace, name=name, limit=CLI_LIMIT)
    if output is OutputFormat.JSON:
        print(found.model_dump_json(indent=2))
        return
    _print_holdings(f"Addresses of pod {pod}", found.holdings, truncated=found.truncated)


@history_app.command("service")
@reported
def history_service(
    service: Annotated[str, typer.Argument(help="NAMESPACE/NAME", show_default=False)],
    *,
    output: FormatOption = OutputFormat.TABLE,
    database_url: DatabaseOption = None,
) -> None:
    """A service's VIPs over time, and which pods carried them as its backends."""
    namespace, name = _given(lambda text: split_object(text, what="service"), service)
    _given(lambda text: check_label(text, what="service name"), name)
    with _reading(database_url) as connection:
        found = service_history(connection, namespace=namespace, name=name, limit=CLI_LIMIT)
    if output is OutputFormat.JSON:
        print(found.model_dump_json(indent=2))
        return
    _print_holdings(f"VIPs of service {service}", found.vips, truncated=found.truncated)
    _print_holdings(f"Backends of service {service}", found.backends, truncated=False)


def _when(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else "-"


def _holder_table(holder: Holder) -> Table:
    table = Table(title=f"{holder.ip} at {_when(holder.at)}", title_justify="left")
    for column in ("kind", "holder", "uid", "node", "network", "since", "fact"):
        table.add_column(column)
    table.add_row(
        holder.kind.value,
        f"{holder.namespace}/{holder.name}",
        holder.uid,
        holder.node or "-",
        holder.network or "-",
        _when(holder.allocated_at),
        holder.allocation_fact_id,
    )
    return table


def _print_holdings(title: str, holdings: Sequence[Holding], *, truncated: bool) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("address", "kind", "holder", "uid", "node", "from", "until"):
        table.add_column(column)
    for holding in holdings:
        holder = f"{holding.namespace}/{holding.name}"
        if holding.service:
            holder += f"\n(backend of {holding.service})"
        table.add_row(
            str(holding.ip),
            holding.kind.value,
            holder,
            holding.uid,
            holding.node or "-",
            _when(holding.allocated_at),
            _when(holding.released_at) if holding.released_at else "(held)",
        )
    if not holdings:
        table.caption = "no history"
    elif truncated:
        table.caption = f"the first {len(holdings)}; the API pages through the rest"
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("audit-api")(audit_api)
    app.command("who-had")(who_had)
    app.add_typer(history_app, name="history")
