"""Pure parts of the live watcher: owner chains from cached controllers, and the state a
restarted watcher rebuilds from its own facts."""

from __future__ import annotations

from datetime import UTC, datetime

from knm.core.bus.protocol import Record
from knm.core.events.base import envelope
from knm.core.events.codec import encode
from knm.core.events.facts import ControllerObserved, OwnerReference, PodDeleted, PodObserved
from knm.core.events.intents import InterfaceDeclared
from services.watcher.informer import chain_of
from services.watcher.published import Published
from services.watcher.writeback import interface_annotation

DEPLOYMENT = OwnerReference(kind="Deployment", name="web", uid="u-d")
REPLICA_SET = OwnerReference(kind="ReplicaSet", name="web-5d8", uid="u-rs")


def controller(ref: OwnerReference, *owners: OwnerReference) -> ControllerObserved:
    return ControllerObserved(
        kind=ref.kind, uid=ref.uid, namespace="shop", name=ref.name, owners=owners
    )


def test_a_pods_chain_climbs_through_the_cached_controllers() -> None:
    cached = {"u-rs": controller(REPLICA_SET, DEPLOYMENT), "u-d": controller(DEPLOYMENT)}
    assert chain_of(REPLICA_SET, cached) == (REPLICA_SET, DEPLOYMENT)


def test_an_owner_not_cached_yet_ends_the_chain_and_a_cycle_stops_it() -> None:
    assert chain_of(REPLICA_SET, {}) == (REPLICA_SET,)
    looped = {
        "u-rs": controller(REPLICA_SET, DEPLOYMENT),
        "u-d": controller(DEPLOYMENT, REPLICA_SET),
    }
    assert chain_of(REPLICA_SET, looped) == (REPLICA_SET, DEPLOYMENT)


def record(offset: int, key: str, event: PodObserved | PodDeleted) -> Record:
    message = envelope(event, key=key, occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    return Record(topic="knm.facts", partition=0, offset=offset, key="shop", value=encode(message))


def test_the_last_fact_per_key_is_what_was_published() -> None:
    web = PodObserved(uid="u1", namespace="shop", name="web-1", phase="Pending")
    running = web.model_copy(update={"phase": "Running"})
    gone = PodObserved(uid="u2", namespace="shop", name="web-2")
    records = [
        record(0, "Pod/shop/web-1", web),
        record(1, "Pod/shop/web-2", gone),
        record(2, "Pod/shop/web-1", running),
        record(3, "Pod/shop/web-2", PodDeleted(uid="u2", namespace="shop", name="web-2")),
        Record(topic="knm.facts", partition=0, offset=4, key="shop", value=b"not json"),
    ]

    published = Published()
    published.add(records)

    assert list(published.objects) == ["Pod/shop/web-1"]
    kept = published.objects["Pod/shop/web-1"]
    assert (kept.event, kept.partition_key) == (running, "shop")
    # Deleted keys keep their last id: the next fact about them chains from it.
    assert set(published.last_ids) == {"Pod/shop/web-1", "Pod/shop/web-2"}
    assert published.records == 5


def test_the_interface_annotation_says_address_mac_and_gateway() -> None:
    intent = InterfaceDeclared(
        pod_uid="u1",
        namespace="shop",
        name="web-1",
        node="node-1",
        network="shop/web",
        ip="10.0.0.5",
        mac="0a:58:0a:00:00:05",
        gateway="169.254.1.1",
        ifname="knm0123456789a",
    )
    assert interface_annotation(intent) == (
        '{"gateway":"169.254.1.1","ip":"10.0.0.5/32","mac":"0a:58:0a:00:00:05"}'
    )
