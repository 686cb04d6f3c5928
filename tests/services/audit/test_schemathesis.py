"""schemathesis against the OpenAPI document the API serves, in-process over ASGI, with a
valid token and the pipeline's history behind it: no 5xx, and every response as the
document says (status, content type, headers, body), for data the document calls valid
and for data it calls invalid (which must be refused with a 4xx)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.services.audit.conftest import AUTH

KEPT = Path(__file__).parents[3] / "docs" / "openapi.json"
# The operations, from the kept document (test_openapi holds it equal to the served one);
# pytest's own plugin for schemathesis (`from_fixture`) does not run on this pytest.
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
CASES = [
    (method.upper(), path, mode)
    for path, methods in json.loads(KEPT.read_text())["paths"].items()
    for method, operation in methods.items()
    # Without parameters there is no invalid request to make.
    for mode in ((POSITIVE, NEGATIVE) if operation.get("parameters") else (POSITIVE,))
]


@pytest.fixture(scope="module")
def served(app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_the_api_keeps_to_its_document(
    served: schemathesis.BaseSchema, method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    operation = served[path][method]

    @given(data=st.data())
    @settings(max_examples=40, deadline=None)
    def check(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        # A query parameter given as an empty list is not sent at all (httpx), so the
        # request made is not the invalid one the case describes: the API would rightly
        # accept it, and schemathesis would call that a failure.
        assume(not any(value == [] for value in (case.query or {}).values()))
        case.call_and_validate(headers=AUTH)

    check()
