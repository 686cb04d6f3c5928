"""The queries on both databases: the holder at T is one seek on the holders' index
(on PostgreSQL, in the plan the prepared statement keeps for every value), and the API's
connections cannot write."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError

from services.audit.database import read_only_engine
from services.audit.queries.addresses import HOLDER_AT, holder_at
from tests.services.audit.lines import line, tenures, write

START = datetime(2026, 1, 1, tzinfo=UTC)
VIP = "10.254.0.1"


@pytest.fixture
def filled(engine: Engine) -> Engine:
    """1,000 addresses with ten tenures each, and a VIP whose backends came and went
    3,000 times after its service got it: a scan instead of a seek would show."""
    rows = tenures(addresses=1000, holders=10, start=START)
    rows.append(line(ip=VIP, action="allocated", kind="service", uid="svc", at=START))
    for n in range(3000):
        at = START + timedelta(seconds=n + 1)
        for action in ("allocated", "released"):
            rows.append(
                line(ip=VIP, action=action, kind="floating", uid=f"b{n}", at=at, service="bulk/svc")
            )
    write(engine, rows)
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    return engine


def captured(engine: Engine, run: Any) -> tuple[str, Any]:
    """The one statement `run` sends, as the driver got it."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    (found,) = [s for s in sent if "address_history" in s[0]]
    return found


def sqlite_plan(engine: Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        return json.dumps([row[-1] for row in cursor.fetchall()])


def test_the_holder_at_an_instant_is_one_seek_on_the_holders_index(filled: Engine) -> None:
    at = START + timedelta(hours=1)
    reader = read_only_engine(filled.url.render_as_string(hide_password=False))
    try:
        with reader.connect() as connection:

            def ask() -> None:
                found = holder_at(connection, ip=IPv4Address(VIP), at=at)
                assert found is not None
                assert (found.kind.value, found.uid) == ("service", "svc")

            if filled.dialect.name == "postgresql":
                # The statement the API prepared on this connection, with the plan it
                # keeps for every value (plan_cache_mode=force_generic_plan).
                ask()
                cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                cursor.execute(f"EXPLAIN (FORMAT JSON) {HOLDER_AT.execute}", (VIP, at))
                (shown,) = cursor.fetchall()
                shown = json.dumps(shown[0])
            else:
                shown = sqlite_plan(reader, *captured(reader, ask))
    finally:
        reader.dispose()
    assert "ix_address_history_holder" in shown, shown
    if filled.dialect.name == "postgresql":
        top = json.loads(shown)[0]["Plan"]
        assert top["Node Type"] == "Limit", shown
        (scan,) = top["Plans"]
        assert scan["Node Type"] == "Index Scan", shown
        assert scan["Scan Direction"] == "Backward", shown
        assert "Plans" not in scan, shown  # no sort, nothing under it
        assert "$2" in scan["Index Cond"], shown  # a plan for any instant, not this one
    else:
        assert "SEARCH address_history USING INDEX ix_address_history_holder" in shown, shown
        assert "TEMP B-TREE" not in shown, shown  # the index gives the order


def test_holders_of_a_busy_address(filled: Engine) -> None:
    with filled.connect() as connection:
        ip = IPv4Address("10.0.0.1")
        holding = holder_at(connection, ip=ip, at=START + timedelta(minutes=4, seconds=30))
        assert holding is not None
        assert holding.uid == "pod-0-2"
        assert holder_at(connection, ip=ip, at=START + timedelta(minutes=5)) is None
        assert holder_at(connection, ip=ip, at=START - timedelta(microseconds=1)) is None


def test_the_api_connections_cannot_write(engine: Engine) -> None:
    reader = read_only_engine(engine.url.render_as_string(hide_password=False))
    try:
        with reader.connect() as connection, pytest.raises(DBAPIError, match=r"read-?only"):
            connection.execute(text("DELETE FROM address_history"))
        with reader.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM address_history")).scalar() == 0
    finally:
        reader.dispose()


def test_the_holders_index_leaves_the_floating_lines_out(engine: Engine) -> None:
    """What the migration made, not only what the models say (Alembic's comparison does
    not look at an index's predicate)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            definition = connection.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_address_history_holder'"
                )
            ).scalar_one()
            assert definition.endswith("(ip, at, seq) WHERE ((kind)::text <> 'floating'::text)")
        else:
            definition = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'ix_address_history_holder'")
            ).scalar_one()
            assert definition.endswith("(ip, at, seq) WHERE kind <> 'floating'")
