"""The allocator's model survives a round trip through the database, on every backend."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError

from knm.core.domain.engine import NetworkModel, Observation
from knm.core.domain.model import NetworkSettings
from knm.core.domain.state import ClusterState
from knm.core.store.schema import Base, PodRow, table
from services.allocator.repository import load_state, save_changes
from tests.core.domain.strategies import cause, histories
from tests.core.domain.test_properties import snapshot


def _wipe(engine: Engine) -> None:
    with engine.begin() as connection:
        for model in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(model))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(histories(), histories())
def test_saved_batches_load_back_into_the_same_state(
    engine: Engine, first: list[Observation], second: list[Observation]
) -> None:
    _wipe(engine)
    state = ClusterState(collection_label="name")
    model = NetworkModel(state, NetworkSettings())
    for offset, batch in enumerate((first, second)):
        for step, observation in enumerate(batch):
            model.apply(observation, cause(offset * 1000 + step))
        with engine.begin() as connection:
            save_changes(connection, state.take_changes())
    with engine.connect() as connection:
        loaded = load_state(connection, collection_label="name")
    assert snapshot(loaded) == snapshot(state)


def test_the_database_refuses_one_address_for_two_pods(engine: Engine) -> None:
    row = {
        "namespace": "default",
        "node": "node-1",
        "labels": {},
        "annotations": {},
        "host_network": False,
        "phase": "Running",
        "ready": True,
        "owners": [],
        "ports": [],
        "version": None,
        "collection": "default",
        "uses": [],
        "network": "default/default",
        "ip": "10.0.0.1",
        "block": "10.0.0.0/26",
    }
    with engine.begin() as connection:
        connection.execute(table(PodRow).insert(), [{**row, "uid": "a", "name": "a"}])
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(table(PodRow).insert(), [{**row, "uid": "b", "name": "b"}])
