"""A pod's or a service's history, by name: across UIDs, since the first one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, bindparam, text

from knm.core.domain.model import AddressKind
from services.audit.models import PodHistory, ServiceHistory
from services.audit.queries.holdings import history, in_order, pair, tenure_lines, tenures
from services.audit.queries.prepared import prepared, rows


def _named(*kinds: AddressKind) -> Select[Any]:
    """Lines of this name, of these kinds: a seek on (namespace, name, at). The kinds are
    constants of the statement, not parameters: the plan is made knowing them."""
    listed = ", ".join(f"'{kind.value}'" for kind in kinds)
    return in_order(
        tenure_lines().where(
            history.c.namespace == bindparam("namespace"),
            history.c.name == bindparam("name"),
            text(f"kind IN ({listed})"),
        )
    )


POD_LINES = prepared("pod_lines", _named(AddressKind.POD, AddressKind.FLOATING))
# A LoadBalancer service's public address is one of its addresses too.
VIP_LINES = prepared("vip_lines", _named(AddressKind.SERVICE, AddressKind.PUBLIC))


def pod_history(connection: Connection, *, namespace: str, name: str, limit: int) -> PodHistory:
    found = rows(connection, POD_LINES, namespace=namespace, name=name)
    return PodHistory.model_validate(
        pod_history_fields(found, namespace=namespace, name=name, limit=limit)
    )


def pod_history_fields(
    lines: Sequence[Sequence[Any]], *, namespace: str, name: str, limit: int
) -> dict[str, Any]:
    """`PodHistory`'s fields from POD_LINES: every address and floating IP pods of this
    name held; a service of the same name has lines there too, of its own kind."""
    found = tenures(lines)
    return {
        "namespace": namespace,
        "name": name,
        "holdings": found[:limit],
        "truncated": len(found) > limit,
    }


def service_history(
    connection: Connection, *, namespace: str, name: str, limit: int
) -> ServiceHistory:
    """The service's VIPs (a seek on (namespace, name, at)), then who carried each VIP as
    its backend (a seek per VIP on (ip, at)).

    Backends are recorded through the floating IPs they carry: a service without a VIP
    (headless, or waiting for one) has none to show.
    """
    vips = pair(rows(connection, VIP_LINES, namespace=namespace, name=name))
    addresses = sorted({str(vip.ip) for vip in vips})
    backends = (
        pair(
            connection.execute(
                in_order(
                    tenure_lines().where(
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
