from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from services.audit.app import openapi_text
from services.audit.database import read_only_engine
from tests.services.audit.conftest import audit_app

KEPT = Path(__file__).parents[3] / "docs" / "openapi.json"


def test_the_kept_document_is_the_one_the_api_serves() -> None:
    engine = read_only_engine("sqlite://")
    app = audit_app(engine)
    with TestClient(app) as client:
        served = client.get("/openapi.json").json()
    assert KEPT.read_text() == openapi_text(app), "docs/openapi.json is stale: run `make openapi`"
    assert json.loads(KEPT.read_text()) == served
    engine.dispose()
