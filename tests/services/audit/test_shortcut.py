"""The shortcut (services/audit/shortcut.py) answers the busiest routes' well-formed
requests itself, byte for byte as FastAPI's routes do, and hands every other request on.
The answers' fields serialize to the bytes their models would."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import to_json
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from knm.core.store.database import create_engine
from knm.core.store.schema import AddressHistoryRow, table
from services.audit.auth import Tokens
from services.audit.database import read_only_engine, reading
from services.audit.models import AddressHistory, Holder, PodHistory
from services.audit.queries.addresses import (
    ADDRESS_LINES,
    HOLDER_AT,
    address_history_fields,
    holder_fields,
)
from services.audit.queries.objects import POD_LINES, pod_history_fields
from services.audit.queries.prepared import rows
from services.audit.readers import reader_for
from services.audit.shortcut import DeclinedError, Shortcut, _query
from tests.services.audit.conftest import AUTH, TOKEN, TOKEN_HASH
from tests.services.audit.timeline import T0, Timeline, at

TICK = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def known(timeline: Timeline) -> tuple[list[str], list[str]]:
    """The addresses and the pod names the history holds."""
    engine = create_engine(timeline.database_url)
    history = table(AddressHistoryRow)
    with engine.connect() as connection:
        found = list(connection.execute(select(history.c.ip, history.c.kind, history.c.name)))
    engine.dispose()
    addresses = sorted({row.ip for row in found})
    pods = sorted({row.name for row in found if row.kind in ("pod", "floating")})
    return addresses, pods


def answered(known: tuple[list[str], list[str]]) -> list[tuple[str, dict[str, str]]]:
    """Requests the shortcut takes: every address at instants around every step, every
    address's history in several windows, every pod name's history (and some unknown)."""
    addresses, pods = known
    instants = [T0 - TICK, *(at(s) + d for s in range(0, 131, 10) for d in (-TICK, 0 * TICK))]
    found: list[tuple[str, dict[str, str]]] = []
    for ip in [*addresses, "10.9.9.9"]:
        found += [(f"/v1/ips/{ip}/holder", {"at": i.isoformat()}) for i in instants]
        found.append((f"/v1/ips/{ip}/history", {}))
        found.append((f"/v1/ips/{ip}/history", {"from": at(15).isoformat(), "limit": "1"}))
        found.append((f"/v1/ips/{ip}/history", {"to": at(5).isoformat()}))
        found.append(
            (f"/v1/ips/{ip}/history", {"from": at(25).isoformat(), "to": at(105).isoformat()})
        )
    for name in [*pods, "nobody"]:
        found.append((f"/v1/pods/shop/{name}/history", {}))
        found.append((f"/v1/pods/shop/{name}/history", {"limit": "1"}))
    return found


class Spy:
    """Stands for FastAPI's application behind the shortcut: says what reached it."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def spied(timeline: Timeline, routes_app: FastAPI) -> Iterator[tuple[TestClient, Spy]]:
    engine = read_only_engine(timeline.database_url)
    reader = reader_for(engine)
    spy = Spy()
    shortcut = Shortcut(
        spy, fastapi=routes_app, reader=reader, tokens=Tokens([TOKEN_HASH]), unavailable="-"
    )
    # Without `with`: no lifespan events, which the spy does not take.
    yield TestClient(shortcut), spy
    reader.close()
    engine.dispose()


def test_the_shortcut_answers_as_the_routes_do(
    app: FastAPI, routes_app: FastAPI, known: tuple[list[str], list[str]]
) -> None:
    requests = answered(known)
    statuses = set()
    with (
        TestClient(app, headers=AUTH) as short,
        TestClient(routes_app, headers=AUTH) as routes,
    ):
        for path, params in requests:
            mine, theirs = short.get(path, params=params), routes.get(path, params=params)
            assert (mine.status_code, mine.content) == (theirs.status_code, theirs.content), path
            assert mine.headers["content-type"] == theirs.headers["content-type"]
            assert mine.headers["content-length"] == theirs.headers["content-length"]
            statuses.add(mine.status_code)
    assert statuses == {200, 404}


def test_it_answers_those_requests_itself(
    spied: tuple[TestClient, Spy], known: tuple[list[str], list[str]]
) -> None:
    client, spy = spied
    for path, params in answered(known)[:50]:
        assert client.get(path, params=params, headers=AUTH).status_code in (200, 404)
    assert spy.reached == []


DECLINED: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
    ("GET", "/v1/ips/10.0.0.2/holder", {"at": "2026-11-27T10:00:00Z"}, {}),
    ("GET", "/v1/ips/10.0.0.2/holder", {"at": "2026-11-27T10:00:00Z"}, {"Authorization": TOKEN}),
    (
        "GET",
        "/v1/ips/10.0.0.2/holder",
        {"at": "2026-11-27T10:00:00Z"},
        {"Authorization": f"Basic {TOKEN}"},
    ),
    (
        "GET",
        "/v1/ips/10.0.0.2/holder",
        {"at": "2026-11-27T10:00:00Z"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ),
    ("GET", "/v1/ips/10.0.0.2/holder", {"at": "yesterday"}, AUTH),
    ("GET", "/v1/ips/10.0.0.2/holder", {}, AUTH),
    ("GET", "/v1/ips/10.0.0.2/holder", {"at": "2026-11-27T10:00:00Z", "x": "1"}, AUTH),
    ("GET", "/v1/ips/10.0.0.256/holder", {"at": "2026-11-27T10:00:00Z"}, AUTH),
    ("GET", "/v1/ips/10.0.0.2/holder/", {"at": "2026-11-27T10:00:00Z"}, AUTH),
    ("POST", "/v1/ips/10.0.0.2/holder", {"at": "2026-11-27T10:00:00Z"}, AUTH),
    ("GET", "/v1/ips/10.0.0.2/history", {"form": "2026-11-27T10:00:00Z"}, AUTH),
    ("GET", "/v1/ips/10.0.0.2/history", {"limit": "010"}, AUTH),
    ("GET", "/v1/ips/10.0.0.2/history", {"limit": "0"}, AUTH),
    ("GET", "/v1/ips/10.0.0.2/history", {"limit": "10001"}, AUTH),
    ("GET", "/v1/ips/10.0.0.2/history", {"limit": "+5"}, AUTH),
    ("GET", "/v1/pods/Shop/web-1/history", {}, AUTH),
    ("GET", "/v1/pods/shop/web_1/history", {}, AUTH),
    ("GET", "/v1/pods/shop/web-1/history", {"from": "2026-11-27T10:00:00Z"}, AUTH),
    ("GET", "/v1/services/shop/web/history", {}, AUTH),
    ("GET", "/v1/pools", {}, AUTH),
]


@pytest.mark.parametrize(("method", "path", "params", "headers"), DECLINED)
def test_every_other_request_goes_on_to_fastapi(
    spied: tuple[TestClient, Spy],
    method: str,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    client, spy = spied
    assert client.request(method, path, params=params, headers=headers).status_code == 299
    assert spy.reached == [path]


def test_a_repeated_parameter_goes_on_to_fastapi(spied: tuple[TestClient, Spy]) -> None:
    client, spy = spied
    query = "at=2026-11-27T10%3A00%3A00Z&at=2026-11-27T10%3A00%3A01Z"
    assert client.get(f"/v1/ips/10.0.0.2/holder?{query}", headers=AUTH).status_code == 299
    assert spy.reached == ["/v1/ips/10.0.0.2/holder"]


def test_the_answers_fields_serialize_as_their_models(
    timeline: Timeline, known: tuple[list[str], list[str]]
) -> None:
    """What lets the routes skip building models: the same JSON, byte for byte."""
    addresses, pods = known
    engine = read_only_engine(timeline.database_url)
    checked: dict[str, int] = {"holder": 0, "address": 0, "pod": 0}

    def same(model: Any, fields: dict[str, Any]) -> None:
        assert model.model_validate(fields).model_dump_json().encode() == to_json(fields)

    with reading(engine) as connection:
        for ip in addresses:
            for seconds in range(0, 131, 5):
                found = holder_fields(
                    rows(connection, HOLDER_AT, ip=ip, at=at(seconds)), ip=ip, at=at(seconds)
                )
                if found is not None:
                    same(Holder, found)
                    checked["holder"] += 1
            lines = rows(connection, ADDRESS_LINES, ip=ip)
            for since, until in ((None, None), (at(15), None), (None, at(5)), (at(25), at(105))):
                fields = address_history_fields(lines, ip=ip, since=since, until=until, limit=2)
                same(AddressHistory, fields)
                checked["address"] += 1
        for name in pods:
            lines = rows(connection, POD_LINES, namespace="shop", name=name)
            same(PodHistory, pod_history_fields(lines, namespace="shop", name=name, limit=10))
            checked["pod"] += 1
    engine.dispose()
    assert min(checked.values()) >= 5, checked


@given(st.text(alphabet=st.sampled_from("ab=&+%20é;"), max_size=12))
def test_the_query_string_is_read_as_starlette_reads_it(text: str) -> None:
    raw = text.encode("utf-8")
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    if len(dict(pairs)) != len(pairs):
        with pytest.raises(DeclinedError):
            _query(raw)
    else:
        assert _query(raw) == dict(pairs)
