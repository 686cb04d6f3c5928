"""A pod's or a service's history, by name: across UIDs, since the first one."""

from __future__ import annotations

from sqlalchemy import Connection

from knm.core.domain.model import AddressKind
from services.audit.models import PodHistory, ServiceHistory
from services.audit.queries.holdings import history, in_order, lines, pair


def pod_history(connection: Connection, *, namespace: str, name: str, limit: int) -> PodHistory:
    """Every address and floating IP pods of this name held (a seek on (namespace, name,
    at)); a service of the same name has lines there too, of its own kind."""
    statement = in_order(
        lines().where(
            history.c.namespace == namespace,
            history.c.name == name,
            history.c.kind.in_([AddressKind.POD.value, AddressKind.FLOATING.value]),
        )
    )
    found = pair(connection.execute(statement))
    return PodHistory(
        namespace=namespace, name=name, holdings=found[:limit], truncated=len(found) > limit
    )


def service_history(
    connection: Connection, *, namespace: str, name: str, limit: int
) -> ServiceHistory:
    """The service's VIPs (a seek on (namespace, name, at)), then who carried each VIP as
    its backend (a seek per VIP on (ip, at)).

    Backends are recorded through the floating IPs they carry: a service without a VIP
    (headless, or waiting for one) has none to show.
    """
    vips = pair(
        connection.execute(
            in_order(
                lines().where(
                    history.c.namespace == namespace,
                    history.c.name == name,
                    history.c.kind == AddressKind.SERVICE.value,
                )
            )
        )
    )
    addresses = sorted({str(vip.ip) for vip in vips})
    backends = (
        pair(
            connection.execute(
                in_order(
                    lines().where(
                        history.c.ip.in_(addresses),
                        history.c.kind == AddressKind.FLOATING.value,
                        history.c.service == f"{namespace}/{name}",
                    )
                )
            )
        )
        if addresses
        else []
    )
    return ServiceHistory(
        namespace=namespace,
        name=name,
        vips=vips[:limit],
        backends=backends[:limit],
        truncated=len(vips) > limit or len(backends) > limit,
    )
