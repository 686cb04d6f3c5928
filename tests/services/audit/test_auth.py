"""Every /v1 route, as the application lists them, refuses a request without a valid
bearer token; tokens never reach the logs."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.services.audit.conftest import AUTH, TOKEN, TOKEN_HASH

# A valid value for each path parameter a /v1 route may have; a route with a parameter
# missing here fails the test until it is added.
VALID = {"ip": "10.0.0.2", "namespace": "shop", "name": "web"}
MALFORMED = {"ip": "not-an-ip", "namespace": "Not_A_Namespace", "name": "-"}


def v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    found = [
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.startswith("/v1/")
        for method in sorted(route.methods or ())
    ]
    assert len(found) >= 8, found
    return found


def filled(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: values[match.group(1)], path)


WRONG = [
    {},
    {"Authorization": "Bearer not-the-token"},
    {"Authorization": f"Bearer {TOKEN_HASH}"},  # the digest is not the token
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": "Bearer"},
]


@pytest.mark.parametrize("headers", WRONG, ids=lambda h: h.get("Authorization", "none"))
def test_every_v1_route_answers_401_without_a_valid_token(
    app: FastAPI, headers: dict[str, str]
) -> None:
    with TestClient(app) as client:
        for method, path in v1_routes(app):
            for values in (VALID, MALFORMED):
                response = client.request(
                    method, filled(path, values), headers=headers, params={"at": "x"}
                )
                assert response.status_code == 401, (method, path, values, response.text)
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert "bearer token" in response.json()["detail"]


def test_the_same_requests_with_the_token_are_let_through(app: FastAPI) -> None:
    with TestClient(app) as client:
        for method, path in v1_routes(app):
            at = {"at": "2026-11-27T10:00:00Z"} if path.endswith("/holder") else {}
            response = client.request(method, filled(path, VALID), headers=AUTH, params=at)
            assert response.status_code in (200, 404), (method, path, response.text)


def test_every_v1_route_declares_the_bearer_scheme_and_401(app: FastAPI) -> None:
    document = app.openapi()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token whose SHA-256 digest is in KNM_AUDIT_TOKEN_HASHES.",
    }
    for method, path in v1_routes(app):
        operation = document["paths"][path][method.lower()]
        assert operation["security"] == [{"bearer": []}]
        assert "401" in operation["responses"]


def test_health_and_metrics_need_no_token(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_tokens_never_reach_the_logs(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(app) as client:
        client.get("/v1/pools", headers=AUTH)
        client.get("/v1/pools", headers={"Authorization": "Bearer a-wrong-secret"})
        client.get("/v1/ips/10.0.0.2/holder", headers=AUTH, params={"at": "bad"})
    lines = [record for record in caplog.records if record.name == "knm.audit.access"]
    assert [record.__dict__["status"] for record in lines] == [200, 401, 422]
    # Which token was used is named by its digest's first digits, as configured.
    assert [record.__dict__["token"] for record in lines] == [
        TOKEN_HASH[:12],
        None,
        TOKEN_HASH[:12],
    ]
    for record in caplog.records:
        text = repr(record.__dict__) + record.getMessage()
        assert TOKEN not in text
        assert "a-wrong-secret" not in text
