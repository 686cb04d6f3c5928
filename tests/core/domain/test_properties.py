"""Properties of the network rules over random clusters (hypothesis)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from knm.core.domain.engine import (
    NamespaceGone,
    NetworkModel,
    NodeGone,
    Observation,
    PodGone,
    ServiceGone,
    wants_address,
    wants_public,
    wants_vip,
)
from knm.core.domain.labels import collection_of, pod_network_name
from knm.core.domain.model import AddressAction, AddressEvent, NetworkSettings
from knm.core.domain.state import ChangeSet, ClusterState
from tests.core.domain.oracle import Live, expected_model
from tests.core.domain.strategies import NAMESPACES, NODES, cause, histories

SETTINGS = NetworkSettings()


def run(
    observations: list[Observation],
    *,
    settings_: NetworkSettings = SETTINGS,
    batch_every: int = 1,
) -> tuple[ClusterState, list[ChangeSet]]:
    state = ClusterState(collection_label=settings_.collection_label)
    model = NetworkModel(state, settings_)
    batches = []
    for step, observation in enumerate(observations):
        model.apply(observation, cause(step))
        if (step + 1) % batch_every == 0:
            batches.append(state.take_changes())
    batches.append(state.take_changes())
    return state, batches


def snapshot(state: ClusterState) -> dict[str, Any]:
    return {
        name: dict(getattr(state, name).items())
        for name in (
            "namespaces",
            "nodes",
            "pods",
            "services",
            "blocks",
            "networks",
            "floating",
            "policies",
            "quarantine",
            "tombstones",
        )
    }


def history_of(batches: list[ChangeSet]) -> list[AddressEvent]:
    return [event for batch in batches for event in batch.history]


@settings(max_examples=300, deadline=None)
@given(histories())
def test_addresses_are_unique_and_inside_their_pool_and_node_block(
    observations: list[Observation],
) -> None:
    state, _ = run(observations)
    ips = [r.ip for r in state.pods.values() if r.ip is not None]
    vips = [r.vip for r in state.services.values() if r.vip is not None]
    assert len(set(ips)) == len(ips)
    assert len(set(vips)) == len(vips)
    assert not set(ips) & set(vips)
    for record in state.pods.values():
        if record.ip is None:
            assert not wants_address(record.spec)
            continue
        assert wants_address(record.spec)
        assert any(record.ip in pool for pool in SETTINGS.pod_pools)
        block = state.blocks.get(record.block or "")
        assert block is not None
        assert block.node == record.spec.node
        assert record.ip in IPv4Network(block.cidr)
    for service in state.services.values():
        if service.vip is not None and service.vip_source == "allocated":
            assert any(service.vip in pool for pool in SETTINGS.service_pools)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_networks_backends_floating_ips_and_policies_follow_the_rules(
    observations: list[Observation],
) -> None:
    state, _ = run(observations)
    live = Live.replay(observations)
    assert set(state.pods) == set(live.pods)
    assert set(state.services) == set(live.services)
    expected = expected_model(live, state, SETTINGS)
    assert set(state.networks) == expected["networks"]
    assert set(state.floating) == expected["floating"]
    assert {(s, p) for s, ps in state.backends.items() for p in ps} == expected["backends"]
    assert {(p.from_network, p.to_network) for p in state.policies.values()} == expected["policies"]
    for key, fip in state.floating.items():
        service = state.services.get(key[0])
        assert service is not None
        assert fip.vip == service.vip
    for record in state.pods.values():
        want = (
            pod_network_name(record.namespace, collection_of(record.spec, label="name"))
            if record.collection_ref in state.members
            and record.uid in state.members[record.collection_ref]
            else None
        )
        assert record.network == want
    for service_record in state.services.values():
        assert (service_record.vip is not None) == wants_vip(service_record.spec)
    for policy in state.policies.values():
        service = state.services.get(policy.service_uid)
        assert service is not None
        assert {(p.port, p.protocol) for p in policy.ports} == {
            (p.port, p.protocol) for p in service.spec.ports
        }


@settings(max_examples=200, deadline=None)
@given(histories())
def test_indexes_kept_incrementally_equal_indexes_rebuilt_from_records(
    observations: list[Observation],
) -> None:
    state, _ = run(observations)
    assert_indexes_match_records(state)


def assert_indexes_match_records(state: ClusterState) -> None:
    fresh = ClusterState(collection_label="name")
    fresh.load(
        namespaces=list(state.namespaces.values()),
        nodes=list(state.nodes.values()),
        pods=list(state.pods.values()),
        services=list(state.services.values()),
        blocks=list(state.blocks.values()),
        networks=list(state.networks.values()),
        floating=list(state.floating.values()),
        policies=list(state.policies.values()),
        quarantine=list(state.quarantine.values()),
        tombstones=list(state.tombstones.values()),
    )
    for index in (
        "holders",
        "block_used",
        "pods_by_label",
        "pods_by_namespace",
        "pods_by_node",
        "members",
        "uses_counts",
        "users",
        "services_by_namespace",
        "services_by_item",
        "backends",
        "backend_of",
        "backend_collections",
        "collection_services",
        "policies_from",
    ):
        mine = {k: v for k, v in getattr(state, index).items() if v}
        theirs = {k: v for k, v in getattr(fresh, index).items() if v}
        assert mine == theirs, index
    assert {n: sorted(b) for n, b in state.node_blocks.items() if b} == {
        n: sorted(b) for n, b in fresh.node_blocks.items() if b
    }


@settings(max_examples=200, deadline=None)
@given(histories(), st.integers(1, 7))
def test_the_same_observations_give_the_same_state_however_they_are_batched(
    observations: list[Observation], batch_every: int
) -> None:
    one, _ = run(observations)
    other, _ = run(observations, batch_every=batch_every)
    assert snapshot(one) == snapshot(other)


@settings(max_examples=200, deadline=None)
@given(histories(), st.data())
def test_an_observation_applied_twice_in_a_row_changes_nothing_more(
    observations: list[Observation], data: st.DataObject
) -> None:
    doubled: list[Observation] = []
    for observation in observations:
        doubled.append(observation)
        if data.draw(st.booleans()):
            doubled.append(observation)
    state = ClusterState(collection_label="name")
    model = NetworkModel(state, SETTINGS)
    twin = ClusterState(collection_label="name")
    twin_model = NetworkModel(twin, SETTINGS)
    step = 0
    for observation in observations:
        model.apply(observation, cause(step))
        twin_model.apply(observation, cause(step))
        step += 1
    # Redelivery of the last one, at the same instant, is a no-op.
    for observation in observations[-1:]:
        twin_model.apply(observation, cause(step - 1))
    assert snapshot(state) == snapshot(twin)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_deleting_everything_returns_every_address_and_history_balances(
    observations: list[Observation],
) -> None:
    teardown: list[Observation] = [
        *(PodGone(f"pod-{i}", "", "") for i in range(14)),
        *(ServiceGone(f"svc-{i}", "", "") for i in range(6)),
        *(NamespaceGone(ns) for ns in NAMESPACES),
        *(NodeGone(n) for n in NODES),
    ]
    state, batches = run([*observations, *teardown])
    assert len(state.pods) == 0
    assert len(state.services) == 0
    assert len(state.floating) == 0
    assert len(state.networks) == 0
    assert len(state.policies) == 0
    assert len(state.blocks) == 0
    assert not state.holders
    held: dict[tuple[IPv4Address, str, str], int] = defaultdict(int)
    for event in history_of(batches):
        key = (event.ip, event.kind.value, event.uid)
        if event.action is AddressAction.ALLOCATED:
            assert held[key] == 0, f"{key} allocated twice without a release"
            held[key] += 1
        else:
            assert held[key] == 1, f"{key} released without an allocation"
            held[key] -= 1
    assert not any(held.values())


@settings(max_examples=200, deadline=None)
@given(histories(max_size=60), st.sampled_from((0, 5, 60)))
def test_no_address_is_handed_out_again_inside_its_quarantine(
    observations: list[Observation], quarantine: int
) -> None:
    custom = NetworkSettings(
        quarantine=timedelta(seconds=quarantine),
        block_prefix=29,
        public_pools=(IPv4Network("10.1.0.0/30"),),
    )
    _, batches = run(observations, settings_=custom)
    released: dict[IPv4Address, AddressEvent] = {}
    for event in history_of(batches):
        if event.kind.value == "floating":
            continue
        if event.action is AddressAction.RELEASED:
            released[event.ip] = event
        elif (last := released.get(event.ip)) is not None and last.uid != event.uid:
            reused_after = event.at - last.at
            cluster_chosen = event.kind.value == "service" and event.ip.packed[2] == 200
            assert cluster_chosen or reused_after >= custom.quarantine


def test_the_history_records_the_causing_fact_and_holder() -> None:
    from knm.core.domain.engine import PodSeen
    from knm.core.domain.model import Pod

    state, batches = run(
        [
            PodSeen(Pod("u1", "default", "a", node="node-1", labels={"name": "web"})),
            PodGone("u1", "default", "a"),
        ]
    )
    events = history_of(batches)
    assert [(e.action, e.fact_id, e.name, e.network, e.node) for e in events] == [
        (AddressAction.ALLOCATED, "fact-0", "a", "default/web", "node-1"),
        (AddressAction.RELEASED, "fact-1", "a", "default/web", "node-1"),
    ]
    assert events[0].ip == events[1].ip
    assert events[1].at - events[0].at == timedelta(seconds=1)
    assert len(state.quarantine) == 1


@settings(max_examples=300, deadline=None)
@given(histories(max_size=60), st.sampled_from((0, 3, 60)))
def test_public_addresses_go_to_load_balancers_only_unique_and_as_soon_as_one_is_free(
    observations: list[Observation], quarantine: int
) -> None:
    # Two usable addresses for up to six services: exhaustion, waiting and reuse happen.
    pool = IPv4Network("10.1.0.0/30")
    custom = NetworkSettings(quarantine=timedelta(seconds=quarantine), public_pools=(pool,))
    state, batches = run(observations, settings_=custom)
    # Stable: a load balancer that stays one keeps its address, step after step.
    stepped = ClusterState(collection_label="name")
    model = NetworkModel(stepped, custom)
    for step, observation in enumerate(observations):
        before = {uid: r.public_ip for uid, r in stepped.services.items()}
        model.apply(observation, cause(step))
        for uid, ip in before.items():
            after = stepped.services.get(uid)
            if ip is not None and after is not None and wants_public(after.spec):
                assert after.public_ip == ip, (uid, observation)
    held = [r.public_ip for r in state.services.values() if r.public_ip is not None]
    assert len(set(held)) == len(held)
    assert all(
        ip in pool and ip not in (pool.network_address, pool.broadcast_address) for ip in held
    )
    for record in state.services.values():
        if record.public_ip is not None:
            assert wants_public(record.spec)
            assert state.holders[record.public_ip] == ("service", record.uid)
    waiting = [r for r in state.services.values() if wants_public(r.spec) and r.public_ip is None]
    if waiting and observations:
        now = cause(len(observations) - 1).at
        free = [
            ip
            for ip in pool.hosts()
            if ip not in state.holders
            and ((kept := state.quarantine.get(ip)) is None or kept.until <= now)
        ]
        assert not free, f"{[r.uid for r in waiting]} wait while {free} is free"
        assert all(("public", r.uid) in state.pending for r in waiting)
    # Each public line names its pool and a LoadBalancer service; releases follow holdings.
    tenure: dict[IPv4Address, str] = {}
    for event in history_of(batches):
        if event.kind.value != "public":
            continue
        assert event.pool == str(pool)
        if event.action is AddressAction.ALLOCATED:
            assert event.ip not in tenure
            tenure[event.ip] = event.uid
        else:
            assert tenure.pop(event.ip) == event.uid
    assert tenure == {r.public_ip: r.uid for r in state.services.values() if r.public_ip}
