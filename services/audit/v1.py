"""The /v1 routes: the history and the current model, each behind a bearer token."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Response, status
from pydantic_core import to_json
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool

from knm.core.clock import Clock
from knm.core.settings import Settings
from services.audit import params
from services.audit.auth import UNAUTHORIZED, Guard, Tokens
from services.audit.database import reading
from services.audit.models import (
    AddressHistory,
    ChangePage,
    Holder,
    NetworkDetail,
    Networks,
    PodHistory,
    Pools,
    Problem,
    ServiceHistory,
)
from services.audit.queries.addresses import (
    ADDRESS_LINES,
    HOLDER_AT,
    address_history_fields,
    holder_fields,
    nobody_held,
)
from services.audit.queries.changes import ChangeFilter, changes
from services.audit.queries.networks import list_networks, network_detail
from services.audit.queries.objects import POD_LINES, pod_history_fields, service_history
from services.audit.queries.pools import pool_usage
from services.audit.readers import Reader
from services.audit.strict import DeclaredQueries

T = TypeVar("T")

UNAVAILABLE = "the database is unavailable; try again"

COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Problem,
        "description": UNAUTHORIZED,
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    503: {"model": Problem, "description": UNAVAILABLE},
}


class Answered(Response):
    """An answer's fields (a dict in the order of its model's fields, values as the
    database gave them) serialized by pydantic straight to JSON: the same bytes the model
    would give (tests/services/audit/test_shortcut.py holds them to it), without building
    one. The route's `response_model` still documents it."""

    media_type = "application/json"

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__(to_json(fields))


def register(
    app: FastAPI,
    *,
    engine: Engine,
    reader: Reader,
    tokens: Tokens,
    settings: Settings,
    clock: Clock,
) -> None:
    """Routes go straight onto the application (no included router), so that `app.routes`
    lists each of them with its full path.

    The route functions are coroutines. The busiest questions are one prepared statement
    each, read through `reader` (on PostgreSQL without a thread, see readers.py); the
    others hand their database work to the thread pool (`read`): a query waiting on the
    database holds a thread, not the event loop, and the rest of a request (checking,
    serializing) costs no further thread switch. shortcut.py answers the busiest three's
    well-formed requests before they reach these routes.
    """
    required = [Depends(Guard(tokens, DeclaredQueries(app)))]

    def get(path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        responses = {**COMMON_RESPONSES, **options.pop("responses", {})}
        return app.get(f"/v1{path}", dependencies=required, responses=responses, **options)

    def connected(query: Callable[[Connection], T], consistent: bool) -> T:
        with reading(engine, consistent=consistent) as connection:
            return query(connection)

    async def read(query: Callable[[Connection], T], *, consistent: bool = False) -> T:
        """`consistent` for answers made of several statements: one snapshot for all."""
        return await run_in_threadpool(connected, query, consistent)

    @get(
        "/ips/{ip}/holder",
        response_model=Holder,
        responses={404: {"model": Problem, "description": "Nobody held the address then."}},
        summary="Who held an address at an instant",
    )
    async def holder(*, ip: params.Ip, at: params.At) -> Answered:
        """The pod or service that held the address at `at` (allocated at or before it,
        not released by then); 404 if the address was free."""
        address = str(ip)
        found = holder_fields(await reader.rows(HOLDER_AT, ip=address, at=at), ip=address, at=at)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, nobody_held(ip=address, at=at))
        return Answered(found)

    @get("/ips/{ip}/history", response_model=AddressHistory, summary="Every holder of an address")
    async def ip_history(
        *,
        ip: params.Ip,
        since: params.Since = None,
        until: params.Until = None,
        limit: params.HistoryLimit = params.HISTORY_LIMIT_DEFAULT,
    ) -> Answered:
        """Every pod or service that held the address, and every pod that carried it as a
        floating IP, whose tenure overlaps [from, to], oldest first, with the ids of the
        facts that caused each allocation and release. An empty window (from after to)
        has none."""
        address = str(ip)
        found = await reader.rows(ADDRESS_LINES, ip=address)
        return Answered(
            address_history_fields(found, ip=address, since=since, until=until, limit=limit)
        )

    @get(
        "/pods/{namespace}/{name}/history",
        response_model=PodHistory,
        summary="Every address a pod name held",
    )
    async def pod(
        *,
        namespace: params.Namespace,
        name: params.PodName,
        limit: params.HistoryLimit = params.HISTORY_LIMIT_DEFAULT,
    ) -> Answered:
        """Every address and floating IP that pods of this name held, across their UIDs
        (a pod deleted and created again keeps its name, not its UID), oldest first."""
        found = await reader.rows(POD_LINES, namespace=namespace, name=name)
        return Answered(pod_history_fields(found, namespace=namespace, name=name, limit=limit))

    @get(
        "/services/{namespace}/{name}/history",
        response_model=ServiceHistory,
        summary="A service's VIPs and backends over time",
    )
    async def service(
        *,
        namespace: params.Namespace,
        name: params.ServiceName,
        limit: params.HistoryLimit = params.HISTORY_LIMIT_DEFAULT,
    ) -> ServiceHistory:
        """The service's VIPs, and its backend membership: each pod's tenure of the VIP as
        a floating IP."""
        return await read(
            lambda connection: service_history(
                connection, namespace=namespace, name=name, limit=limit
            ),
            consistent=True,
        )

    @get("/networks", response_model=Networks, summary="The current networks")
    async def networks(
        *, namespace: params.NamespaceFilter = None, kind: params.NetworkKindFilter = None
    ) -> Networks:
        """Every network now: one per collection, one per service with a VIP, with how
        many members and policies each has."""
        found = await read(
            lambda connection: list_networks(connection, namespace=namespace, kind=kind),
            consistent=True,
        )
        return Networks(items=found)

    @get(
        "/networks/{namespace}/{name}",
        response_model=NetworkDetail,
        responses={404: {"model": Problem, "description": "No such network now."}},
        summary="A network's members and policies",
    )
    async def network(
        *,
        namespace: params.Namespace,
        name: params.NetworkName,
        kind: params.NetworkKindFilter = None,
    ) -> NetworkDetail:
        """The network `<namespace>/<name>` now: its pods (a pod network) or its service
        and backends (a service network), what it may reach and who may reach it."""
        found = await read(
            lambda connection: network_detail(
                connection, namespace=namespace, name=name, kind=kind
            ),
            consistent=True,
        )
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no network {namespace}/{name}")
        return found

    @get("/allocations", response_model=ChangePage, summary="The change log")
    async def allocations(
        *,
        namespace: params.NamespaceFilter = None,
        network: params.NetworkFilter = None,
        node: params.NodeFilter = None,
        kind: params.KindFilter = None,
        action: params.ActionFilter = None,
        since: params.ChangesSince = None,
        until: params.ChangesUntil = None,
        cursor: params.Cursor = None,
        limit: params.Limit = 100,
    ) -> ChangePage:
        """Allocations and releases in the order they were written, a page at a time.
        Follow `next_cursor`: pages neither skip nor repeat a line, however much is
        written meanwhile; at the end, the same cursor later returns what came since."""
        matching = ChangeFilter(
            namespace=namespace,
            network=network,
            node=node,
            kind=kind,
            action=action,
            since=since,
            until=until,
        )
        return await read(
            lambda connection: changes(connection, matching=matching, after=cursor, limit=limit)
        )

    @get("/pools", response_model=Pools, summary="Pool capacity and usage")
    async def pools() -> Pools:
        """Capacity, used, quarantined and free addresses per pool and per node block."""
        now = clock()
        return await read(
            lambda connection: pool_usage(
                connection,
                pod_pools=settings.pod_pools,
                service_pools=settings.service_pools,
                public_pools=settings.public_pools,
                block_prefix=settings.block_prefix,
                now=now,
            ),
            consistent=True,
        )
