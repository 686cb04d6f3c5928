"""Every /v1 endpoint over the history the real pipeline wrote (timeline.py), including
the instants just before and at each allocation boundary."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from knm.core.store.database import create_engine
from knm.core.store.schema import AddressHistoryRow, table
from tests.services.audit.timeline import T0, Timeline, at

TICK = timedelta(microseconds=1)
Span = tuple[str, str, float, float | None]  # (name, uid, allocated, released) in seconds


@pytest.fixture(scope="module")
def lines(timeline: Timeline) -> list[Any]:
    """The history table as written, read without the API."""
    engine = create_engine(timeline.database_url)
    history = table(AddressHistoryRow)
    with engine.connect() as connection:
        found = list(connection.execute(select(history).order_by(history.c.seq)))
    engine.dispose()
    return found


def address(lines: list[Any], *, kind: str, uid: str) -> str:
    (ip,) = {row.ip for row in lines if row.kind == kind and row.uid == uid}
    return str(ip)


def holder(client: TestClient, ip: str, instant: datetime) -> tuple[str, str] | None:
    response = client.get(f"/v1/ips/{ip}/holder", params={"at": instant.isoformat()})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ip"] == ip
    assert datetime.fromisoformat(body["at"]) == instant
    return body["name"], body["uid"]


def spans(holdings: list[dict[str, Any]]) -> list[Span]:
    def seconds(value: str | None) -> float | None:
        if value is None:
            return None
        return (datetime.fromisoformat(value) - T0).total_seconds()

    found = []
    for holding in holdings:
        assert holding["allocation_fact_id"], holding
        assert (holding["released_at"] is None) == (holding["release_fact_id"] is None)
        allocated = seconds(holding["allocated_at"])
        assert allocated is not None
        found.append((holding["name"], holding["uid"], allocated, seconds(holding["released_at"])))
    return found


def test_the_scenario_happened(lines: list[Any]) -> None:
    """What the other tests rely on: an address reused after quarantine, not before."""
    reused = address(lines, kind="pod", uid="web-2")
    assert address(lines, kind="pod", uid="api-1") == reused
    assert address(lines, kind="pod", uid="web-3") != reused
    assert address(lines, kind="pod", uid="db-2") != address(lines, kind="pod", uid="db-1")


def test_holder_just_before_and_at_every_boundary(client: TestClient, lines: list[Any]) -> None:
    reused = address(lines, kind="pod", uid="web-2")
    db_first = address(lines, kind="pod", uid="db-1")
    db_second = address(lines, kind="pod", uid="db-2")
    web_1 = address(lines, kind="pod", uid="web-1")
    web_vip = address(lines, kind="service", uid="svc-web")
    admin_vip = address(lines, kind="service", uid="svc-db-admin")
    admin_public = address(lines, kind="public", uid="svc-db-admin")
    assert admin_public == "10.1.0.1"
    expected: list[tuple[str, datetime, tuple[str, str] | None]] = [
        (reused, T0 - TICK, None),
        (reused, T0, ("web-2", "web-2")),
        (reused, at(10) - TICK, ("web-2", "web-2")),
        (reused, at(10), None),
        (reused, at(100) - TICK, None),
        (reused, at(100), ("api-1", "api-1")),
        (reused, at(10_000), ("api-1", "api-1")),
        (db_first, at(30) - TICK, ("db", "db-1")),
        (db_first, at(30), None),
        (db_second, at(30) - TICK, None),
        (db_second, at(30), ("db", "db-2")),
        (web_1, at(120) - TICK, ("web-1", "web-1")),
        (web_1, at(120), None),
        # The VIP's holder is the service, whatever its backends did (floating lines).
        (web_vip, T0 - TICK, None),
        (web_vip, T0, ("web", "svc-web")),
        (web_vip, at(110), ("web", "svc-web")),
        (admin_vip, at(120) - TICK, ("db-admin", "svc-db-admin")),
        (admin_vip, at(120), None),
        # A LoadBalancer's public address: held by the service from its first fact on.
        (admin_public, T0 - TICK, None),
        (admin_public, T0, ("db-admin", "svc-db-admin")),
        (admin_public, at(120) - TICK, ("db-admin", "svc-db-admin")),
        (admin_public, at(120), None),
        ("10.0.0.200", at(50), None),
    ]
    for ip, instant, who in expected:
        assert holder(client, ip, instant) == who, (ip, instant)


def test_holder_answers_in_utc_whatever_offset_was_asked(
    client: TestClient, lines: list[Any]
) -> None:
    ip = address(lines, kind="pod", uid="api-1")
    response = client.get(f"/v1/ips/{ip}/holder", params={"at": "2026-11-27T12:01:40+02:00"})
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "pod"
    assert body["node"] == "node-1"
    assert body["network"] == "shop/api"
    assert datetime.fromisoformat(body["allocated_at"]) == at(100)
    assert datetime.fromisoformat(body["at"]) == at(100)
    missing = client.get(f"/v1/ips/{ip}/holder", params={"at": (at(100) - TICK).isoformat()})
    assert missing.status_code == 404
    assert ip in missing.json()["detail"]


def test_address_history_in_windows(client: TestClient, lines: list[Any]) -> None:
    reused = address(lines, kind="pod", uid="web-2")

    def window(**params: datetime) -> list[Span]:
        query = {key: value.isoformat() for key, value in params.items()}
        response = client.get(f"/v1/ips/{reused}/history", params=query)
        assert response.status_code == 200, response.text
        assert response.json()["truncated"] is False
        return spans(response.json()["holdings"])

    both = [("web-2", "web-2", 0.0, 10.0), ("api-1", "api-1", 100.0, None)]
    assert window() == both
    assert window(**{"from": at(10) - TICK}) == both
    assert window(**{"from": at(10)}) == both[1:]
    assert window(to=at(100) - TICK) == both[:1]
    assert window(to=at(100)) == both
    assert window(**{"from": at(10), "to": at(100) - TICK}) == []
    assert window(**{"from": at(50), "to": at(5)}) == []


def test_a_vip_history_has_its_service_and_the_pods_that_carried_it(
    client: TestClient, lines: list[Any]
) -> None:
    vip = address(lines, kind="service", uid="svc-web")
    body = client.get(f"/v1/ips/{vip}/history").json()
    assert spans(body["holdings"]) == [
        ("web", "svc-web", 0.0, None),
        ("web-1", "web-1", 0.0, 120.0),
        ("web-2", "web-2", 0.0, 10.0),
        ("web-3", "web-3", 20.0, 110.0),
    ]
    kinds = [holding["kind"] for holding in body["holdings"]]
    assert kinds == ["service", "floating", "floating", "floating"]
    assert {h["service"] for h in body["holdings"][1:]} == {"shop/web"}
    page = client.get(f"/v1/ips/{vip}/history", params={"limit": 2}).json()
    assert page["truncated"] is True
    assert spans(page["holdings"]) == spans(body["holdings"])[:2]


def test_pod_history_spans_its_uids_and_skips_a_service_of_the_same_name(
    client: TestClient, lines: list[Any]
) -> None:
    body = client.get("/v1/pods/shop/db/history").json()
    assert (body["namespace"], body["name"], body["truncated"]) == ("shop", "db", False)
    held = [
        (h["kind"], h["ip"], *span)
        for h, span in zip(body["holdings"], spans(body["holdings"]), strict=True)
    ]
    db_vip = address(lines, kind="service", uid="svc-db")
    admin_vip = address(lines, kind="service", uid="svc-db-admin")
    first = address(lines, kind="pod", uid="db-1")
    second = address(lines, kind="pod", uid="db-2")
    assert held == [
        ("pod", first, "db", "db-1", 0.0, 30.0),
        ("floating", db_vip, "db", "db-1", 0.0, 30.0),
        ("floating", admin_vip, "db", "db-1", 0.0, 30.0),
        ("pod", second, "db", "db-2", 30.0, None),
        ("floating", db_vip, "db", "db-2", 30.0, None),
        ("floating", admin_vip, "db", "db-2", 30.0, 120.0),
    ]
    gone = client.get("/v1/pods/shop/web-2/history").json()
    assert [
        (h["kind"], *s) for h, s in zip(gone["holdings"], spans(gone["holdings"]), strict=True)
    ] == [
        ("pod", "web-2", "web-2", 0.0, 10.0),
        ("floating", "web-2", "web-2", 0.0, 10.0),
    ]
    assert client.get("/v1/pods/shop/never/history").json()["holdings"] == []


def test_service_history_has_its_vips_and_backends_over_time(client: TestClient) -> None:
    web = client.get("/v1/services/shop/web/history").json()
    assert spans(web["vips"]) == [("web", "svc-web", 0.0, None)]
    assert spans(web["backends"]) == [
        ("web-1", "web-1", 0.0, 120.0),
        ("web-2", "web-2", 0.0, 10.0),
        ("web-3", "web-3", 20.0, 110.0),
    ]
    admin = client.get("/v1/services/shop/db-admin/history").json()
    # Its VIP, and its public address (a LoadBalancer).
    assert [
        (h["kind"], *span) for h, span in zip(admin["vips"], spans(admin["vips"]), strict=True)
    ] == [
        ("service", "db-admin", "svc-db-admin", 0.0, 120.0),
        ("public", "db-admin", "svc-db-admin", 0.0, 120.0),
    ]
    assert spans(admin["backends"]) == [("db", "db-1", 0.0, 30.0), ("db", "db-2", 30.0, 120.0)]
    none = client.get("/v1/services/shop/never/history").json()
    assert (none["vips"], none["backends"], none["truncated"]) == ([], [], False)


def test_networks_now(client: TestClient, lines: list[Any]) -> None:
    listed = client.get("/v1/networks").json()["items"]
    summary = {
        (n["name"], n["kind"]): (n["subject"], n["members"], n["policies_from"], n["policies_to"])
        for n in listed
    }
    assert summary == {
        ("shop/api", "pod"): ("api", 1, 0, 0),
        ("shop/db", "pod"): ("db", 1, 0, 0),
        ("shop/service-db", "service"): ("db", 2, 0, 1),
        ("shop/service-web", "service"): ("web", 1, 0, 0),
        ("shop/web", "pod"): ("web", 1, 1, 0),
    }
    assert [n["name"] for n in listed] == sorted(n["name"] for n in listed)
    only = client.get("/v1/networks", params={"kind": "service", "namespace": "shop"}).json()
    assert {n["name"] for n in only["items"]} == {"shop/service-db", "shop/service-web"}
    assert client.get("/v1/networks", params={"namespace": "other"}).json() == {"items": []}

    web = client.get("/v1/networks/shop/web").json()
    assert [(m["kind"], m["name"], m["ip"]) for m in web["members"]] == [
        ("pod", "web-3", address(lines, kind="pod", uid="web-3"))
    ]
    assert web["policies_to"] == []
    (policy,) = web["policies_from"]
    assert (policy["from_network"], policy["to_network"], policy["service"]) == (
        "shop/web",
        "shop/service-db",
        "shop/db",
    )
    assert policy["ports"] == [{"port": 5432, "protocol": "TCP"}]

    db = client.get("/v1/networks/shop/service-db").json()
    assert db["kind"] == "service"
    assert [(m["kind"], m["name"], m["ip"]) for m in db["members"]] == [
        ("service", "db", address(lines, kind="service", uid="svc-db")),
        ("backend", "db", address(lines, kind="pod", uid="db-2")),
    ]
    assert [p["from_network"] for p in db["policies_to"]] == ["shop/web"]
    assert client.get("/v1/networks/shop/service-db", params={"kind": "pod"}).status_code == 404
    assert client.get("/v1/networks/shop/nothing").status_code == 404


def test_the_change_log_pages_through_every_line_once(client: TestClient, lines: list[Any]) -> None:
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/v1/allocations", params=params).json()
        pages += 1
        seen += [item["seq"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == [row.seq for row in lines]
    assert pages == -(-len(lines) // 5)
    end = client.get("/v1/allocations", params={"cursor": cursor}).json()
    assert end == {"items": [], "next_cursor": cursor, "has_more": False}
    first = client.get("/v1/allocations", params={"limit": 1}).json()["items"][0]
    row = lines[0]
    assert first == {
        "seq": row.seq,
        "at": row.at.isoformat().replace("+00:00", "Z"),
        "action": row.action,
        "kind": row.kind,
        "ip": row.ip,
        "pool": row.pool,
        "namespace": row.namespace,
        "name": row.name,
        "uid": row.uid,
        "network": row.network,
        "node": row.node,
        "service": row.service,
        "fact_id": row.fact_id,
    }


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ({"kind": "service"}, lambda r: r.kind == "service"),
        (
            {"kind": "pod", "action": "released"},
            lambda r: r.kind == "pod" and r.action == "released",
        ),
        ({"since": at(100).isoformat()}, lambda r: r.at >= at(100)),
        ({"until": T0.isoformat()}, lambda r: r.at <= T0),
        (
            {"since": at(10).isoformat(), "until": at(30).isoformat()},
            lambda r: at(10) <= r.at <= at(30),
        ),
        ({"node": "node-1"}, lambda r: r.node == "node-1"),
        ({"network": "shop/db"}, lambda r: r.network == "shop/db"),
        ({"namespace": "shop"}, lambda r: True),
        ({"namespace": "other"}, lambda r: False),
        ({"since": at(50).isoformat(), "until": at(5).isoformat()}, lambda r: False),
    ],
)
def test_the_change_log_filters(
    client: TestClient, lines: list[Any], query: dict[str, str], wanted: Any
) -> None:
    page = client.get("/v1/allocations", params={**query, "limit": 1000}).json()
    assert [item["seq"] for item in page["items"]] == [row.seq for row in lines if wanted(row)]
    assert page["has_more"] is False


def test_pools_count_used_quarantined_and_free(client: TestClient) -> None:
    body = client.get("/v1/pools").json()
    pools = {p["pool"]: p for p in body["pools"]}
    # At T0+130 s: web-1's address (released at T0+120 s) and db-admin's VIP are in
    # quarantine; web-2's and db-1's came out of it at T0+70 s and T0+90 s.
    assert pools["10.0.0.0/16"] == {
        "pool": "10.0.0.0/16",
        "kind": "pod",
        "capacity": 65534,
        "used": 3,
        "quarantined": 1,
        "free": 65530,
        "blocks_total": 1024,
        "blocks_claimed": 1,
    }
    assert pools["10.254.0.0/16"] == {
        "pool": "10.254.0.0/16",
        "kind": "service",
        "capacity": 65534,
        "used": 2,
        "quarantined": 1,
        "free": 65531,
        "blocks_total": None,
        "blocks_claimed": None,
    }
    # db-admin's public address too (a LoadBalancer, deleted at T0+120 s).
    assert pools["10.1.0.0/16"] == {
        "pool": "10.1.0.0/16",
        "kind": "public",
        "capacity": 65534,
        "used": 0,
        "quarantined": 1,
        "free": 65533,
        "blocks_total": None,
        "blocks_claimed": None,
    }
    assert body["blocks"] == [
        {
            "cidr": "10.0.0.0/26",
            "pool": "10.0.0.0/16",
            "node": "node-1",
            "capacity": 63,
            "used": 3,
            "quarantined": 1,
            "free": 59,
        }
    ]
    assert datetime.fromisoformat(body["at"]) == at(130)
