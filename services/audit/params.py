"""The parameters of the routes: their documented shape and the check that gives a bad
value its one-line 422 message (the OpenAPI patterns admit exactly what the checks do)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from ipaddress import IPv4Address
from typing import Annotated, Any, TypeVar

from fastapi import Path, Query
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from knm.core.domain.model import AddressAction, AddressKind, NetworkKind
from services.audit import cursor
from services.audit.parsing import (
    LABEL_MAX,
    LABEL_PATTERN,
    NETWORK_MAX,
    NETWORK_PATTERN,
    SEGMENT_PATTERN,
    SUBDOMAIN_MAX,
    SUBDOMAIN_PATTERN,
    TIME_EXAMPLE,
    InvalidValueError,
    check_label,
    check_network,
    check_segment,
    check_subdomain,
    parse_ip,
    parse_time,
)

T = TypeVar("T")

LIMIT_MAX = 1000
HISTORY_LIMIT_MAX = 10_000
HISTORY_LIMIT_DEFAULT = 1000


def checked(parse: Callable[[str], T]) -> BeforeValidator:
    def run(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse(value)
        except InvalidValueError as error:
            # The message goes in as context: a brace in the caller's value stays a brace.
            raise PydanticCustomError("invalid_value", "{reason}", {"reason": str(error)}) from None

    return BeforeValidator(run)


def _label(what: str) -> Callable[[str], str]:
    return lambda text: check_label(text, what=what)


def _subdomain(what: str) -> Callable[[str], str]:
    return lambda text: check_subdomain(text, what=what)


def _cursor(text: str) -> str:
    cursor.decode(text)
    return text


_TIME = f"An RFC 3339 time with a UTC offset, e.g. {TIME_EXAMPLE}."

Ip = Annotated[
    IPv4Address,
    Path(description="An IPv4 address, e.g. 10.0.3.7.", examples=["10.0.3.7"]),
    checked(parse_ip),
]
At = Annotated[datetime, Query(description=_TIME, examples=[TIME_EXAMPLE]), checked(parse_time)]
Since = Annotated[
    datetime | None,
    Query(alias="from", description=f"Start of the window (included). {_TIME}"),
    checked(parse_time),
]
Until = Annotated[
    datetime | None,
    Query(alias="to", description=f"End of the window (included). {_TIME}"),
    checked(parse_time),
]
ChangesSince = Annotated[
    datetime | None,
    Query(description=f"Lines at or after this time. {_TIME}"),
    checked(parse_time),
]
ChangesUntil = Annotated[
    datetime | None,
    Query(description=f"Lines at or before this time. {_TIME}"),
    checked(parse_time),
]
Namespace = Annotated[
    str,
    Path(pattern=LABEL_PATTERN, max_length=LABEL_MAX, description="A namespace."),
    checked(_label("namespace")),
]
NamespaceFilter = Annotated[
    str | None,
    Query(pattern=LABEL_PATTERN, max_length=LABEL_MAX, description="Only this namespace."),
    checked(_label("namespace")),
]
PodName = Annotated[
    str,
    Path(pattern=SUBDOMAIN_PATTERN, max_length=SUBDOMAIN_MAX, description="A pod's name."),
    checked(_subdomain("pod name")),
]
ServiceName = Annotated[
    str,
    Path(pattern=LABEL_PATTERN, max_length=LABEL_MAX, description="A service's name."),
    checked(_label("service name")),
]
NetworkName = Annotated[
    str,
    Path(
        pattern=SEGMENT_PATTERN,
        max_length=SUBDOMAIN_MAX,
        description="The network's name after its namespace: a collection, or `service-<service>`.",
    ),
    checked(check_segment),
]
NetworkFilter = Annotated[
    str | None,
    Query(
        pattern=NETWORK_PATTERN,
        max_length=NETWORK_MAX,
        description="Only this network, `<namespace>/<collection>` or "
        "`<namespace>/service-<service>`.",
    ),
    checked(check_network),
]
NodeFilter = Annotated[
    str | None,
    Query(pattern=SUBDOMAIN_PATTERN, max_length=SUBDOMAIN_MAX, description="Only this node."),
    checked(_subdomain("node name")),
]
KindFilter = Annotated[AddressKind | None, Query(description="Only this kind of address.")]
ActionFilter = Annotated[AddressAction | None, Query(description="Only allocations or releases.")]
NetworkKindFilter = Annotated[NetworkKind | None, Query(description="Only this kind of network.")]
Cursor = Annotated[
    str | None,
    Query(
        pattern=cursor.PATTERN,
        description="The `next_cursor` of the previous page, unchanged; none for the first.",
    ),
    checked(_cursor),
]
Limit = Annotated[
    int, Query(ge=1, le=LIMIT_MAX, description=f"Lines per page, at most {LIMIT_MAX}.")
]
HistoryLimit = Annotated[
    int,
    Query(
        ge=1, le=HISTORY_LIMIT_MAX, description=f"Holdings returned, at most {HISTORY_LIMIT_MAX}."
    ),
]
