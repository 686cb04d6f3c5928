"""Two models that split the namespaces and absorb each other's changes agree with one."""

from __future__ import annotations

from hypothesis import given, settings

from knm.core.domain.engine import (
    NamespaceGone,
    NetworkModel,
    NodeGone,
    NodeSeen,
    Observation,
    PodGone,
    PodSeen,
    ServiceGone,
    ServiceSeen,
)
from knm.core.domain.model import Foreign
from knm.core.domain.state import ChangeSet, ClusterState
from tests.core.domain.strategies import cause, histories, namespace_of
from tests.core.domain.test_properties import (
    SETTINGS,
    assert_indexes_match_records,
    run,
    snapshot,
)


def namespace(observation: Observation) -> str | None:
    match observation:
        case PodSeen(pod=pod):
            return pod.namespace
        case ServiceSeen(service=service):
            return service.namespace
        case PodGone(uid=uid) | ServiceGone(uid=uid):
            return namespace_of(uid)
        case NamespaceGone(name=name):
            return name
        case NodeSeen() | NodeGone():
            return None
    raise AssertionError(observation)


def foreign(changes: ChangeSet) -> Foreign:
    return Foreign(
        namespaces={c.key: c.after for c in changes.namespaces},
        nodes={c.key: c.after for c in changes.nodes},
        pods={c.key: c.after for c in changes.pods},
        services={c.key: c.after for c in changes.services},
        blocks={c.key: c.after for c in changes.blocks},
        networks={c.key: c.after for c in changes.networks},
        floating={c.key: c.after for c in changes.floating},
        policies={c.key: c.after for c in changes.policies},
        quarantine={c.key: c.after for c in changes.quarantine},
        tombstones={c.key: c.after for c in changes.tombstones},
    )


@settings(max_examples=300, deadline=None)
@given(histories())
def test_absorbing_each_others_changes_converges_on_the_single_models_state(
    observations: list[Observation],
) -> None:
    one, _ = run(observations)
    a = NetworkModel(
        ClusterState(collection_label="name"), SETTINGS, owns=lambda ns: ns == "default"
    )
    b = NetworkModel(
        ClusterState(collection_label="name"), SETTINGS, owns=lambda ns: ns != "default"
    )
    for step, observation in enumerate(observations):
        # Node facts have a partition of their own; say it is a's.
        writer, reader = (a, b) if namespace(observation) in ("default", None) else (b, a)
        writer.apply(observation, cause(step))
        changes = writer.state.take_changes()
        while not changes.empty:
            reader.absorb(foreign(changes))
            writer, reader = reader, writer
            changes = writer.state.take_changes()
    assert snapshot(a.state) == snapshot(one)
    assert snapshot(b.state) == snapshot(one)
    assert_indexes_match_records(a.state)
    assert_indexes_match_records(b.state)
