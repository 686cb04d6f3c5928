"""Malformed addresses, times, names and cursors get 422 and a message that says what is
wrong; page sizes are capped."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

CASES = [
    ("/v1/ips/10.0.0.256/holder", {"at": "2026-11-27T10:00:00Z"}, "is not an IPv4 address"),
    ("/v1/ips/abc/history", {}, "'abc' is not an IPv4 address"),
    ("/v1/ips/10.0.0.1.5/history", {}, "is not an IPv4 address"),
    ("/v1/ips/fe80::1/history", {}, "is not an IPv4 address"),
    ("/v1/ips/10.0.0.1/holder", {}, "Field required"),
    ("/v1/ips/10.0.0.1/holder", {"at": "yesterday"}, "is not an RFC 3339 time"),
    ("/v1/ips/10.0.0.1/holder", {"at": "2026-11-27T14:02:00"}, "with a UTC offset"),
    ("/v1/ips/10.0.0.1/holder", {"at": "2026-13-01T00:00:00Z"}, "month must be in 1..12"),
    ("/v1/ips/10.0.0.1/holder", {"at": "2026-02-30T00:00:00Z"}, "is not a valid time"),
    ("/v1/ips/10.0.0.1/holder", {"at": "2026-11-27T23:59:60Z"}, "leap seconds"),
    ("/v1/ips/10.0.0.1/holder", {"at": "2026-11-27T10:00:00+24:00"}, "offset is out of range"),
    ("/v1/ips/10.0.0.1/history", {"from": "1732700000"}, "is not an RFC 3339 time"),
    ("/v1/ips/10.0.0.1/history", {"limit": "10001"}, "less than or equal to 10000"),
    ("/v1/pods/Shop/web/history", {}, "'Shop' is not a valid namespace"),
    ("/v1/pods/shop/web_1/history", {}, "'web_1' is not a valid pod name"),
    ("/v1/pods/" + "a" * 64 + "/web/history", {}, "at most 63 characters"),
    ("/v1/services/shop/a.b/history", {}, "'a.b' is not a valid service name"),
    ("/v1/networks/shop/-web", {}, "'-web' is not a valid network name"),
    ("/v1/networks", {"kind": "floating"}, "Input should be 'pod' or 'service'"),
    ("/v1/allocations", {"cursor": "abc"}, "is not a cursor of this API"),
    ("/v1/allocations", {"cursor": "AAAAAAAAAAB"}, "is not a cursor of this API"),
    ("/v1/allocations", {"cursor": "gAAAAAAAAAA"}, "is not a cursor of this API"),
    ("/v1/allocations", {"limit": "1001"}, "less than or equal to 1000"),
    ("/v1/allocations", {"limit": "0"}, "greater than or equal to 1"),
    ("/v1/allocations", {"network": "web"}, "'web' is not a valid network"),
    ("/v1/allocations", {"node": "Node 1"}, "'Node 1' is not a valid node name"),
    ("/v1/allocations", {"since": "2026-11-27"}, "is not an RFC 3339 time"),
    (
        "/v1/allocations",
        {"kind": "vip"},
        "Input should be 'pod', 'service', 'floating' or 'public'",
    ),
    # A misspelt parameter is refused rather than ignored.
    (
        "/v1/ips/10.0.0.1/history",
        {"form": "2026-11-27T10:00:00Z"},
        "unknown query parameter 'form'",
    ),
    ("/v1/pools", {"at": "2026-11-27T10:00:00Z"}, "this route takes: none"),
    # Every parameter is one value: given twice, which one counts is not guessed.
    ("/v1/networks", {"namespace": ["shop", "web"]}, "'namespace' is given more than once"),
    (
        "/v1/ips/10.0.0.1/holder",
        {"at": ["2026-11-27T10:00:00Z", "2026-11-27T10:00:01Z"]},
        "'at' is given more than once",
    ),
]


@pytest.mark.parametrize(("path", "params", "message"), CASES)
def test_malformed_input_gets_422_saying_what_is_wrong(
    client: TestClient, path: str, params: dict[str, str | list[str]], message: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert message in error["msg"], error


def test_a_brace_in_a_bad_value_is_quoted_as_given(client: TestClient) -> None:
    response = client.get("/v1/ips/10.0.0.1/holder", params={"at": "{reason}"})
    assert response.json()["detail"][0]["msg"].startswith("'{reason}' is not an RFC 3339 time")
